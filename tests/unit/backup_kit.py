"""The rendered backup tool installed under a temporary directory, for the unit tests: its host
paths moved there, a fake `docker` first on PATH (the only thing faked)."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from zoneinfo import ZoneInfo

from config import StackConfig
from rendering.backup import RETENTION_SOURCE, backup_tool
from tests.configs import evolve

ZONE = "America/New_York"
FAKE_DOCKER = r"""#!/bin/sh
# docker stand-in for the backup tool's unit test: one mongo container, a tiny gzip archive.
case "$1" in
  ps) echo fakemongo ;;
  exec)
    shift; [ "$1" = -i ] && shift; shift  # -i, container id
    case "$1" in
      sh) cat > /dev/null ;;
      mongodump)
        [ -n "${FAIL_DUMP:-}" ] && { printf 'half an archive'; exit 1; }
        printf 'dump %s' "$SMOKER_BACKUP_NOW" | gzip ;;
      mongorestore) gzip -t ;;
      mongod) echo "db version v7.0.14" ;;
      rm) ;;
    esac ;;
esac
"""


def install_tool(tmp_path: Path, cfg: StackConfig) -> tuple[Path, dict[str, str], Path]:
    """The rendered tool with its host paths moved under `tmp_path`, a fake docker first on PATH."""
    backups = tmp_path / "backups"
    cfg = evolve(cfg, baseline=evolve(cfg.baseline, app_dir=str(tmp_path)))
    moved = {
        "TOOLS_CONFIG": tmp_path / "tools.yaml",
        "STATUS_DIR": tmp_path / "status",
        "FAILURES_LOG": tmp_path / "log" / "backup-failures.jsonl",
        "INSTANCE_FILE": tmp_path / "status" / "instance-id",
        "OFFSITE_LAST": tmp_path / "status" / "offsite-last.json",
        "RESTIC_ENV": tmp_path / "restic.env",
        "RETENTION": RETENTION_SOURCE,
    }
    text = backup_tool(cfg, "smart-smoker-dev")
    for key, path in moved.items():
        text = re.sub(rf"^{key}=.*$", f"{key}='{path}'", text, count=1, flags=re.M)
    script = tmp_path / "smart-smoker-backup"
    script.write_text(text)
    script.chmod(0o755)
    (tmp_path / "tools.yaml").write_text("password: x\n")
    (tmp_path / "status").mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "TZ": ZONE,
        "SMOKER_BACKUP_SHIP": "inline",
    }
    return script, env, backups


def expected_class(day: dt.datetime) -> str:
    if day.day == 1:
        return "monthly"
    return "weekly" if day.isoweekday() == 7 else "daily"


def sparse_nights(days: int = 730) -> list[dt.datetime]:
    """The nights of `days` that retention can tell apart: every 1st of a month, the last 8
    Sundays and the last 10 days (each class gets more dumps than it keeps)."""
    start = dt.datetime(2025, 1, 1, 2, 0, tzinfo=ZoneInfo(ZONE))
    nights = [start + dt.timedelta(days=n) for n in range(days)]
    sundays = [n for n in nights if expected_class(n) == "weekly"][-8:]
    return [n for n in nights if n.day == 1 or n in sundays or n >= nights[-10]]
