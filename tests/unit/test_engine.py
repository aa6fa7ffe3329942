"""Tier 1: the deploy engine over a fake host: the order of steps, every failure branch."""

from __future__ import annotations

import calendar
import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from deploy.engine import DeployError, RollbackError
from deploy.lock import HostLock, LockHeldError
from deploy.release import Checks, HttpCheck, ReleaseSpec
from tests.unit.engine_kit import (
    APP_PASSWORD,
    CHECKS,
    REG,
    VERSIONS,
    Clock,
    deployed,
    digest,
    make_engine,
    spec,
)
from tests.unit.fake_host import APP_DIR, FakeHost


def live_images(host: FakeHost) -> dict[str, str]:
    return {name: c.image for name, c in host.containers.items()}


def compact(steps: list[str]) -> list[str]:
    """Steps with repeats of the same step folded (e.g. one `write` per file)."""
    return [s for i, s in enumerate(steps) if i == 0 or steps[i - 1] != s]


# ---------------------------------------------------------------------------------------------
# The paths, step by step


def test_first_deploy_runs_every_step_in_order(host: FakeHost, clock: Clock) -> None:
    outcome = make_engine(host, clock).deploy(spec("1.0.0"))
    assert compact(host.steps) == [
        "lock",
        "survey",  # current, releases, half-staged ones, the ledger: one round trip
        "mongo-ps",
        "backup",
        "backup-check",
        "stage",
        "write",
        "renew",
        "pull",
        "renew",
        "pull",
        "renew",
        "pull",
        "write",  # compose.yaml and manifest.json
        "seal",
        "renew",
        "up",
        "manifest",
        "ps",
        "http",
        "db-url",
        "commit",
        "releases",
        "live",
        "ledger",
        "unlock",
    ]
    assert outcome.outcome == "deployed" and host.current == outcome.release
    assert outcome.digests == {
        "mongo": digest("mongo", "7.0"),
        "backend": digest("backend", "1.0.0"),
        "frontend": digest("frontend", "1.0.0"),
    }
    assert live_images(host) == outcome.digests  # containers run the digests, never tags
    record = host.ledger()[-1]
    assert record["outcome"] == "deployed" and record["previous"] is None
    assert record["backup"]["sha256"] == outcome.backup["sha256"]  # type: ignore[index]
    assert record["who"] == "tester@ci via test"
    assert f"{APP_DIR}/releases/{outcome.release}/manifest.json" in host.files


def test_the_release_directory_is_self_contained_and_pinned(host: FakeHost, clock: Clock) -> None:
    release = make_engine(host, clock).deploy(spec("1.0.0")).release
    base = f"{APP_DIR}/releases/{release}"
    assert "@sha256:" in host.files[f"{base}/compose.yaml"]
    assert ":1.0.0" not in host.files[f"{base}/compose.yaml"]
    assert APP_PASSWORD in host.files[f"{base}/backend.env"]
    manifest = json.loads(host.files[f"{base}/manifest.json"])
    assert manifest["digests"]["backend"] == digest("backend", "1.0.0")
    assert manifest["checks"] == CHECKS.as_dict()


def test_secrets_travel_only_on_stdin(host: FakeHost, clock: Clock) -> None:
    make_engine(host, clock).deploy(spec("1.0.0"))
    assert not [c for c in host.commands if APP_PASSWORD in c or "root-secret" in c]
    assert any(APP_PASSWORD.encode() in s for s in host.stdins)
    assert APP_PASSWORD not in json.dumps(host.ledger())


def test_upgrade_keeps_mongo_running_and_the_previous_release(host: FakeHost, clock: Clock) -> None:
    (first,) = deployed(host, clock, "1.0.0")
    mongo = host.containers["mongo"].generation
    clock.t += 60
    second = make_engine(host, clock).deploy(spec("1.1.0")).release
    assert host.containers["mongo"].generation == mongo  # not restarted
    assert host.containers["backend"].image == digest("backend", "1.1.0")
    assert host.current == second and first in host.release_dirs()
    assert host.ledger()[-1]["previous"] == first


def test_same_content_again_changes_nothing(host: FakeHost, clock: Clock) -> None:
    (first,) = deployed(host, clock, "1.0.0")
    before = host.snapshot()
    outcome = make_engine(host, clock).deploy(spec("1.0.0"))
    assert (outcome.release, outcome.outcome) == (first, "unchanged")
    assert host.snapshot() == before  # `up` of the live release recreates nothing
    assert host.ledger()[-1]["outcome"] == "unchanged"


