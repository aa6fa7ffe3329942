"""The rebuild drill's restore (Engine.restore) over the fake host: the order of its steps,
the refusal on a guest that holds data, and what every failure leaves."""

from __future__ import annotations

import json

import pytest

from deploy.record import DeployError
from tests.unit.engine_kit import Clock, deployed, fake_host, make_engine
from tests.unit.fake_host import FakeHost

NEWEST = "smartsmoker-daily-20261120T070000Z"


@pytest.fixture()
def fresh() -> tuple[FakeHost, Clock]:
    """A guest the stack just built: its release is live and its database is empty."""
    host, clock = fake_host(), Clock()
    deployed(host, clock, "1.0.0")
    return host, clock


def ledger(host: FakeHost) -> list[dict[str, object]]:
    text = next(v for k, v in host.files.items() if k.endswith("deployments.jsonl"))
    return [json.loads(line) for line in text.splitlines()]


def test_restore_on_a_fresh_guest_fetches_restores_and_verifies(
    fresh: tuple[FakeHost, Clock],
) -> None:
    host, clock = fresh
    result = make_engine(host, clock).restore()
    assert result["restored"] == f"{NEWEST}.archive.gz" and result["documents"] == 42
    assert result["replaced"] == 0 and result["safetyBackup"] is None
    steps = [s for s in host.steps if s not in ("renew", "lock-status")]
    assert steps.index("fetch") < steps.index("restore") < steps.index("ps")
    assert "backup" not in steps  # nothing to keep on an empty database
    (record,) = [r for r in ledger(host) if r["action"] == "restore"]
    assert record["outcome"] == "restored" and record["release"] == result["release"]


def test_a_named_snapshot_is_fetched(fresh: tuple[FakeHost, Clock]) -> None:
    host, clock = fresh
    host.offsite["smartsmoker-monthly-20261101T070000Z"] = 7
    result = make_engine(host, clock).restore("smartsmoker-monthly-20261101T070000Z")
    assert result["documents"] == 7


def test_a_guest_with_data_is_refused_and_nothing_changes(fresh: tuple[FakeHost, Clock]) -> None:
    host, clock = fresh
    host.documents = 5
    with pytest.raises(DeployError, match=r"already holds 5 documents.*restore --force"):
        make_engine(host, clock).restore()
    assert not {"fetch", "restore", "backup"} & set(host.steps)
    assert host.documents == 5
    assert ledger(host)[-1]["outcome"] == "failed"


def test_force_backs_up_the_data_it_replaces_first(fresh: tuple[FakeHost, Clock]) -> None:
    host, clock = fresh
    host.documents = 5
    result = make_engine(host, clock).restore(force=True)
    assert result["replaced"] == 5 and result["documents"] == 42
    assert str(result["safetyBackup"]).endswith(".archive.gz")
    assert host.steps.index("backup") < host.steps.index("fetch")


def test_no_live_release_says_to_run_pulumi_up_first() -> None:
    host, clock = fake_host(), Clock()
    with pytest.raises(DeployError, match="no live release on this guest: run `pulumi up"):
        make_engine(host, clock).restore()


def test_a_failed_fetch_changes_nothing(fresh: tuple[FakeHost, Clock]) -> None:
    host, clock = fresh
    with pytest.raises(DeployError, match=r"failed at fetch: .*no off-guest backup named nope"):
        make_engine(host, clock).restore("nope")
    assert "restore" not in host.steps and host.documents == 0


def test_a_failed_restore_names_the_command_that_finishes_it(
    fresh: tuple[FakeHost, Clock],
) -> None:
    host, clock = fresh
    host.fail("restore")
    with pytest.raises(
        DeployError, match=rf"part of it: run `.* restore --snapshot {NEWEST} --force`"
    ):
        make_engine(host, clock).restore()
    assert ledger(host)[-1]["outcome"] == "failed" and ledger(host)[-1]["step"] == "restore"


def test_status_shows_the_backups_and_their_problems(fresh: tuple[FakeHost, Clock]) -> None:
    host, clock = fresh
    host.report = json.dumps(
        {
            "local": {"name": "a.archive.gz", "ageHours": 3.0},
            "offsite": {"name": "a.archive.gz", "snapshot": "1234abcd", "ageHours": 50.0},
            "problems": ["the newest off-guest backup is 50.0 h old"],
        }
    )
    status = make_engine(host, clock).status()
    assert status["backups"]["offsite"]["snapshot"] == "1234abcd"
    assert any(
        f.startswith("backups: the newest off-guest backup is 50.0 h old") and "list" in f
        for f in status["findings"]
    )
