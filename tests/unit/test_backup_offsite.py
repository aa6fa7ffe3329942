"""Off-guest copies: the rendered backup tool with the real restic (0.14, Debian's) and a local
repository; only `docker` is faked. The sftp: path is proven on the test guest (tier 3)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from config import OffsiteSettings, Retention
from rendering.backup_retention import Backup, pick, to_delete
from tests.configs import evolve, parse, stack_raw
from tests.unit.backup_kit import ZONE, expected_class, install_tool, sparse_nights

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")
PASSWORD = "correct-horse-battery-staple-restic"
KEEP = {"daily": 7, "weekly": 4, "monthly": 12, "predeploy": 10}
T0 = int(dt.datetime(2026, 3, 2, 2, 0, tzinfo=ZoneInfo(ZONE)).timestamp())  # a Monday


@dataclass
class Guest:
    """One guest's backup tool, shipping to `repo` (a directory standing for the remote)."""

    root: Path
    script: Path
    env: dict[str, str]
    backups: Path
    repo: Path

    def run(self, *args: str, now: int, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.script), *args], env={**self.env, "SMOKER_BACKUP_NOW": str(now)},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    def restic(self, *args: str) -> str:
        env = {**os.environ, "RESTIC_REPOSITORY": str(self.repo), "RESTIC_PASSWORD": PASSWORD}
        return subprocess.run(
            ["restic", *args], env=env, capture_output=True, text=True, check=True
        ).stdout

    def snapshots(self) -> list[dict[str, object]]:
        snaps: list[dict[str, object]] = json.loads(self.restic("snapshots", "--json") or "[]")
        return snaps

    def classes(self) -> Counter[str]:
        return Counter(
            next(t.split("=")[1] for t in s["tags"] if t.startswith("class="))  # type: ignore[attr-defined]
            for s in self.snapshots()
        )

    def failures(self) -> list[dict[str, object]]:
        log = self.root / "log" / "backup-failures.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def make_guest(
    root: Path, repo: Path, retention: Retention | None = None, password: str = PASSWORD
) -> Guest:
    root.mkdir(parents=True, exist_ok=True)
    cfg = parse(stack_raw("dev"), "dev")
    backups_cfg = evolve(
        cfg.app.backups,
        offsite=OffsiteSettings(enabled=True),
        retention=retention or cfg.app.backups.retention,
    )
    cfg = evolve(cfg, app=evolve(cfg.app, backups=backups_cfg))
    script, env, backups = install_tool(root, cfg)
    (root / "password").write_text(password + "\n")
    (root / "restic.env").write_text(
        f"RESTIC_REPOSITORY='{repo}'\nRESTIC_PASSWORD_FILE='{root / 'password'}'\n"
        f"RESTIC_CACHE_DIR='{root / 'cache'}'\nSMOKER_RESTIC_KIND=local\nSMOKER_RESTIC_HOST=''\n"
    )
    return Guest(root, script, env, backups, repo)


@pytest.fixture()
def guest(tmp_path: Path) -> Guest:
    return make_guest(tmp_path / "guest-a", tmp_path / "repo")


def test_every_dump_is_shipped_with_its_manifest_and_tags(guest: Guest) -> None:
    path = Path(guest.run("dump", now=T0).stdout.strip().splitlines()[-1])
    (snap,) = guest.snapshots()
    tags = dict(t.split("=", 1) for t in snap["tags"] if "=" in t)  # type: ignore[attr-defined]
    manifest = json.loads(path.with_name(path.name.replace(".archive.gz", ".json")).read_text())
    assert tags["sha256"] == manifest["sha256"] and tags["epoch"] == str(T0)
    assert tags["class"] == "daily" and tags["instance"] == manifest["instance"]
    assert snap["hostname"] == "smart-smoker-dev"
    assert sorted(Path(p).name for p in snap["paths"]) == sorted(  # type: ignore[attr-defined]
        [path.name, path.name.replace(".archive.gz", ".json")]
    )
    last = json.loads((guest.root / "status" / "offsite-last.json").read_text())
    assert last["name"] == path.name and str(snap["id"]).startswith(last["snapshot"])
    # a second ship sends nothing new
    assert "nothing to ship" in guest.run("ship", now=T0 + 60).stdout


def test_list_and_report_show_both_copies_with_ages(guest: Guest) -> None:
    guest.run("nightly", now=T0)
    listing = guest.run("list", now=T0 + 7200).stdout.splitlines()
    assert listing[0].split("\t") == ["archive", "class", "age", "local", "off-guest"]
    name, cls, age, local, remote = listing[1].split("\t")
    assert (cls, age, local, len(remote)) == ("daily", "2.0 h", "yes", 8)
    report = json.loads(guest.run("report", now=T0 + 7200).stdout)
    assert report["local"]["name"] == name and report["offsite"]["ageHours"] == 2.0
    assert report["problems"] == []
    stale = json.loads(guest.run("report", now=T0 + 49 * 3600).stdout)
    assert "the newest off-guest backup is 49.0 h old" in stale["problems"]


