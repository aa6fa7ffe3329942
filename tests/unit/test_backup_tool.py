"""The rendered backup tool, run for real against a fake `docker` (the only thing faked)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from config import OffsiteSettings, Retention
from rendering.backup import backup_tool
from tests.configs import evolve, parse, stack_raw
from tests.unit.backup_kit import ZONE, expected_class, install_tool, sparse_nights


@pytest.fixture()
def tool(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """The tool with local dumps only (off-guest copies: test_backup_offsite.py)."""
    cfg = parse(stack_raw("dev"), "dev")
    backups = evolve(cfg.app.backups, offsite=OffsiteSettings(enabled=False))
    return install_tool(tmp_path, evolve(cfg, app=evolve(cfg.app, backups=backups)))


def run(tool: tuple[Path, dict[str, str], Path], *args: str, now: int) -> str:
    script, env, _ = tool
    result = subprocess.run(
        [str(script), *args], env={**env, "SMOKER_BACKUP_NOW": str(now)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_year_and_more_of_nightly_runs_keep_exactly_7_4_12(
    tool: tuple[Path, dict[str, str], Path],
) -> None:
    nights = sparse_nights()
    for night in nights:
        run(tool, "nightly", now=int(night.timestamp()))
    _, _, backups = tool
    kept = sorted(p.name for p in backups.glob("*.archive.gz"))
    expected: list[str] = []
    for cls, keep in (("daily", 7), ("weekly", 4), ("monthly", 12)):
        of_class = [n for n in nights if expected_class(n) == cls][-keep:]
        expected += [
            f"smartsmoker-{cls}-{n.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}.archive.gz" for n in of_class
        ]
    assert kept == sorted(expected)
    assert len(list(backups.glob("*.json"))) == len(kept)  # every survivor has its manifest


def test_manifest_records_class_size_checksum_and_version(
    tool: tuple[Path, dict[str, str], Path],
) -> None:
    t = int(dt.datetime(2026, 3, 1, 2, 0, tzinfo=ZoneInfo(ZONE)).timestamp())
    path = Path(run(tool, "dump", now=t).strip())
    manifest = json.loads(path.with_name(path.name.replace(".archive.gz", ".json")).read_text())
    assert manifest["class"] == "monthly" and manifest["mongodb_version"] == "7.0.14"
    assert manifest["size"] == path.stat().st_size and len(manifest["sha256"]) == 64
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_the_newest_backup_is_never_pruned(tool: tuple[Path, dict[str, str], Path]) -> None:
    script, _env, backups = tool
    text = script.read_text().replace("[weekly]=4", "[weekly]=0")
    script.write_text(text)
    sunday = int(dt.datetime(2026, 3, 8, 2, 0, tzinfo=ZoneInfo(ZONE)).timestamp())
    run(tool, "nightly", now=sunday)
    assert [p.name.split("-")[1] for p in backups.glob("*.archive.gz")] == ["weekly"]


def test_validate_checks_age_and_checksum(tool: tuple[Path, dict[str, str], Path]) -> None:
    script, env, backups = tool
    t = 1_780_000_000
    run(tool, "dump", now=t)
    assert run(tool, "validate", now=t + 3600).startswith("valid ")
    old = subprocess.run(
        [str(script), "validate"], env={**env, "SMOKER_BACKUP_NOW": str(t + 49 * 3600)},
        capture_output=True, text=True,
    )  # fmt: skip
    assert old.returncode != 0 and "old (limit 48 h)" in old.stderr
    archive = next(backups.glob("*.archive.gz"))
    archive.write_bytes(archive.read_bytes() + b"x")
    corrupt = subprocess.run(
        [str(script), "validate"], env={**env, "SMOKER_BACKUP_NOW": str(t + 3600)},
        capture_output=True, text=True,
    )  # fmt: skip
    assert corrupt.returncode != 0 and "checksum" in corrupt.stderr


def test_a_failed_dump_leaves_nothing_behind(tool: tuple[Path, dict[str, str], Path]) -> None:
    script, env, backups = tool
    result = subprocess.run(
        [str(script), "dump"], env={**env, "FAIL_DUMP": "1", "SMOKER_BACKUP_NOW": "1780000000"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0 and "mongodump failed" in result.stderr
    assert list(backups.iterdir()) == []


def test_retention_comes_from_config() -> None:
    cfg = parse(stack_raw("prod"), "prod")
    custom = evolve(cfg.app.backups, retention=Retention(daily=3, weekly=2, monthly=1))
    cfg = evolve(cfg, app=evolve(cfg.app, backups=custom))
    assert "[daily]=3 [weekly]=2 [monthly]=1" in backup_tool(cfg, "p")