def test_same_content_again_repairs_a_host_left_between_releases(
    host: FakeHost, clock: Clock
) -> None:
    first, second = deployed(host, clock, "1.0.0", "1.1.0")
    assert make_engine(host, clock).rollback().release == first
    host.fail("commit", drop=True)  # a rollback to 1.1.0 that died after its `up`
    with pytest.raises(DeployError, match="connection to the host was lost"):
        make_engine(host, clock).rollback(to=second)
    host.reconnect()
    HostLock(host, clock=clock.wall).break_stale(force=True)
    assert host.containers["backend"].image == digest("backend", "1.1.0")  # not what is live
    outcome = make_engine(host, clock).deploy(spec("1.0.0"))
    assert (outcome.release, outcome.outcome) == (first, "unchanged")
    assert host.containers["backend"].image == digest("backend", "1.0.0")


def test_failed_verification_rolls_back_to_the_exact_previous_release(
    host: FakeHost, clock: Clock
) -> None:
    previous = deployed(host, clock, "1.0.0", "1.1.0")[-1]
    before = live_images(host)
    with pytest.raises(DeployError) as raised:
        make_engine(host, clock).deploy(spec("1.2.0"))
    message = str(raised.value)
    assert "failed at verify" in message and "backend is unhealthy" in message
    assert f"Rolled back: release {previous} is live and verified" in message
    assert "deployments.jsonl" in message and "smartsmoker-predeploy-" in message
    assert live_images(host) == before and host.current == previous
    record = host.ledger()[-1]
    assert record["outcome"] == "rolled-back" and record["step"] == "verify"
    assert record["rollback"] == {"to": previous, "outcome": "verified"}
    # the rollback: `up` of the previous release, its verification, the ledger, the lock
    ups = [c for c in host.commands if " up -d" in c]
    assert len(ups) == 2 and f"releases/{previous}/compose.yaml" in ups[1]
    rollback = compact(host.steps[len(host.steps) - host.steps[::-1].index("up") - 1 :])
    assert rollback == ["up", "manifest", "ps", "http", "db-url", "ledger", "unlock"]


def test_rollback_restores_the_backup_only_when_the_policy_says_so(
    host: FakeHost, clock: Clock
) -> None:
    deployed(host, clock, "1.0.0")
    with pytest.raises(DeployError):
        make_engine(host, clock).deploy(spec("1.2.0"))
    assert "restore" not in host.steps
    with pytest.raises(DeployError):
        make_engine(host, clock, restore_on_rollback=True).deploy(spec("1.2.0"))
    restores = [c for c in host.commands if " restore " in c]
    assert len(restores) == 1 and "--in-place" in restores[0]
    assert host.ledger()[-1]["backup"]["path"] in restores[0]


NOTHING_CHANGED = ["backup", "backup-check", "stage", "write", "pull", "seal"]


@pytest.mark.parametrize("step", NOTHING_CHANGED)
def test_a_failure_before_up_changes_nothing(host: FakeHost, clock: Clock, step: str) -> None:
    previous = deployed(host, clock, "1.0.0")[-1]
    before = host.snapshot()
    host.fail(step)
    with pytest.raises(DeployError) as raised:
        make_engine(host, clock).deploy(spec("1.1.0"))
    assert "Nothing was changed on the host" in str(raised.value)
    assert f"release {previous} is still live" in str(raised.value)
    assert host.snapshot() == before
    assert "up" not in host.steps
    assert not [d for d in host.release_dirs() if d.startswith(".staging-")]
    record = host.ledger()[-1]
    assert record["outcome"] == "failed" and record["step"] in (step, "stage", "backup")
    assert host.steps[-1] == "unlock"


def test_a_tag_missing_from_the_registry_stops_at_the_pull(host: FakeHost, clock: Clock) -> None:
    deployed(host, clock, "1.0.0")
    before = host.snapshot()
    del host.registry[f"{REG}/backend:1.1.0"]
    with pytest.raises(DeployError, match=r"failed at pull: pulling .*backend:1.1.0 failed"):
        make_engine(host, clock).deploy(spec("1.1.0"))
    assert host.snapshot() == before


