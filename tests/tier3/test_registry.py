"""Tier 3: pulling by digest from the STAND-IN registry (testbed/registry) on a test guest.

The registry runs in this test process on the harness bridge (169.254.77.1); the guest's nested
Docker engine lists it in ``insecure-registries`` (merged into the guest's daemon.json). The
stand-in backend image is published as ``smart-smoker-backend:nightly``; the guest then pulls it
by digest and by tag, sees the tag move to a second version (the old digest still pulls), and
fails to pull the tag once it is gone. Before every pull the guest drops its local copies, so
each pull really fetches from the registry.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

from testbed.harness import Engine, Guest, GuestCommandError
from testbed.harness.engine import BRIDGE_IP
from testbed.registry import Registry
from testbed.registry.push import publish, resolve_digest, trust_registry
from testbed.standins import build_standins

pytestmark = pytest.mark.tier3

REPO = "smart-smoker-backend"
OLD, NEW = "1.0.0", "1.1.0"


@dataclass(frozen=True)
class Published:
    """The registry, a guest that trusts it, and what was published."""

    guest: Guest
    registry: Registry
    old_digest: str
    new_digest: str
    old_image_id: str
    new_image_id: str

    def ref(self, suffix: str) -> str:
        """``<registry>/smart-smoker-backend<suffix>`` (suffix ``:tag`` or ``@digest``)."""
        return f"{self.registry.address}/{REPO}{suffix}"


def drop_local(guest: Guest) -> None:
    """Remove every image from the (dedicated) guest's engine, so the next pull fetches."""
    guest.run(
        'ids=$(docker images -q --no-trunc | sort -u); [ -z "$ids" ] || docker rmi -f $ids'
        " >/dev/null"
    )


def pull(guest: Guest, ref: str) -> str:
    """``docker pull ref`` in the guest; the pulled image's ID."""
    guest.run(f"docker pull -q {shlex.quote(ref)}", timeout=300)
    return guest.run(f"docker image inspect -f '{{{{.Id}}}}' {shlex.quote(ref)}").stdout.strip()


def repo_digests(guest: Guest, ref: str) -> list[str]:
    out = guest.run(f"docker image inspect -f '{{{{json .RepoDigests}}}}' {shlex.quote(ref)}")
    return json.loads(out.stdout)


def summary(registry: Registry) -> list[str]:
    """The distinct requests the registry saw, digests and upload ids elided, with counts."""
    counts: dict[str, int] = {}
    for method, path, headers in registry.requests:
        line = re.sub(r"sha256:[0-9a-f]{64}", "<digest>", f"{method} {unquote(path)}")
        line = re.sub(r"[0-9a-f-]{36}", "<uuid>", line).replace(REPO, "<repo>")
        if headers:
            line += " " + json.dumps(headers, sort_keys=True)
        counts[line] = counts.get(line, 0) + 1
    return [f"{n:3}x {line}" for line, n in sorted(counts.items())]


@pytest.fixture(scope="module")
def published(
    engine: Engine, guest_factory: Callable[..., Guest], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Published]:
    standins = build_standins(engine, versions=(OLD, NEW))
    guest = guest_factory(hostname="registry-guest")
    root: Path = tmp_path_factory.mktemp("registry")
    with Registry(root, BRIDGE_IP.split("/")[0], loopback=True) as registry:
        trust_registry(guest, registry.address)
        t0 = time.monotonic()
        old = publish(engine, guest, registry, {standins.backend[OLD]: f"{REPO}:nightly"})
        new = publish(  # the other way in: from the guest's nested engine
            engine, guest, registry, {standins.backend[NEW]: f"{REPO}:{NEW}"}, from_guest=True
        )
        print(f"published two images in {time.monotonic() - t0:.1f}s")

        def image_id(ref: str) -> str:
            return engine.docker_text("image", "inspect", "-f", "{{.Id}}", ref)

        yield Published(
            guest,
            registry,
            old[f"{REPO}:nightly"].split("@", 1)[1],
            new[f"{REPO}:{NEW}"].split("@", 1)[1],
            image_id(standins.backend[OLD]),
            image_id(standins.backend[NEW]),
        )
        print("registry saw:", *summary(registry), sep="\n  ")


def test_pull_by_digest(published: Published) -> None:
    guest, digest = published.guest, published.old_digest
    drop_local(guest)
    image_id = pull(guest, published.ref(f"@{digest}"))
    assert image_id == published.old_image_id  # the very image built on the harness engine
    assert published.ref(f"@{digest}") in repo_digests(guest, published.ref(f"@{digest}"))
    # The backend stand-in runs from the pulled image.
    out = guest.run(
        f"docker run --rm --entrypoint cat {published.ref(f'@{digest}')} /etc/os-release"
    )
    assert "bookworm" in out.stdout


def test_pull_by_tag_and_resolve_without_pulling(published: Published) -> None:
    guest = published.guest
    drop_local(guest)
    address = published.registry.address
    assert resolve_digest(guest, address, REPO, "nightly") == published.old_digest
    assert guest.run("docker images -q").stdout.strip() == ""  # nothing was pulled
    # Docker 20.10's own CLI agrees (``docker manifest`` needs no experimental flag any more).
    inspected = guest.run(f"docker manifest inspect --insecure -v {published.ref(':nightly')}")
    assert json.loads(inspected.stdout)["Descriptor"]["digest"] == published.old_digest
    assert pull(guest, published.ref(":nightly")) == published.old_image_id
    assert published.ref(f"@{published.old_digest}") in repo_digests(
        guest, published.ref(":nightly")
    )


def test_tag_moves_forward_then_vanishes(published: Published) -> None:
    guest, registry = published.guest, published.registry
    address = registry.address
    registry.move_tag(REPO, "nightly", published.old_digest)  # whatever ran before
    assert published.new_digest != published.old_digest

    registry.move_tag(REPO, "nightly", published.new_digest)
    assert resolve_digest(guest, address, REPO, "nightly") == published.new_digest
    drop_local(guest)
    assert pull(guest, published.ref(":nightly")) == published.new_image_id
    assert published.ref(f"@{published.new_digest}") in repo_digests(
        guest, published.ref(":nightly")
    )
    # The release pinned to the old digest still pulls exactly what it pulled before.
    drop_local(guest)
    assert pull(guest, published.ref(f"@{published.old_digest}")) == published.old_image_id

    registry.delete_tag(REPO, "nightly")
    with pytest.raises(LookupError):
        resolve_digest(guest, address, REPO, "nightly")
    drop_local(guest)
    with pytest.raises(GuestCommandError) as failed:
        guest.run(f"docker pull {shlex.quote(published.ref(':nightly'))}", timeout=120)
    assert "manifest unknown" in failed.value.stderr or "not found" in failed.value.stderr
    # Pinned digests are unaffected by the vanished tag.
    assert pull(guest, published.ref(f"@{published.new_digest}")) == published.new_image_id
