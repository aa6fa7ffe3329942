"""The backup tool's Python half: retention, the report and the listing of local and off-guest
copies. Installed verbatim on the guest (`layout.BACKUP_RETENTION`) and run by the tool with
python3; standard library only, no imports from the program.

Clocks jump (NTP corrections, a dead RTC battery), so retention orders by the archives' own
times but never deletes a protected name: the newest complete dump (the `latest` link) and the
backup named by the live release's manifest. An archive dated after "now" is reported, never
trusted as fresh.

    backup_retention.py local DIR KEEP PROTECTED...      names of local archives to delete
    backup_retention.py remote KEEP PROTECTED... <JSON   ids of snapshots to forget (restic JSON)
    backup_retention.py pick INSTANCE [NAME] <JSON       the snapshot a restore fetches
    backup_retention.py report DIR NOW MAX_AGE_HOURS LAST_SHIPPED_FILE   JSON report
    backup_retention.py list DIR NOW <JSON               local and off-guest side by side
KEEP is JSON: {"daily": 7, ...}.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARCHIVE_SUFFIX = ".archive.gz"
FUTURE_SLACK = 300  # seconds: a clock this far behind an archive's time is not a jump
TAG = "smart-smoker"


@dataclass(frozen=True)
class Backup:
    name: str  # the archive's file name
    cls: str  # daily, weekly, monthly, predeploy
    epoch: int  # when it was dumped, by the clock of that moment
    ref: str  # the local file name, or the snapshot id
    instance: str = ""  # the guest disk that made it (a rebuilt guest is another instance)
    paths: tuple[str, ...] = ()  # in a snapshot: the archive's and its manifest's paths


def to_delete(backups: Iterable[Backup], keep: dict[str, int], protected: set[str]) -> list[Backup]:
    """Keep the newest `keep[class]` of each class (by dump time) and every protected name;
    an unknown class is never deleted."""
    seen: Counter[str] = Counter()
    doomed = []
    for backup in sorted(backups, key=lambda b: (b.epoch, b.name), reverse=True):
        if backup.cls not in keep:
            continue
        seen[backup.cls] += 1
        if seen[backup.cls] > keep[backup.cls] and backup.name not in protected:
            doomed.append(backup)
    return doomed


def local_backups(directory: Path) -> list[Backup]:
    """The archives in `directory` with their manifests (an archive without one is skipped:
    the tool writes the manifest first, so it is not one of its complete dumps)."""
    found = []
    for archive in directory.glob(f"smartsmoker-*{ARCHIVE_SUFFIX}"):
        manifest = archive.with_name(archive.name.removesuffix(ARCHIVE_SUFFIX) + ".json")
        try:
            data = json.loads(manifest.read_text())
            found.append(
                Backup(
                    archive.name,
                    str(data["class"]),
                    int(data["epoch"]),
                    archive.name,
                    str(data.get("instance", "")),
                )
            )
        except (OSError, ValueError, KeyError):
            continue
    return found


def snapshot_backups(snapshots: list[dict[str, Any]]) -> list[Backup]:
    """The project's snapshots as backups (their tags carry class, epoch and instance)."""
    found = []
    for snap in snapshots:
        tags = dict(t.split("=", 1) for t in snap.get("tags") or [] if "=" in t)
        names = [Path(p).name for p in snap.get("paths") or [] if p.endswith(ARCHIVE_SUFFIX)]
        if TAG not in (snap.get("tags") or []) or not names or "epoch" not in tags:
            continue
        paths = sorted(snap["paths"], key=lambda p: not p.endswith(ARCHIVE_SUFFIX))
        found.append(
            Backup(
                names[0],
                tags.get("class", "?"),
                int(tags["epoch"]),
                snap["id"],
                tags.get("instance", ""),
                tuple(paths),
            )
        )
    return found


def pick(backups: list[Backup], instance: str, name: str | None) -> Backup | None:
    """The snapshot to restore: the one of that archive name (with or without `.archive.gz`) or
    snapshot id (8 characters or more); by default the
    newest made by another instance (this fresh guest's own dumps hold its empty database)."""
    if name:
        stem = name.removesuffix(ARCHIVE_SUFFIX)
        return next(
            (
                b
                for b in backups
                if b.name.removesuffix(ARCHIVE_SUFFIX) == stem
                or (len(name) >= 8 and b.ref.startswith(name))  # a (short) snapshot id
            ),
            None,
        )
    older = [b for b in backups if b.instance != instance]
    return max(older, key=lambda b: (b.epoch, b.name), default=None)


