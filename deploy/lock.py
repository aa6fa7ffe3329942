"""The host deploy lock: one deploy, baseline run or manual rollback at a time per guest.

The lock is a directory created atomically with `mkdir` on the host, holding `owner.json`
(who, what, since, until). The holder renews `until` while it works; a lock whose lease ran
out belongs to a dead process: it is reported as stale and can be broken explicitly, never
silently taken over.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from deploy.transport import Transport
from errors import SmokerError
from layout import LOCK_DIR, LOCK_OWNER_FILE

LEASE_SECONDS = 120


class LockHeldError(SmokerError):
    """Someone else holds the lock (the message names them)."""


@dataclass(frozen=True)
class Owner:
    who: str
    what: str
    since: float
    until: float

    def describe(self, now: float) -> str:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since))
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.until))
        state = (
            f"STALE since {until} (lease expired)"
            if self.until < now
            else f"active; stale at {until} unless renewed"
        )
        return f"{self.what} by {self.who} since {since} ({state})"


class HostLock:
    def __init__(
        self,
        transport: Transport,
        lock_dir: str = LOCK_DIR,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
        breaker: str = "python -m deploy --stack <stack> --guest <guest> lock break",
    ) -> None:
        self.transport, self.lock_dir = transport, lock_dir
        self.breaker = breaker  # the command that breaks a stale lock (in messages)
        self.lease, self.clock = lease_seconds, clock
        self._owner_file = f"{lock_dir}/{LOCK_OWNER_FILE}"

    def status(self) -> Owner | None:
        result = self.transport.run(f"cat {shlex.quote(self._owner_file)} 2>/dev/null")
        if not result.ok or not result.stdout.strip():
            return None
        return Owner(**json.loads(result.stdout))

    def acquire(self, who: str, what: str) -> Owner:
        """Take the lock or fail at once naming the holder."""
        now = self.clock()
        owner = Owner(who, what, now, now + self.lease)
        d = shlex.quote(self.lock_dir)
        result = self.transport.run(
            f"mkdir -p $(dirname {d}) && mkdir -m 0700 {d} 2>/dev/null && "
            f"cat > {shlex.quote(self._owner_file)}",
            stdin=json.dumps(asdict(owner)).encode(),
        )
        if not result.ok:
            holder = self.status()
            described = holder.describe(now) if holder else "an unknown holder (no owner file)"
            hint = (
                f" Break it with `{self.breaker}` if that process is gone."
                if (holder is None or holder.until < now)
                else ""
            )
            raise LockHeldError(f"the host is locked: {described}.{hint}")
        return owner

    def renew(self, owner: Owner, seconds: float | None = None) -> Owner:
        """Extend the lease (by `seconds` instead of the lease, before a long step)."""
        renewed = Owner(owner.who, owner.what, owner.since, self.clock() + (seconds or self.lease))
        self.transport.run(
            f"cat > {shlex.quote(self._owner_file)}.new && "
            f"mv {shlex.quote(self._owner_file)}.new {shlex.quote(self._owner_file)}",
            stdin=json.dumps(asdict(renewed)).encode(),
        )
        return renewed

    def release(self) -> None:
        self.transport.run(f"rm -rf {shlex.quote(self.lock_dir)}")

    def break_stale(self, force: bool = False) -> Owner | None:
        """Remove a lock whose lease expired (or any lock with `force`); returns who held it."""
        holder = self.status()
        if holder is not None and holder.until >= self.clock() and not force:
            raise LockHeldError(f"the lock is active, not stale: {holder.describe(self.clock())}")
        self.release()
        return holder
