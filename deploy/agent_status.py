"""What the device's update agent last did, read over the transport for `python -m deploy status`:
the desired release it accepted, the one it applied, the live one, and its last report
(`agent-report.json`), with a finding for each thing an operator should act on."""

from __future__ import annotations

import calendar
import json
import shlex
import time
from typing import Any

import layout
from deploy.transport import Transport

REPORT_MAX_AGE_HOURS = 24.0  # a device that has not reported for longer is off, or its timer is
NO_REPORT = "no report yet"
READ_TIMEOUT = 30.0
JOURNAL = f"journalctl -u {layout.AGENT_SERVICE}"


def installed(transport: Transport, state_dir: str = layout.AGENT_STATE_DIR) -> bool:
    """The agent is installed on this guest (its unit, or its state directory, exists)."""
    result = transport.run(
        f"if [ -e /etc/systemd/system/{layout.AGENT_SERVICE} ] || [ -d {shlex.quote(state_dir)} ]; "
        "then echo installed; fi",
        timeout=READ_TIMEOUT,
    )
    return result.ok and result.stdout.strip() == "installed"


def _read_json(transport: Transport, path: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the file's JSON object, None), (None, None) when absent, (None, why) when unreadable."""
    result = transport.run(f"cat {shlex.quote(path)} 2>/dev/null || true", timeout=READ_TIMEOUT)
    if not result.stdout.strip():
        return None, None
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return None, f"{path} is not JSON"
    if not isinstance(data, dict):
        return None, f"{path} is not a JSON object"
    return data, None


def _epoch(stamp: Any) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _named(entry: Any) -> str | None:
    """`sequence 12 (3f2a1b4c5d6e)` of a {sequence, contentHash} (or {sequence, content_hash})."""
    if not isinstance(entry, dict) or entry.get("sequence") is None:
        return None
    content = entry.get("contentHash") or entry.get("content_hash") or ""
    return f"sequence {entry['sequence']} ({str(content)[:12]})"


def agent_status(
    transport: Transport,
    live: str | None,
    now: float,
    *,
    max_age_hours: float = REPORT_MAX_AGE_HOURS,
    state_dir: str = layout.AGENT_STATE_DIR,
    cli: str = "python -m deploy --stack <stack> --guest <guest>",
) -> tuple[dict[str, Any], list[str]]:
    """The agent's section of `status` and its findings. `live` is the engine's live release;
    `cli` how an operator runs this CLI for the device (in the fixes)."""
    report, report_problem = _read_json(transport, f"{state_dir}/{layout.AGENT_REPORT_FILE}")
    state, state_problem = _read_json(transport, f"{state_dir}/{layout.AGENT_STATE_FILE}")
    state = state or {}
    applied = state.get("applied") if isinstance(state.get("applied"), dict) else None
    desired = _named(state.get("seen")) or _named((report or {}).get("desired"))
    section: dict[str, Any] = {
        "desired": desired or "none accepted yet",
        "applied": (
            f"{_named(applied)} as release {applied.get('release')}" if applied else "none yet"
        ),
        "live": live or "no release",
        "lastReport": NO_REPORT,
    }
    findings: list[str] = []
    for problem in (report_problem, state_problem):
        if problem:
            findings.append(f"agent: {problem} (on the device: `{JOURNAL}`)")
    if applied and live and applied.get("release") != live:
        findings.append(
            f"agent: the live release {live} is not the one the agent applied "
            f"({applied.get('release')}): the next agent run deploys the desired release again"
        )
    if report is None:
        return section, findings
    outcome = str(report.get("outcome"))
    when = _epoch(report.get("time"))
    age = None if when is None else max(0.0, now - when)
    section["lastReport"] = {
        "time": report.get("time"),
        "age": _age(age) if age is not None else "unknown",
        "outcome": outcome,
        "message": report.get("message"),
        "desired": _named(report.get("desired")),
        "liveRelease": report.get("liveRelease"),
        "error": report.get("error"),
    }
    error = f": {report.get('error')}" if report.get("error") else ""
    if age is None:
        findings.append(f"agent: the last report has no readable time ({report.get('time')!r})")
    elif age > max_age_hours * 3600:
        findings.append(
            f"agent: the last report is {_age(age)} old (more than {max_age_hours:g} h): the "
            "device has been off or its timer is not running (on the device: "
            f"`systemctl status {layout.AGENT_TIMER}`, `{JOURNAL}`)"
        )
    what = _named(report.get("desired")) or "the desired release"
    if outcome == "rolled-back":
        findings.append(
            f"agent: {what} failed and was rolled back; release {report.get('liveRelease')} is "
            f"live again{error}. It is not retried: fix the release and publish a newer one "
            "(`pulumi up`)"
        )
    elif outcome == "rollback-failed":
        findings.append(
            f"agent: {what} failed and so did the rollback{error}. It is not retried: make a "
            f"verified release live with `{cli} rollback` (`{cli} history` shows them, "
            f"`{JOURNAL}` the run), then publish a newer release"
        )
    elif outcome == "failed":
        findings.append(
            f"agent: the last run failed before anything changed{error}; the next run retries"
        )
    elif outcome == "waiting-for-secrets":
        findings.append(
            f"agent: {what} waits for its env files{error}; they are delivered when the device "
            "answers SSH during `pulumi up` (the push)"
        )
    elif outcome == "refused":
        findings.append(
            f"agent: the device refused the desired release{error}; it stays on "
            f"{report.get('liveRelease') or 'no release'}"
        )
    return section, findings
