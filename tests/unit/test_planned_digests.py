"""Tier 1: a release deploys exactly the digests its preview planned (`repo:tag@sha256:...`),
or stops at the pull, before anything changed, when a tag moved since."""

from __future__ import annotations

import json

import pytest

from deploy import commands
from deploy.engine import DeployError
from deploy.release import ReleaseSpec, repository, split_ref
from layout import LOCK_DIR
from tests.unit.engine_kit import (
    CHECKS,
    REG,
    Clock,
    deployed,
    digest,
    fake_host,
    make_engine,
    planned_digest,
    spec,
)
from tests.unit.fake_host import APP_DIR, FakeHost


def compact(steps: list[str]) -> list[str]:
    return [s for i, s in enumerate(steps) if i == 0 or steps[i - 1] != s]


def pulls(host: FakeHost) -> list[str]:
    return [c for c in host.commands if c.startswith(("docker pull", "docker image inspect"))]


@pytest.mark.parametrize(
    ("ref", "parts"),
    [
        (
            "registry.test:5000/a/b:tag@sha256:" + "ab" * 32,
            ("registry.test:5000/a/b", "tag", "sha256:" + "ab" * 32),
        ),
        (
            "registry.test:5000/a/b@sha256:" + "ab" * 32,
            ("registry.test:5000/a/b", None, "sha256:" + "ab" * 32),
        ),
        ("registry.test:5000/a/b:nightly", ("registry.test:5000/a/b", "nightly", None)),
        ("registry.test:5000/a/b", ("registry.test:5000/a/b", None, None)),
        ("mongo:7.0@sha256:" + "cd" * 32, ("mongo", "7.0", "sha256:" + "cd" * 32)),
        ("benjr70/smart-smoker-backend:nightly", ("benjr70/smart-smoker-backend", "nightly", None)),
    ],
)
def test_a_reference_splits_into_repository_tag_and_digest(
    ref: str, parts: tuple[str, str | None, str | None]
) -> None:
    assert split_ref(ref) == parts
    assert repository(ref) == parts[0]


def test_the_planned_digests_deploy_by_digest_in_the_same_steps(clock: Clock) -> None:
    by_tag, planned = fake_host(), fake_host()
    make_engine(by_tag, clock).deploy(spec("1.0.0"))
    outcome = make_engine(planned, clock).deploy(spec("1.0.0", planned=True))
    assert compact(planned.steps) == compact(by_tag.steps)  # the exact order, unchanged
    expected = {
        name: digest(name, v)
        for name, v in [("mongo", "7.0"), ("backend", "1.0.0"), ("frontend", "1.0.0")]
    }
    assert outcome.outcome == "deployed" and outcome.digests == expected
    assert {n: c.image for n, c in planned.containers.items()} == expected
    base = f"{APP_DIR}/releases/{outcome.release}"
    assert json.loads(planned.files[f"{base}/manifest.json"])["digests"] == expected
    assert ":1.0.0" not in planned.files[f"{base}/compose.yaml"]
    # the tag is what is pulled (its digest is then compared with the planned one)
    assert f"{REG}/backend:1.0.0 " in " ".join(pulls(planned)) + " "
    assert not [c for c in pulls(planned) if ":1.0.0@" in c]


def test_planned_digests_equal_to_the_live_release_change_nothing(
    host: FakeHost, clock: Clock
) -> None:
    (first,) = deployed(host, clock, "1.0.0")  # by tag: the same content once pinned
    before = host.snapshot()
    outcome = make_engine(host, clock).deploy(spec("1.0.0", planned=True))
    assert (outcome.release, outcome.outcome) == (first, "unchanged")
    assert host.snapshot() == before


