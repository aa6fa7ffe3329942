"""An attempt (deploy, rollback, backup) as the ledger records it, and what it tells the caller.

Every attempt that took the host lock ends as exactly one `Attempt` line in the ledger, whatever
ended it; the exceptions here are what the caller sees (one line: what failed, what is live, what
to run next).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from deploy import commands
from deploy.lock import Owner
from deploy.release import Site
from errors import SmokerError


class DeployError(SmokerError):
    """The attempt failed; the message says what failed and which release is live."""


class RollbackError(DeployError):
    """The rollback failed as well; the message gives the exact recovery commands."""


class StepError(Exception):
    """A step of an attempt failed (internal: it becomes a `DeployError` and a ledger line)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


# Attempt.outcome
DEPLOYED = "deployed"  # the release is live and verified
UNCHANGED = "unchanged"  # it already was: `up` and verified again
ROLLED_BACK = "rolled-back"  # it failed; the previous release is live and verified again
ROLLBACK_FAILED = "rollback-failed"
FAILED = "failed"  # failed before anything changed, or with nothing to go back to
INTERRUPTED = "interrupted"  # stopped from here (Ctrl-C) before it ended
BACKED_UP = "backed-up"  # an on-demand backup
RESTORED = "restored"  # an off-guest backup restored under the live release, which verified
ABANDONED = "abandoned"  # recorded by `lock break`: its holder died without a record


@dataclass
class RollbackRecord:
    to: str | None
    outcome: str  # verified | failed | none (nothing to go back to)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Attempt:
    """One ledger line."""

    action: str  # deploy | rollback | backup (or the dead holder's, for an abandoned one)
    who: str
    started: str
    outcome: str | None = None
    step: str | None = None  # where it failed
    error: str | None = None
    previous: str | None = None  # live when it started
    release: str | None = None
    digests: dict[str, str] = field(default_factory=dict)
    backup: dict[str, str] | None = None
    rollback: RollbackRecord | None = None
    findings: list[str] = field(default_factory=list)  # host problems found when it started
    finished: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def fail(self, step: str, error: str, outcome: str = FAILED) -> None:
        self.outcome, self.step, self.error = outcome, step, error

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rollback"] = self.rollback.as_json() if self.rollback else None
        return data


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def abandoned(holder: Owner, by: str, now: float) -> Attempt:
    """The record of an attempt whose holder died without one (written by `lock break`)."""
    return Attempt(
        holder.what.split()[0] if holder.what else "?",
        holder.who,
        iso(holder.since),
        outcome=ABANDONED,
        step="lock",
        error=f"{holder.what} ended without a record; its lock was broken by {by}",
        finished=iso(now),
    )


@dataclass
class Outcome:
    """What a successful attempt returns."""

    release: str
    outcome: str  # deployed | unchanged | rolled-back (CLI rollback)
    digests: dict[str, str]
    backup: dict[str, str] | None
    deployed_at: str
    timings: dict[str, float] = field(default_factory=dict)


def failure(attempt: Attempt, site: Site, cli: str, ledger_path: str) -> DeployError:
    """The exception for a failed attempt: what failed, what is live, where to look."""
    backup = attempt.backup or {}
    where = f"Ledger: {ledger_path}."
    if backup:
        where += f" Pre-deploy backup: {backup['path']} (sha256 {backup['sha256']})."
    previous = attempt.previous
    release = attempt.release or "a new release"
    failed = f"{attempt.action} of {release} failed at {attempt.step}: {attempt.error}."
    if attempt.outcome == ROLLED_BACK:
        return DeployError(
            f"{failed} Rolled back: release {previous} is live and verified. {where}"
        )
    if attempt.outcome == ROLLBACK_FAILED:
        error = attempt.rollback.error if attempt.rollback else None
        compose = site.compose(previous or "")
        by_hand = f"`{cli} rollback --to {previous}`, or on the guest `{compose} up -d`"
        if backup:
            by_hand += f" and, to restore data, `{commands.backup_restore(backup['path'])}`"
        return RollbackError(
            f"{failed} The rollback to {previous} failed too: {error}. "
            f"Recover by hand: {by_hand}. {where}"
        )
    if attempt.rollback and attempt.rollback.outcome == "none":
        return DeployError(
            f"{failed} There is no earlier release to roll back to: the failed release is "
            f"left running for inspection. {where}"
        )
    return DeployError(
        f"{failed} Nothing was changed on the host"
        + (f"; release {previous} is still live." if previous else ".")
        + f" {where}"
    )


def lost(attempt: Attempt, reason: str, cli: str, stale_at: float) -> str:
    """The message for an attempt whose connection dropped (it could not record itself)."""
    return (
        f"{attempt.action} of {attempt.release or 'a new release'}: the connection to the "
        f"host was lost ({reason}). The host may be between releases; `current` still points at "
        f"{attempt.previous or 'no release'}. The deploy lock goes stale at {iso(stale_at)}; "
        f"then `{cli} lock break` (it records this attempt in the ledger) and "
        "deploy again: the next deploy ends on a verified release."
    )
