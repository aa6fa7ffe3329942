"""Self-diagnosis and the ledger over the fake host: every state a hand or a crash can leave is
named by `status` and by `deploy` with the command that fixes it, and every attempt that took the
lock lands in the ledger, whatever ended it."""

from __future__ import annotations

import pytest

from deploy import checks, commands
from deploy.engine import DeployError, Engine
from deploy.ledger import LedgerError
from deploy.lock import HostLock, LockHeldError
from deploy.release import Site
from layout import LEDGER_PATH
from tests.unit.engine_kit import Clock, deployed, digest, make_engine, spec
from tests.unit.fake_host import APP_DIR, PROJECT, FakeHost

CLI = "python -m deploy --stack dev --guest dev-cloud"
SITE = Site(PROJECT, APP_DIR)


def engine(host: FakeHost, clock: Clock, log: list[str] | None = None) -> Engine:
    made = make_engine(host, clock)
    made.cli = CLI
    made.lock.breaker = f"{CLI} lock break"
    if log is not None:
        made.log = log.append
    return made


def findings(host: FakeHost, clock: Clock) -> list[str]:
    found: list[str] = engine(host, clock).status()["findings"]
    return found


# ---------------------------------------------------------------------------------------------
# The commands and the checks, by exact strings and types


def test_the_commands_are_exact() -> None:
    assert commands.commit(SITE, "r1") == (
        f"cd {APP_DIR} && touch releases/r1/.committed && "
        "ln -sfn releases/r1 .current.new && mv -T .current.new current"
    )
    assert commands.start_mongo(SITE, "r1") == (
        f"docker compose -p {PROJECT} -f {APP_DIR}/releases/r1/compose.yaml up -d --wait mongo"
    )
    assert commands.start_mongo(SITE, None) == (
        f"docker compose -p {PROJECT} -f {APP_DIR}/bootstrap-compose.yaml up -d --wait mongo"
    )
    assert commands.mongo_running(SITE) == (
        f"docker ps -q --filter label=com.docker.compose.project={PROJECT} "
        "--filter label=com.docker.compose.service=mongo"
    )
    assert commands.remove("/a b", "/c") == "rm -rf '/a b' /c"


def test_a_check_says_whether_waiting_can_fix_it() -> None:
    digests = {"backend": "b@sha256:1"}
    row = {"Service": "backend", "Image": "b@sha256:1", "State": "running"}
    assert checks.containers_problem([{**row, "Health": "healthy"}], digests) is None
    starting = checks.containers_problem([{**row, "Health": "starting"}], digests)
    assert starting == checks.Problem("service backend is starting", permanent=False)
    unhealthy = checks.containers_problem([{**row, "Health": "unhealthy"}], digests)
    assert unhealthy is not None and unhealthy.permanent
    assert str(unhealthy) == "service backend is unhealthy"


# ---------------------------------------------------------------------------------------------
# Host state left by hand or by a crash


def test_a_healthy_host_has_no_findings(host: FakeHost, clock: Clock) -> None:
    deployed(host, clock, "1.0.0")
    assert findings(host, clock) == []


def test_a_missing_ledger_is_named_and_started_again(host: FakeHost, clock: Clock) -> None:
    deployed(host, clock, "1.0.0")
    del host.files[LEDGER_PATH]
    (found,) = findings(host, clock)
    assert f"the ledger {LEDGER_PATH} is missing" in found
    assert f"Fix, on the guest: `install -D -m 0600 /dev/null {LEDGER_PATH}`" in found
    log: list[str] = []
    engine(host, clock, log).deploy(spec("1.1.0"))
    assert any("is missing" in line for line in log)
    (record,) = host.ledger()  # the deploy started the ledger again and says why
    assert record["outcome"] == "deployed" and "is missing" in record["findings"][0]
    assert findings(host, clock) == []


def test_current_pointing_at_a_removed_release(host: FakeHost, clock: Clock) -> None:
    first, second = deployed(host, clock, "1.0.0", "1.1.0")
    host._remove(f"{APP_DIR}/releases/{second}")
    status = engine(host, clock).status()
    assert status["release"] is None and status["healthy"] is False
    (found,) = status["findings"]
    assert f"`current` points at release {second}, which is not on the host" in found
    assert f"Fix: `{CLI} rollback --to {first}`" in found
    assert engine(host, clock).rollback(to=first).release == first
    assert findings(host, clock) == []


def test_current_pointing_nowhere_and_nothing_to_roll_back_to(host: FakeHost, clock: Clock) -> None:
    (only,) = deployed(host, clock, "1.0.0")
    host._remove(f"{APP_DIR}/releases/{only}")
    (found,) = findings(host, clock)
    assert "Fix: `pulumi up --stack <stack>`" in found
    outcome = engine(host, clock).deploy(spec("1.1.0"))  # the deploy is the fix
    assert host.current == outcome.release and host.ledger()[-1]["previous"] is None


