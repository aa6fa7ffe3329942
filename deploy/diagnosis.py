"""Self-diagnosis: host state left by hand or by a crash, named with the command that fixes it.

`status` reports every finding; `deploy` and `rollback` log them, record them in their ledger
line, and repair what is theirs to repair (a half-staged release is removed, `current` is pointed
at the release they verify, the ledger starts again).
"""

from __future__ import annotations

from dataclasses import dataclass

from deploy import commands
from deploy.lock import Owner
from deploy.release import Site


@dataclass(frozen=True)
class HostState:
    """What `commands.survey` saw."""

    ledger: bool  # the ledger file exists
    current: str | None  # the release `current` points at (None: no link)
    releases: tuple[tuple[str, bool], ...]  # (release id, committed), oldest first
    staging: tuple[str, ...]  # `.staging-*` directories a dead deploy left

    @classmethod
    def parse(cls, stdout: str) -> HostState:
        ledger, current = False, None
        releases: list[tuple[str, bool]] = []
        staging: list[str] = []
        for line in stdout.splitlines():
            kind, _, rest = line.strip().partition(" ")
            if kind == "ledger":
                ledger = True
            elif kind == "current" and rest.strip():
                current = rest.strip().rstrip("/").rsplit("/", 1)[-1]
            elif kind == "release":
                name, _, flag = rest.partition(" ")
                releases.append((name, flag.strip() == "1"))
            elif kind == "staging":
                staging.append(rest.strip())
        return cls(ledger, current, tuple(sorted(releases)), tuple(sorted(staging)))

    @property
    def names(self) -> set[str]:
        return {name for name, _ in self.releases}

    @property
    def live(self) -> str | None:
        """The live release: `current`'s, when that release exists."""
        return self.current if self.current in self.names else None

    @property
    def dangling(self) -> bool:
        """`current` points at a release that is not on the host."""
        return self.current is not None and self.current not in self.names

    @property
    def newest_committed(self) -> str | None:
        committed = [name for name, ok in self.releases if ok]
        return committed[-1] if committed else None


@dataclass(frozen=True)
class Finding:
    problem: str
    fix: str  # the exact command
    on_guest: bool = False  # run `fix` on the guest (as root), not where the CLI runs

    def __str__(self) -> str:
        where = ", on the guest" if self.on_guest else ""
        return f"{self.problem}. Fix{where}: `{self.fix}`"


def mongo_stopped(site: Site, live: str | None) -> Finding:
    return Finding(
        f"MongoDB is not running (Compose project {site.project})",
        commands.start_mongo(site, live),
        on_guest=True,
    )


def proxy_elsewhere(served: str | None, live: str | None, redeploy: str) -> Finding:
    """Behind the proxy: it serves another release than `current` names (a deploy died between
    the switch and the commit), or nothing (it is down: releases run, but nothing reaches
    them)."""
    if served is None:
        return Finding(f"the proxy does not answer, so no request reaches release {live}", redeploy)
    return Finding(
        f"the proxy serves release {served}, but current names {live} (a deploy ended between "
        "its switch and its commit; both were verified)",
        redeploy,
    )


def stale_lock(holder: Owner, now: float, cli: str) -> Finding:
    return Finding(
        f"the deploy lock is stale: {holder.describe(now)}, and its holder is gone",
        f"{cli} lock break",
    )


def findings(
    state: HostState,
    site: Site,
    *,
    cli: str,
    redeploy: str,
    ledger_path: str,
) -> list[Finding]:
    """The problems `state` shows by itself (the lock and MongoDB are asked separately)."""
    found: list[Finding] = []
    if state.dangling:
        target = state.newest_committed
        found.append(
            Finding(
                f"`current` points at release {state.current}, which is not on the host "
                "(removed by hand?): no release is live",
                f"{cli} rollback --to {target}" if target else redeploy,
            )
        )
    for name in state.staging:
        found.append(
            Finding(
                f"a half-staged release {name} was left by a deploy that died "
                "(the next deploy removes it)",
                commands.remove(f"{site.releases}/{name}"),
                on_guest=True,
            )
        )
    if not state.ledger and (state.releases or state.current):
        found.append(
            Finding(
                f"the ledger {ledger_path} is missing (removed by hand?): the record of earlier "
                "attempts is gone; the next attempt starts it again",
                f"install -D -m 0600 /dev/null {ledger_path}",
                on_guest=True,
            )
        )
    return found
