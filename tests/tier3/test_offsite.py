"""Off-guest backups and the rebuild drill on real guests over real SSH: restic 0.14 over SFTP to
a second test container that outlives the guests; MongoDB is the STAND-IN (see docs/testing.md).

The drill: a guest with data ships its dumps off the guest, is destroyed, a fresh guest at the
same address is built by the same steps, and the engine's restore (what `python -m deploy
restore` runs) brings the documents back, identical, under a release that verifies.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from components.release import release_engine
from deploy.engine import Engine
from deploy.record import DeployError
from layout import BACKUP_TOOL, BACKUP_TOOL_NAME
from rendering import restic
from rendering.backup import backup_plan
from rendering.restic import ResticSecrets
from testbed.harness import Engine as Harness
from testbed.harness import Guest, ImageSet
from testbed.harness.sftp_target import SftpTarget, start_sftp_target
from tests.tier3.baseline_env import apply_plan
from tests.tier3.data_env import (
    TARGET_IP,
    AppGuest,
    build_app_guest,
    content_of,
    drill_network,
    load_documents,
    rebuild_app_guest,
)
from tests.tier3.release_env import Releases

pytestmark = pytest.mark.tier3
PASSWORD = "restic-Pa55word-for-the-drill"
SHIP = f"{BACKUP_TOOL_NAME}-ship.service"


@pytest.fixture(scope="module")
def target(engine: Harness, images: ImageSet) -> Iterator[SftpTarget]:
    """The SFTP server of the restic repositories, on the drill network (outlives the guests)."""
    with drill_network(engine) as network:
        sftp = start_sftp_target(engine, images, network=network, ip=TARGET_IP)
        try:
            yield sftp
        finally:
            sftp.remove()


def secrets_for(target: SftpTarget, name: str, password: str = PASSWORD) -> ResticSecrets:
    return ResticSecrets(target.repository(name), password, target.private_key, target.known_hosts)


def operator(app_guest: AppGuest) -> AbstractContextManager[Engine]:
    """The engine over SSH to the guest, as the Release provider and `python -m deploy` build it."""
    return release_engine(app_guest.deployed.release, "drill@tier3 via cli")


def ship_now(guest: Guest) -> None:
    """What the nightly timer runs, and then the ship unit it starts, to its end."""
    guest.run(f"systemctl start {BACKUP_TOOL_NAME}.service")
    guest.run(f"systemctl start {SHIP}")  # joins the run the nightly started


def failures(guest: Guest) -> list[dict[str, Any]]:
    out = guest.run("cat /var/log/smart-smoker/backup-failures.jsonl 2>/dev/null || true").stdout
    return [json.loads(line) for line in out.splitlines()]


def wait_failed(guest: Guest, unit: str) -> None:
    guest.run(
        f"for i in $(seq 100); do systemctl is-failed --quiet {unit} && exit 0; sleep 0.2; done;"
        " exit 1"
    )


@pytest.fixture(scope="module")
def drilled(
    target: SftpTarget, guest_factory: Callable[..., Guest], releases: Releases
) -> Iterator[dict[str, Any]]:
    """Guest A with data, shipped off the guest, destroyed; guest B restored by the drill."""
    repo = secrets_for(target, "drill")
    a = build_app_guest(guest_factory, releases, hostname="drill-guest", restic=repo)
    data = load_documents(a.guest, 8, seed=15)
    ship_now(a.guest)
    listing = a.guest.run(f"{BACKUP_TOOL} list").stdout
    b = rebuild_app_guest(a, guest_factory, releases, restic=repo)
    empty = content_of(b.guest)
    with operator(b) as engine:
        restored = engine.restore()
        status = engine.status()
    yield {
        "a": a, "b": b, "data": data, "empty": empty, "listing": listing,
        "restored": restored, "status": status,
    }  # fmt: skip


def test_the_dumps_reach_the_repository_with_both_copies_listed(
    drilled: dict[str, Any], target: SftpTarget
) -> None:
    assert any(f.startswith("snapshots/") for f in target.files("drill"))
    rows = [line.split("\t") for line in drilled["listing"].splitlines()[1:]]
    assert rows and all(row[3] == "yes" and row[4] != "-" for row in rows)


def test_the_rebuilt_guest_gets_back_every_document_under_a_verified_release(
    drilled: dict[str, Any],
) -> None:
    assert drilled["empty"].count == 0
    assert content_of(drilled["b"].guest) == drilled["data"]
    restored = drilled["restored"]
    assert restored["documents"] == drilled["data"].count and restored["replaced"] == 0
    assert drilled["status"]["healthy"] is True
    assert drilled["status"]["release"] == restored["release"]
    print(f"\ndrill: {drilled['data'].count} documents; seconds {restored['seconds']}")


def test_a_second_restore_is_refused_on_a_guest_that_holds_data(drilled: dict[str, Any]) -> None:
    with operator(drilled["b"]) as engine, pytest.raises(DeployError, match="already holds"):
        engine.restore()
    assert content_of(drilled["b"].guest) == drilled["data"]


def test_wrong_password_is_a_clear_error_and_changes_nothing(
    drilled: dict[str, Any], target: SftpTarget
) -> None:
    app_guest: AppGuest = drilled["b"]
    guest, cfg = app_guest.guest, app_guest.deployed.cfg
    project = app_guest.deployed.release["project"]
    before = target.files("drill")
    wrong = secrets_for(target, "drill", password="not-the-repository-password")
    apply_plan(guest, backup_plan(cfg, project, None, wrong))
    try:
        dumped = guest.run(f"SMOKER_BACKUP_SHIP=inline {BACKUP_TOOL} dump")  # the dump still counts
        assert "refused the password: resticPassword" in dumped.stderr
        result = guest.run(f"{BACKUP_TOOL} ship", check=False)
        assert result.returncode != 0
        assert "refused the password: resticPassword" in result.stderr
        assert "pulumi config set --secret resticPassword" in result.stderr
        assert target.address not in result.stderr + dumped.stderr
        assert target.files("drill") == before
    finally:
        apply_plan(guest, backup_plan(cfg, project, None, secrets_for(target, "drill")))
    assert "shipped " in guest.run(f"{BACKUP_TOOL} ship").stdout  # the right password catches up


def test_unreachable_repository_keeps_the_local_dump_and_fires_the_failure_unit(
    drilled: dict[str, Any], target: SftpTarget
) -> None:
    guest: Guest = drilled["b"].guest
    target.stop_sshd()
    try:
        dumped = guest.run(f"{BACKUP_TOOL} dump").stdout.strip().splitlines()[-1]
        assert guest.run(f"readlink -f {dumped.rsplit('/', 1)[0]}/latest").stdout.strip() == dumped
        wait_failed(guest, SHIP)
        guest.run(
            f"for i in $(seq 100); do grep -q {SHIP} /var/log/smart-smoker/backup-failures.jsonl"
            " && exit 0; sleep 0.2; done; exit 1"
        )
        assert SHIP in [f["unit"] for f in failures(guest)]
        ship = guest.run(f"{BACKUP_TOOL} ship", check=False)
        assert ship.returncode != 0 and "cannot be reached" in ship.stderr
        assert target.address not in ship.stderr
    finally:
        target.start_sshd()
    caught_up = guest.run(f"{BACKUP_TOOL} ship").stdout
    assert "shipped " + dumped.rsplit("/", 1)[-1] in caught_up


def test_retention_over_simulated_months_keeps_exactly_7_4_12(
    drilled: dict[str, Any], target: SftpTarget
) -> None:
    app_guest: AppGuest = drilled["b"]
    guest, cfg = app_guest.guest, app_guest.deployed.cfg
    project = app_guest.deployed.release["project"]
    apply_plan(guest, backup_plan(cfg, project, None, secrets_for(target, "months")))
    try:
        start = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)
        days = [start + dt.timedelta(days=n) for n in range(400)]
        sundays = [d for d in days if d.isoweekday() == 7 and d.day != 1][-5:]
        nights = [d for d in days if d.day == 1 or d in sundays or d >= days[-12]]
        guest.run(f"rm -f {app_guest.deployed.cfg.baseline.app_dir}/backups/smartsmoker-*")
        shipped = 0
        for n, night in enumerate(nights):
            # Every third night ships (and prunes the repository); the others wait for the
            # next ship, which catches up oldest first, as after a few nights offline.
            mode = "inline" if n % 3 == 2 or n == len(nights) - 1 else "later"
            run = guest.run(
                f"SMOKER_BACKUP_NOW={int(night.timestamp())} SMOKER_BACKUP_SHIP={mode} "
                f"{BACKUP_TOOL} nightly"
            )
            shipped += (run.stdout + run.stderr).count("shipped smartsmoker-")
        snapshots = json.loads(
            guest.run(
                f"set -a; . {restic.ENV_FILE}; restic -o sftp.command={restic.SFTP_COMMAND!r}"
                " snapshots --json"
            ).stdout
        )
        classes = Counter(
            t.split("=")[1] for s in snapshots for t in s["tags"] if t.startswith("class=")
        )
        assert classes == Counter({"daily": 7, "weekly": 4, "monthly": 12})
        assert shipped > len(snapshots)  # the repository's retention did forget some
        # the guest's own retention kept the same archives (the local copies)
        local = guest.run(f"ls {app_guest.deployed.cfg.baseline.app_dir}/backups").stdout.split()
        archives = sorted(name for name in local if name.endswith(".archive.gz"))
        assert Counter(name.split("-")[1] for name in archives) == classes
        remote = sorted(
            p.rsplit("/", 1)[-1] for s in snapshots for p in s["paths"] if p.endswith(".archive.gz")
        )
        assert remote == archives
    finally:
        apply_plan(guest, backup_plan(cfg, project, None, secrets_for(target, "drill")))


def test_no_secret_of_the_repository_outside_root_only_files(
    drilled: dict[str, Any], target: SftpTarget
) -> None:
    guest: Guest = drilled["b"].guest
    ship_now(guest)
    secrets = [
        PASSWORD,
        target.address,
        target.private_key.strip().splitlines()[2],
    ]  # [1] is common to all
    for secret in secrets:
        found = guest.run(
            'f=$(mktemp); cat > "$f";'
            ' grep -rlFf "$f" /etc /opt /var/log /var/lib/smart-smoker /usr/local /root 2>/dev/null'
            f" | grep -v -e '^{restic.RESTIC_DIR}/' -e \"^$f$\";"
            ' echo "journal: $(journalctl -o cat --no-pager | grep -cFf "$f")"; rm -f "$f"',
            input=secret.encode(),
            check=False,
        ).stdout.splitlines()
        assert found == ["journal: 0"], found
    modes = guest.run(f"stat -c '%a %U %n' {restic.RESTIC_DIR} {restic.RESTIC_DIR}/*").stdout
    assert all(
        line.split()[:2] in (["600", "root"], ["700", "root"]) for line in modes.splitlines()
    )