def test_no_running_mongodb_means_no_backup_and_no_deploy(host: FakeHost, clock: Clock) -> None:
    deployed(host, clock, "1.0.0")
    host.mongo_running = False
    with pytest.raises(DeployError, match="MongoDB is not running"):
        make_engine(host, clock).deploy(spec("1.1.0"))
    assert "stage" not in host.steps


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        ("up", "`docker compose up` failed"),
        ("ps", "`docker compose ps` failed"),
        ("http", "api/health answered 503"),
        ("db-url", "has no DB_URL"),
        ("commit", "could not point current"),
    ],
)
def test_a_failure_after_up_rolls_back_to_the_previous_release(
    host: FakeHost, clock: Clock, step: str, reason: str
) -> None:
    previous = deployed(host, clock, "1.0.0")[-1]
    before = live_images(host)
    new_backend = digest("backend", "1.1.0")
    if step == "http":  # healthy containers, but the endpoint says otherwise
        host.http_broken.add(new_backend)
    else:  # fails for the new release only, every time (verification runs into its deadline)
        host.fail(step, when=lambda command: f"releases/{previous}" not in command)
    with pytest.raises(DeployError) as raised:
        make_engine(host, clock).deploy(spec("1.1.0"))
    message = str(raised.value)
    assert reason in message and f"release {previous} is live and verified" in message
    assert live_images(host) == before and host.current == previous
    record = host.ledger()[-1]
    assert record["outcome"] == "rolled-back"
    assert record["step"] == ("verify" if step in ("ps", "http", "db-url") else step)


def test_an_application_user_that_cannot_authenticate_fails_verification(
    host: FakeHost, clock: Clock
) -> None:
    previous = deployed(host, clock, "1.0.0")[-1]
    with pytest.raises(RollbackError) as raised:  # the previous release cannot auth either
        make_engine(host, clock, auth_ok=False).deploy(spec("1.1.0"))
    message = str(raised.value)
    assert "cannot authenticate (PermissionError)" in message
    assert f"rollback --to {previous}" in message and APP_PASSWORD not in message
    assert clock.t > 30  # waited for the deadline with backoff, not one fixed sleep


def test_a_failing_rollback_names_the_recovery_commands(host: FakeHost, clock: Clock) -> None:
    previous = deployed(host, clock, "1.0.0", "1.1.0")[-1]
    host.fail("up", skip=1)  # the new release's `up` works, the rollback's fails
    with pytest.raises(RollbackError) as raised:
        make_engine(host, clock).deploy(spec("1.2.0"))
    message = str(raised.value)
    assert f"The rollback to {previous} failed too" in message
    assert f"rollback --to {previous}" in message
    assert f"-f {APP_DIR}/releases/{previous}/compose.yaml up -d" in message
    assert "smart-smoker-backup restore" in message and "--in-place" in message
    record = host.ledger()[-1]
    assert record["outcome"] == "rollback-failed"
    assert record["rollback"]["to"] == previous and record["rollback"]["outcome"] == "failed"
    assert host.steps[-1] == "unlock"


def test_a_first_release_that_fails_is_left_for_inspection(host: FakeHost, clock: Clock) -> None:
    with pytest.raises(DeployError, match="no earlier release to roll back to"):
        make_engine(host, clock).deploy(spec("1.2.0"))
    assert host.current is None and host.ledger()[-1]["rollback"]["outcome"] == "none"


# ---------------------------------------------------------------------------------------------
# The lock


def test_a_second_deploy_fails_at_once_naming_the_holder(host: FakeHost, clock: Clock) -> None:
    deployed(host, clock, "1.0.0")
    HostLock(host, clock=clock.wall).acquire("alice@laptop via cli", "rollback")
    before = host.snapshot()
    with pytest.raises(
        LockHeldError,
        match=r"rollback by alice@laptop via cli since .* \(active; stale at .* unless renewed\)",
    ):
        make_engine(host, clock).deploy(spec("1.1.0"))
    assert host.snapshot() == before and host.steps[0] == "lock"
    assert "unlock" not in host.steps  # the holder's lock stays


@pytest.mark.parametrize("step", ["backup", "pull", "up", "http", "commit"])
def test_a_dropped_connection_leaves_a_stale_lock_the_next_deploy_recovers_from(
    host: FakeHost, clock: Clock, step: str
) -> None:
    deployed(host, clock, "1.0.0")
    host.fail(step, drop=True)
    with pytest.raises(DeployError, match="connection to the host was lost") as lost:
        make_engine(host, clock, lock_lease=60).deploy(spec("1.1.0"))
    stated = re.search(r"goes stale at (\S+);", str(lost.value))
    assert stated, lost.value
    stale_at = calendar.timegm(time.strptime(stated.group(1), "%Y-%m-%dT%H:%M:%SZ"))
    host.reconnect()
    with pytest.raises(LockHeldError, match=rf"\(active; stale at {stated.group(1)} unless"):
        make_engine(host, clock, lock_lease=60).deploy(spec("1.1.0"))
    clock.t = stale_at - clock.epoch  # exactly the stated time: still active
    with pytest.raises(LockHeldError, match="active, not stale"):
        HostLock(host, clock=clock.wall).break_stale()
    clock.t += 1  # one second later it is stale, as stated
    with pytest.raises(LockHeldError, match=r"STALE .*lock break"):
        make_engine(host, clock).deploy(spec("1.1.0"))
    assert HostLock(host, clock=clock.wall).break_stale() is not None
    outcome = make_engine(host, clock).deploy(spec("1.1.0"))
    assert host.current == outcome.release
    assert live_images(host)["backend"] == digest("backend", "1.1.0")
    assert not [d for d in host.release_dirs() if d.startswith(".staging-")]