def age_hours(epoch: int, now: int) -> float:
    return round((now - epoch) / 3600, 1)


def report(
    directory: Path, now: int, max_age_hours: int, offsite: bool, last_shipped: Path, failed: Path
) -> dict[str, Any]:
    """What `status` shows: the newest local and off-guest copies, their ages, and what is wrong."""
    local = local_backups(directory)
    latest_link = directory / "latest"
    latest = latest_link.resolve().name if latest_link.is_symlink() else None
    newest = next((b for b in local if b.name == latest), None) or max(
        local, key=lambda b: b.epoch, default=None
    )
    problems = []
    future = sorted(b.name for b in local if b.epoch > now + FUTURE_SLACK)
    if future:
        problems.append(f"dated in the future (the clock jumped?): {', '.join(future)}")
    out: dict[str, Any] = {"local": None, "offsite": None, "problems": problems}
    if failed.exists():
        problems.append(f"a backup job failed: {failed.read_text().strip()}")
    if newest is None:
        problems.append("no local backup")
    else:
        out["local"] = {"name": newest.name, "ageHours": age_hours(newest.epoch, now)}
        if newest.epoch > now + FUTURE_SLACK:
            pass  # reported above; not fresh
        elif now - newest.epoch > max_age_hours * 3600:
            problems.append(f"the newest local backup is {age_hours(newest.epoch, now)} h old")
    try:
        shipped = json.loads(last_shipped.read_text()) if offsite else None
    except (OSError, ValueError):
        shipped = None
    if offsite and shipped is None:
        problems.append("no off-guest backup from this guest yet")
    if shipped is not None:
        epoch = int(shipped["epoch"])
        out["offsite"] = {
            "name": shipped["name"],
            "snapshot": shipped["snapshot"],
            "ageHours": age_hours(epoch, now),
        }
        if epoch > now + FUTURE_SLACK:
            problems.append(f"the newest off-guest backup {shipped['name']} is dated in the future")
        elif now - epoch > max_age_hours * 3600:
            problems.append(f"the newest off-guest backup is {age_hours(epoch, now)} h old")
    return out


def listing(local: list[Backup], remote: list[Backup], now: int) -> str:
    """One line per archive: name, class, age, here (local) and off-guest (snapshot id)."""
    by_name: dict[str, dict[str, Backup]] = {}
    for where, backups in (("local", local), ("offsite", remote)):
        for b in backups:
            by_name.setdefault(b.name, {})[where] = b
    rows = ["archive\tclass\tage\tlocal\toff-guest"]
    for name, copies in sorted(
        by_name.items(), key=lambda kv: max(b.epoch for b in kv[1].values()), reverse=True
    ):
        any_copy = next(iter(copies.values()))
        age = age_hours(any_copy.epoch, now)
        shown = f"{age} h" if any_copy.epoch <= now + FUTURE_SLACK else f"FUTURE ({-age} h ahead)"
        rows.append(
            f"{name}\t{any_copy.cls}\t{shown}\t{'yes' if 'local' in copies else '-'}"
            f"\t{copies['offsite'].ref[:8] if 'offsite' in copies else '-'}"
        )
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "local":
        keep, protected = json.loads(args[1]), set(args[2:])
        for b in to_delete(local_backups(Path(args[0])), keep, protected):
            print(b.name)
    elif command == "remote":
        keep, protected = json.loads(args[0]), set(args[1:])
        for b in to_delete(snapshot_backups(json.load(sys.stdin) or []), keep, protected):
            print(b.ref)
    elif command == "pick":
        name = args[1] if len(args) > 1 else None
        chosen = pick(snapshot_backups(json.load(sys.stdin) or []), args[0], name)
        if chosen is None:
            return 1
        print(chosen.ref, chosen.name, *chosen.paths)
    elif command == "report":
        data = report(
            Path(args[0]), int(args[1]), int(args[2]), args[3] == "1", Path(args[4]), Path(args[5])
        )
        print(json.dumps(data, sort_keys=True))
    elif command == "list":
        remote = snapshot_backups(json.load(sys.stdin) or [])
        print(listing(local_backups(Path(args[0])), remote, int(args[1])))
    else:
        print(f"unknown command {command}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