def test_remote_retention_mirrors_the_local_one(tmp_path: Path) -> None:
    # 7/4/12 itself is proven over SFTP in tier 3 and by to_delete below; here 2/1/3 keeps it short
    guest = make_guest(tmp_path / "a", tmp_path / "repo", Retention(daily=2, weekly=1, monthly=3))
    nights = sparse_nights(200)
    by_class = {c: [n for n in nights if expected_class(n) == c] for c in ("daily", "weekly")}
    nights = (
        [n for n in nights if n.day == 1][-5:] + by_class["weekly"][-2:] + by_class["daily"][-3:]
    )
    for night in sorted(nights):
        guest.run("nightly", now=int(night.timestamp()))
    assert guest.classes() == Counter({"daily": 2, "weekly": 1, "monthly": 3})
    kept = sorted(Path(p).name for p in guest.backups.glob("*.archive.gz"))
    remote = sorted(
        Path(p).name
        for s in guest.snapshots()
        for p in s["paths"]  # type: ignore[attr-defined]
        if p.endswith(".archive.gz")
    )
    assert remote == kept  # the same archives on both sides


def test_wrong_password_is_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    right = make_guest(tmp_path / "a", tmp_path / "repo")
    right.run("dump", now=T0)
    wrong = make_guest(tmp_path / "b", tmp_path / "repo", password="not-the-password")
    dumped = wrong.run("dump", now=T0 + 60)  # the local dump still counts
    assert dumped.stdout.strip().endswith(".archive.gz") and (wrong.backups / "latest").exists()
    assert "refused the password: resticPassword" in dumped.stderr
    assert "pulumi config set --secret resticPassword" in dumped.stderr
    assert str(right.repo) not in dumped.stderr  # the location is blanked out
    assert len(right.snapshots()) == 1  # nothing changed in the repository
    assert [f["unit"] for f in wrong.failures()] == ["smart-smoker-backup-ship"]
    ship = wrong.run("ship", now=T0 + 120, ok=False)
    assert ship.returncode != 0 and "refused the password" in ship.stderr


