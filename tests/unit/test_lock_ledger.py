"""The host lock and the ledger, on this machine through LocalTransport (real sh, real files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.ledger import Ledger
from deploy.lock import HostLock, LockHeldError
from deploy.transport import LocalTransport


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def lock(tmp_path: Path, clock: Clock) -> HostLock:
    return HostLock(LocalTransport(), str(tmp_path / "lock"), lease_seconds=120, clock=clock)


def test_second_holder_fails_at_once_naming_the_first(tmp_path: Path, clock: Clock) -> None:
    first, second = lock(tmp_path, clock), lock(tmp_path, clock)
    first.acquire("alice@laptop", "deploy release 42")
    with pytest.raises(
        LockHeldError,
        match=r"deploy release 42 by alice@laptop since .*\(active; stale at .* unless renewed\)",
    ):
        second.acquire("ci@runner", "baseline")
    assert oct((tmp_path / "lock").stat().st_mode & 0o777) == "0o700"


def test_release_lets_the_next_one_in(tmp_path: Path, clock: Clock) -> None:
    first = lock(tmp_path, clock)
    first.acquire("alice", "deploy")
    first.release()
    assert lock(tmp_path, clock).acquire("bob", "rollback").who == "bob"


def test_an_expired_lease_is_stale_and_only_broken_explicitly(tmp_path: Path, clock: Clock) -> None:
    dead = lock(tmp_path, clock)
    dead.acquire("alice", "deploy")  # ... and the process dies without releasing
    clock.now += 121
    with pytest.raises(LockHeldError, match=r"STALE.*lock break"):
        lock(tmp_path, clock).acquire("bob", "deploy")
    broken = lock(tmp_path, clock).break_stale()
    assert broken is not None and broken.who == "alice"
    assert lock(tmp_path, clock).acquire("bob", "deploy").who == "bob"


def test_renewing_keeps_a_long_deploy_from_looking_stale(tmp_path: Path, clock: Clock) -> None:
    holder = lock(tmp_path, clock)
    owner = holder.acquire("alice", "deploy")
    clock.now += 100
    holder.renew(owner)
    clock.now += 100
    with pytest.raises(LockHeldError, match="the lock is active"):
        lock(tmp_path, clock).break_stale()


def test_ledger_appends_root_only_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "log" / "deployments.jsonl"
    ledger = Ledger(LocalTransport(), str(path))
    ledger.append({"release": "r1", "outcome": "success"})
    ledger.append({"release": "r2", "outcome": "rolled-back", "error": "backend unhealthy"})
    assert [r["release"] for r in ledger.records()] == ["r1", "r2"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert json.loads(path.read_text().splitlines()[1])["outcome"] == "rolled-back"