def test_an_active_lock_is_not_broken_without_force(host: FakeHost, clock: Clock) -> None:
    lock = HostLock(host, clock=clock.wall)
    lock.acquire("bob", "deploy")
    with pytest.raises(LockHeldError, match="active, not stale"):
        lock.break_stale()
    assert lock.break_stale(force=True) is not None and lock.status() is None


# ---------------------------------------------------------------------------------------------
# Operator paths: rollback, status, history, pruning


def test_rollback_goes_to_the_release_before_the_live_one(host: FakeHost, clock: Clock) -> None:
    first, second = deployed(host, clock, "1.0.0", "1.1.0")
    outcome = make_engine(host, clock).rollback()
    assert (outcome.release, outcome.outcome) == (first, "rolled-back")
    assert host.current == first
    assert live_images(host)["backend"] == digest("backend", "1.0.0")
    record = host.ledger()[-1]
    assert (record["action"], record["outcome"], record["previous"]) == (
        "rollback",
        "deployed",
        second,
    )


def test_rollback_to_a_named_release_and_to_an_unknown_one(host: FakeHost, clock: Clock) -> None:
    first, _, _ = deployed(host, clock, "1.0.0", "1.1.0", "1.0.0")
    assert make_engine(host, clock).rollback(to=first).release == first
    with pytest.raises(DeployError, match="no release 'nope'"):
        make_engine(host, clock).rollback(to="nope")


def test_status_reports_the_live_release_and_its_health(host: FakeHost, clock: Clock) -> None:
    (release,) = deployed(host, clock, "1.0.0")
    status = make_engine(host, clock).status()
    assert status["release"] == release and status["healthy"] is True
    assert status["digests"]["backend"] == digest("backend", "1.0.0")
    host.broken.add(digest("backend", "1.0.0"))
    assert make_engine(host, clock).status()["problem"] == "service backend is unhealthy"


def test_pruning_keeps_the_newest_releases_and_their_images(host: FakeHost, clock: Clock) -> None:
    ids = []
    for i in range(6):
        clock.t += 60
        version = VERSIONS[i % 2]
        ids.append(
            make_engine(host, clock, keep_releases=3).deploy(spec(version, f"pw{i}")).release
        )
    assert [d for d in host.release_dirs()] == ids[-3:]
    assert digest("backend", "1.0.0") in host.images and digest("backend", "1.1.0") in host.images
    assert "backup-prune" in host.steps


def test_history_reads_the_ledger(host: FakeHost, clock: Clock) -> None:
    deployed(host, clock, "1.0.0", "1.1.0")
    history = make_engine(host, clock).history()
    assert [r["outcome"] for r in history] == ["deployed", "deployed"]


# ---------------------------------------------------------------------------------------------
# Checks from outside (the Tailscale URLs, fetched from where the engine runs)


class _Endpoint(http.server.BaseHTTPRequestHandler):
    answer = (200, b'{"status": "ok"}')

    def do_GET(self) -> None:
        status, body = self.answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[tuple[str, type[_Endpoint]]]:
    handler = type("Endpoint", (_Endpoint,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/health", handler
    finally:
        server.shutdown()
        server.server_close()


def test_outside_checks_fetch_from_here_and_roll_back_when_they_fail(
    host: FakeHost, clock: Clock, endpoint: tuple[str, type[_Endpoint]]
) -> None:
    url, handler = endpoint
    outside = Checks(
        CHECKS.http, CHECKS.mongo_user_env, outside=(HttpCheck(url, json={"status": "ok"}),)
    )

    def with_outside(version: str) -> ReleaseSpec:
        return ReleaseSpec(spec(version).compose, spec(version).env_files, outside)

    first = make_engine(host, clock).deploy(with_outside("1.0.0")).release
    handler.answer = (503, b'{"status": "error"}')
    with pytest.raises(RollbackError, match=rf"from outside: GET {url} answered 503"):
        make_engine(host, clock).deploy(with_outside("1.1.0"))  # the old release fails it too
    handler.answer = (200, b'{"status": "ok"}')
    assert make_engine(host, clock).status()["healthy"] is True
    assert host.current == first