def test_a_half_staged_release_is_named_and_the_next_deploy_removes_it(
    host: FakeHost, clock: Clock
) -> None:
    deployed(host, clock, "1.0.0")
    staging = f"{APP_DIR}/releases/.staging-dead"
    host.files[f"{staging}/.dir"] = ""
    (found,) = findings(host, clock)
    assert "a half-staged release .staging-dead was left" in found
    assert f"Fix, on the guest: `rm -rf {staging}`" in found
    log: list[str] = []
    engine(host, clock, log).deploy(spec("1.1.0"))
    assert "removed the half-staged .staging-dead left by an earlier deploy" in log
    assert ".staging-dead" not in host.release_dirs()


def test_a_stale_lock_is_named_with_the_command_that_breaks_it(
    host: FakeHost, clock: Clock
) -> None:
    deployed(host, clock, "1.0.0")
    HostLock(host, clock=clock.wall).acquire("alice@laptop via cli", "deploy")
    assert findings(host, clock) == []  # an active lock is no problem
    clock.t += 3600
    (found,) = findings(host, clock)
    assert "the deploy lock is stale: deploy by alice@laptop via cli" in found
    assert f"Fix: `{CLI} lock break`" in found
    with pytest.raises(LockHeldError, match=f"STALE .*Break it with `{CLI} lock break`"):
        engine(host, clock).deploy(spec("1.1.0"))


def test_a_stopped_mongodb_is_named_with_the_command_that_starts_it(
    host: FakeHost, clock: Clock
) -> None:
    (live,) = deployed(host, clock, "1.0.0")
    host.mongo_running = False
    start = (
        f"docker compose -p {PROJECT} -f {APP_DIR}/releases/{live}/compose.yaml up -d --wait mongo"
    )
    (found,) = findings(host, clock)
    assert "MongoDB is not running" in found and f"Fix, on the guest: `{start}`" in found
    with pytest.raises(DeployError, match="MongoDB is not running") as raised:
        engine(host, clock).deploy(spec("1.1.0"))
    assert start in str(raised.value) and "Nothing was changed" in str(raised.value)


# ---------------------------------------------------------------------------------------------
# Every attempt that took the lock lands in the ledger


def test_a_bug_inside_an_attempt_is_recorded(host: FakeHost, clock: Clock) -> None:
    deployed(host, clock, "1.0.0")
    made = engine(host, clock)

    def broken(*_: object) -> None:
        raise KeyError("surprise")

    made.checker.problem = broken  # type: ignore[assignment,method-assign]
    with pytest.raises(KeyError):
        made.deploy(spec("1.1.0"))
    record = host.ledger()[-1]
    assert (record["outcome"], record["step"]) == ("failed", "internal")
    assert "surprise" in record["error"] and host.steps[-1] == "unlock"


def test_an_interrupted_attempt_is_recorded(host: FakeHost, clock: Clock) -> None:
    deployed(host, clock, "1.0.0")
    host.http_broken.add(digest("backend", "1.1.0"))  # verification polls, and sleeps
    made = engine(host, clock)

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    made.sleep = interrupt
    with pytest.raises(KeyboardInterrupt):
        made.deploy(spec("1.1.0"))
    record = host.ledger()[-1]
    assert (record["outcome"], record["step"]) == ("interrupted", "verify")
    assert host.steps[-1] == "unlock"


def test_a_missing_manifest_is_recorded(host: FakeHost, clock: Clock) -> None:
    first, _ = deployed(host, clock, "1.0.0", "1.1.0")
    del host.files[f"{APP_DIR}/releases/{first}/manifest.json"]
    host.files[f"{APP_DIR}/releases/{first}/x"] = ""
    with pytest.raises(DeployError, match="no release"):
        engine(host, clock).rollback(to=first)
    assert host.ledger()[-1]["outcome"] == "failed"


def test_a_backup_is_recorded(host: FakeHost, clock: Clock) -> None:
    (live,) = deployed(host, clock, "1.0.0")
    backup = engine(host, clock).backup()
    record = host.ledger()[-1]
    assert (record["action"], record["outcome"], record["release"]) == ("backup", "backed-up", live)
    assert record["backup"] == backup


def test_a_lost_attempt_is_recorded_when_its_lock_is_broken(host: FakeHost, clock: Clock) -> None:
    deployed(host, clock, "1.0.0")
    host.fail("up", drop=True)
    with pytest.raises(DeployError, match="it records this attempt in the ledger"):
        engine(host, clock).deploy(spec("1.1.0"))
    host.reconnect()
    assert host.ledger()[-1]["outcome"] == "deployed"  # the lost attempt could not write
    clock.t += 3600
    holder = engine(host, clock).break_lock()
    assert holder is not None
    record = host.ledger()[-1]
    assert (record["action"], record["outcome"], record["who"]) == (
        "deploy",
        "abandoned",
        "tester@ci via test",
    )


def test_an_unwritable_ledger_is_one_clear_error(host: FakeHost, clock: Clock) -> None:
    deployed(host, clock, "1.0.0")
    host.fail("ledger")
    with pytest.raises(LedgerError) as raised:
        engine(host, clock).deploy(spec("1.1.0"))
    message = str(raised.value)
    assert "\n" not in message and f"could not append to the ledger {LEDGER_PATH}" in message
    assert "deploy of " in message and "deployed" in message and "was not recorded" in message
    assert host.steps[-1] == "unlock"