def test_a_tag_moved_since_the_preview_is_refused_at_the_pull(host: FakeHost, clock: Clock) -> None:
    (previous,) = deployed(host, clock, "1.0.0")
    before, records = host.snapshot(), len(host.ledger())
    planned, now = planned_digest("backend", "1.1.0"), planned_digest("backend", "1.2.0")
    host.move_tag(f"{REG}/backend:1.1.0", digest("backend", "1.2.0"))  # pushed after approval
    with pytest.raises(DeployError) as raised:
        make_engine(host, clock).deploy(spec("1.1.0", planned=True))
    message = str(raised.value)
    assert f"failed at pull: {REG}/backend:1.1.0@{planned}: " in message
    assert f"the preview planned {planned}, but the registry now serves {now}" in message
    assert "the tag moved after the preview was approved" in message
    assert "Run the preview again and approve the new digests" in message
    assert f"Nothing was changed on the host; release {previous} is still live" in message
    # nothing changed: `current`, the containers, the releases; no `up`; the lock released
    assert host.snapshot() == before and host.current == previous
    assert "up" not in host.steps and "seal" not in host.steps
    assert not [d for d in host.release_dirs() if d.startswith(".staging-")]
    assert f"{LOCK_DIR}/owner.json" not in host.files and host.steps[-1] == "unlock"
    # one ledger record, like any deploy that failed before a change; its backup is kept
    assert len(host.ledger()) == records + 1
    record = host.ledger()[-1]
    assert (record["outcome"], record["step"], record["previous"]) == ("failed", "pull", previous)
    assert planned in record["error"] and now in record["error"]
    assert record["backup"]["path"] in host.files


def test_only_the_moved_tag_is_refused_the_rest_of_the_plan_still_deploys(
    host: FakeHost, clock: Clock
) -> None:
    deployed(host, clock, "1.0.0")
    host.move_tag(f"{REG}/frontend:1.1.0", digest("frontend", "1.0.0"))
    with pytest.raises(DeployError, match=r"frontend:1\.1\.0@"):
        make_engine(host, clock).deploy(spec("1.1.0", planned=True))
    host.move_tag(f"{REG}/frontend:1.1.0", digest("frontend", "1.1.0"))  # moved back
    outcome = make_engine(host, clock).deploy(spec("1.1.0", planned=True))
    assert outcome.outcome == "deployed"
    assert outcome.digests["frontend"] == digest("frontend", "1.1.0")


def test_digest_only_references_are_pulled_unless_present(host: FakeHost, clock: Clock) -> None:
    deployed(host, clock, "1.0.0")
    services = {
        "mongo": {"image": digest("mongo", "7.0"), "env_file": ["mongo.env"]},
        "backend": {"image": digest("backend", "1.1.0"), "env_file": ["backend.env"]},
        "frontend": {"image": digest("frontend", "1.1.0")},
    }
    pinned = ReleaseSpec(json.dumps({"services": services}), spec("1.1.0").env_files, CHECKS)
    outcome = make_engine(host, clock).deploy(pinned)
    assert outcome.outcome == "deployed"
    assert outcome.digests == {name: svc["image"] for name, svc in services.items()}
    assert all(c.startswith("docker image inspect ") for c in pulls(host))


def test_a_service_platform_is_the_platform_pulled(host: FakeHost, clock: Clock) -> None:
    release = spec("1.0.0", planned=True)
    project = json.loads(release.compose)
    project["services"]["frontend"]["platform"] = "linux/arm/v7"
    make_engine(host, clock).deploy(
        ReleaseSpec(json.dumps(project), release.env_files, release.checks)
    )
    (frontend,) = [c for c in pulls(host) if "/frontend:" in c]
    assert frontend == commands.pull_tag(f"{REG}/frontend:1.0.0", "linux/arm/v7")
    assert [c for c in pulls(host) if "--platform" in c] == [frontend]


def test_the_pull_commands() -> None:
    ref = f"{REG}/a/b:1.0"
    assert commands.pull_tag(ref, "linux/arm/v7") == (
        f"docker pull -q --platform linux/arm/v7 {ref} >/dev/null && "
        f"docker image inspect --format '{{{{json .RepoDigests}}}}' {ref}"
    )
    pinned = f"{REG}/a/b@sha256:" + "ab" * 32
    assert commands.pull_pinned(pinned) == (
        f"docker image inspect {pinned} >/dev/null 2>&1 || docker pull -q {pinned}"
    )