def test_unreachable_repository_keeps_the_local_dump_and_is_loud(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    guest = make_guest(tmp_path / "a", blocker / "repo")
    path = guest.run("nightly", now=T0).stdout.strip().splitlines()[-1]
    assert (guest.backups / "latest").resolve() == Path(path)
    assert [f["unit"] for f in guest.failures()] == ["smart-smoker-backup-ship"]
    assert (guest.root / "status" / "backup-failed").exists()
    report = json.loads(guest.run("report", now=T0 + 60).stdout)
    assert "no off-guest backup from this guest yet" in report["problems"]
    # once the repository is back, the next ship catches up with every unshipped dump
    blocker.unlink()
    guest.run("dump", now=T0 + 3600)
    assert len(guest.snapshots()) == 2
    assert not (guest.root / "status" / "backup-failed").exists()


def test_a_failed_dump_never_becomes_latest_nor_is_shipped(guest: Guest) -> None:
    first = guest.run("dump", now=T0).stdout.strip().splitlines()[-1]
    failed = subprocess.run(
        [str(guest.script), "dump"],
        env={**guest.env, "FAIL_DUMP": "1", "SMOKER_BACKUP_NOW": str(T0 + 60)},
        capture_output=True, text=True,
    )  # fmt: skip
    assert failed.returncode != 0 and "mongodump failed" in failed.stderr
    assert (guest.backups / "latest").resolve() == Path(first)
    assert sorted(p.name for p in guest.backups.iterdir() if not p.name.startswith(".")) == sorted(
        [Path(first).name, Path(first).name.replace(".archive.gz", ".json"), "latest"]
    )
    assert len(guest.snapshots()) == 1


def test_clock_jumps_never_cost_the_newest_or_the_live_releases_backup(guest: Guest) -> None:
    guest.env["SMOKER_BACKUP_SHIP"] = "later"  # one ship at the end
    # a dump while the clock was a year ahead, then the clock is corrected
    future = guest.run("dump", "--class", "daily", now=T0 + 365 * 86400).stdout.split()[-1]
    live = guest.run("dump", "--class", "predeploy", now=T0).stdout.split()[-1]
    release = guest.root / "current"
    release.mkdir()
    (release / "manifest.json").write_text(json.dumps({"backup": {"id": Path(live).name}}))
    for day in range(1, 10):  # more predeploy dumps than kept, all "older" than the future one
        guest.run("dump", "--class", "predeploy", now=T0 - day * 86400)
    newest = guest.run("dump", "--class", "daily", now=T0 - 20 * 86400).stdout.split()[-1]
    guest.run("prune", now=T0)
    guest.run("ship", now=T0)
    local = {p.name for p in guest.backups.glob("*.archive.gz")}
    remote = {
        Path(p).name
        for s in guest.snapshots()
        for p in s["paths"]  # type: ignore[attr-defined]
        if p.endswith(".gz")
    }
    for kept in (Path(live).name, Path(newest).name):
        assert kept in local and kept in remote
    validate = guest.run("validate", now=T0, ok=False)  # latest (20 days "old") is not fresh
    assert validate.returncode != 0
    report = json.loads(guest.run("report", now=T0).stdout)
    assert any("dated in the future" in p and Path(future).name in p for p in report["problems"])


def test_a_rebuilt_guest_fetches_the_newest_backup_of_the_guest_before_it(tmp_path: Path) -> None:
    old = make_guest(tmp_path / "old", tmp_path / "repo")
    old.run("nightly", now=T0)
    wanted = old.run("dump", now=T0 + 3600).stdout.split()[-1]
    new = make_guest(tmp_path / "new", tmp_path / "repo")  # a new disk: a new instance
    new.run("dump", "--class", "predeploy", now=T0 + 7200)  # its own (empty) database's dump
    fetched = new.run("fetch", now=T0 + 7300)
    path = Path(fetched.stdout.strip())
    assert path.name == Path(wanted).name and path.read_bytes() == Path(wanted).read_bytes()
    assert "sha256" in fetched.stderr
    first = old.backups / next(p.name for p in old.backups.glob("*daily*.archive.gz"))
    named = new.run("fetch", first.name.removesuffix(".archive.gz"), now=T0 + 7400)
    assert Path(named.stdout.strip()).read_bytes() == first.read_bytes()
    missing = new.run("fetch", "smartsmoker-daily-20200101T000000Z", now=T0 + 7500, ok=False)
    assert missing.returncode != 0 and "no off-guest backup named" in missing.stderr


def test_no_backup_before_this_guest_is_a_clear_error(guest: Guest) -> None:
    guest.run("dump", now=T0)
    result = guest.run("fetch", now=T0 + 60, ok=False)
    assert result.returncode != 0 and "no off-guest backup made before this guest" in result.stderr


def test_the_repository_location_never_reaches_a_command_line(tmp_path: Path) -> None:
    guest = make_guest(tmp_path / "a", tmp_path / "secret-location-repo")
    shim = guest.root / "bin" / "restic"
    real = shutil.which("restic")
    shim.write_text(f'#!/bin/sh\necho "$*" >> {guest.root}/argv.log\nexec {real} "$@"\n')
    shim.chmod(0o755)
    guest.run("nightly", now=T0)
    guest.run("list", now=T0)
    guest.run("validate", now=T0)
    argv = (guest.root / "argv.log").read_text()
    assert "backup" in argv and "check" in argv and "secret-location-repo" not in argv
    assert PASSWORD not in argv


def test_to_delete_over_two_years_keeps_exactly_7_4_12() -> None:
    start = dt.datetime(2025, 1, 1, 2, 0, tzinfo=ZoneInfo(ZONE))
    nights = [start + dt.timedelta(days=n) for n in range(730)]
    backups = [
        Backup(f"n{i}", expected_class(n), int(n.timestamp()), f"n{i}")
        for i, n in enumerate(nights)
    ]
    doomed = {b.name for b in to_delete(backups, KEEP, set())}
    kept = Counter(b.cls for b in backups if b.name not in doomed)
    assert kept == Counter({"daily": 7, "weekly": 4, "monthly": 12})


def test_protected_names_survive_any_order_and_unknown_classes_are_kept() -> None:
    backups = [Backup(f"d{i}", "daily", 1000 - i, f"d{i}") for i in range(10)]
    backups.append(Backup("odd", "hourly", 0, "odd"))
    doomed = {b.name for b in to_delete(backups, {"daily": 2}, {"d9"})}
    assert doomed == {f"d{i}" for i in range(2, 9)}


def test_pick_prefers_the_previous_instance_unless_named() -> None:
    backups = [
        Backup("old", "daily", 100, "aaaa1111", "instance-old"),
        Backup("mine", "predeploy", 200, "bbbb2222", "instance-new"),
    ]
    assert pick(backups, "instance-new", None) == backups[0]
    assert pick(backups, "instance-new", "mine") == backups[1]
    assert pick(backups, "instance-new", "mine.archive.gz") == backups[1]
    assert pick(backups, "instance-new", "bbbb2222") == backups[1]
    assert pick(backups, "instance-new", "bbbb") is None  # too short to be an id
    assert pick(backups, "instance-old", None) == backups[1]
    assert pick([], "x", None) is None
