"""The device's update agent: one convergence run toward the desired release the stack publishes.

The physical smoker is powered off most of the time, so it updates by pull: at boot and on a
timer it fetches the signed desired-release document (`deploy.desired`), verifies it, and
applies it locally with the deploy engine (`deploy.engine.Engine` over `LocalTransport`): lock,
stage, pull by digest, up, verify, commit or roll back, ledger. One run:

    busy                 another run holds the agent lock (nothing done; exit 75)
    unreachable          the document could not be fetched: staying on the live release (69)
    refused              the document is bad, tampered, for another device, or a replay (1)
    waiting-for-secrets  an env file it names is not delivered yet (75: the next run retries)
    up-to-date           already applied and the live release verifies: no deploy (0)
    deployed             the engine made it live and verified (0)
    rolled-back          it failed; the previous release is live and verified (1; not retried
                         until a newer document is published)
    rollback-failed      it failed and so did the rollback (1; not retried)
    failed               it failed before anything changed (1; retried by the next run)

Every run but a busy one writes `agent-report.json` in the state directory (atomically); the
state directory also holds `agent-state.json` (the newest accepted document: the replay guard;
the applied one; the last attempt) and `agent.lock`.

The source is the publisher's document (`--source`, what the timer pulls). `pulumi up` may also
push a copy over SSH (`--pushed-copy`, written by `DesiredRelease`): the run reads both and takes
the valid one with the higher sequence, so a push reaches the device even when the device cannot
fetch the source at that moment. The source decides the outcome when neither is usable.

    python -m deploy.agent --source URL_OR_PATH [--pushed-copy PATH] --public-key FILE \\
        --state-dir DIR --project P --app-dir D [--env-dir DIR] [--stack S --guest G]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import layout
from deploy.desired import (
    MAX_DOCUMENT_BYTES,
    DesiredRelease,
    DesiredReleaseError,
    SecretsNotDeliveredError,
    Seen,
    parse,
    public_key_from_pem,
    to_spec,
)
from deploy.engine import Engine, Policy, RollbackError, deployer
from deploy.lock import LockHeldError
from deploy.record import DEPLOYED, ROLLED_BACK, UNCHANGED, iso
from deploy.release import ReleaseSpec, Site
from deploy.transport import LocalTransport
from errors import SmokerError

# Report.outcome
UP_TO_DATE = "up-to-date"
DEPLOYED_NOW = DEPLOYED  # "deployed"
ROLLED_BACK_NOW = ROLLED_BACK  # "rolled-back"
ROLLBACK_FAILED = "rollback-failed"
FAILED = "failed"
REFUSED = "refused"
UNREACHABLE = "unreachable"
WAITING_FOR_SECRETS = "waiting-for-secrets"
BUSY = "busy"

EXIT_CODES = {
    UP_TO_DATE: 0,
    DEPLOYED_NOW: 0,
    REFUSED: 1,
    ROLLED_BACK_NOW: 1,
    ROLLBACK_FAILED: 1,
    FAILED: 1,
    WAITING_FOR_SECRETS: layout.LOCKED_EXIT,  # 75, EX_TEMPFAIL: the next run tries again
    BUSY: layout.LOCKED_EXIT,  # 75
    UNREACHABLE: layout.AGENT_UNREACHABLE_EXIT,  # 69, EX_UNAVAILABLE
}
NOT_RETRIED = (ROLLED_BACK_NOW, ROLLBACK_FAILED)  # until a newer document is published

LOCK_FILE = "agent.lock"
STATE_FILE = layout.AGENT_STATE_FILE
REPORT_FILE = layout.AGENT_REPORT_FILE
FETCH_TIMEOUT = 30.0

EngineFactory = Callable[[], Engine]
Fetch = Callable[[str, float], bytes]


class UnreachableError(SmokerError):
    """The desired-release document could not be fetched."""


class BusyError(SmokerError):
    """Another agent run holds the agent lock."""


class StateError(SmokerError):
    """`agent-state.json` cannot be read: the run does nothing rather than forget the replay
    guard."""


@dataclass(frozen=True)
class Report:
    """What one run did; `agent-report.json`."""

    time: str
    outcome: str
    message: str
    sequence: int | None = None  # the desired document's, when one was read
    content_hash: str | None = None
    live_release: str | None = None  # after the run
    error: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def as_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "outcome": self.outcome,
            "message": self.message,
            "desired": {"sequence": self.sequence, "contentHash": self.content_hash},
            "liveRelease": self.live_release,
            "error": self.error,
        }


@dataclass(frozen=True)
class Attempted:
    """A document the agent deployed (or tried to): its outcome and the engine's release."""

    sequence: int
    content_hash: str
    outcome: str
    release: str | None = None

    def is_for(self, desired: DesiredRelease) -> bool:
        return (self.sequence, self.content_hash) == (desired.sequence, desired.content_hash)


@dataclass(frozen=True)
class AgentState:
    """`agent-state.json`: what the agent remembers between runs."""

    seen: Seen | None = None  # the newest accepted document (the replay guard)
    applied: Attempted | None = None  # the newest document that went live verified
    last: Attempted | None = None  # the last document handed to the engine

    @classmethod
    def load(cls, state_dir: Path) -> AgentState:
        path = state_dir / STATE_FILE
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text())
            seen, applied, last = raw.get("seen"), raw.get("applied"), raw.get("last")
            return cls(
                Seen(**seen) if seen else None,
                Attempted(**applied) if applied else None,
                Attempted(**last) if last else None,
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise StateError(
                f"the agent state {path} is unreadable ({type(exc).__name__}): move it aside to "
                "start over (the replay guard then starts from the next document)"
            ) from None

    def save(self, state_dir: Path) -> None:
        write_atomically(state_dir / STATE_FILE, json.dumps(asdict(self), indent=2) + "\n")


# -- one run ----------------------------------------------------------------------------------


def converge(
    source: str,
    public_key: Ed25519PublicKey,
    state_dir: str | os.PathLike[str],
    engine_factory: EngineFactory,
    *,
    env_dir: str | os.PathLike[str] = layout.AGENT_ENV_DIR,
    stack: str | None = None,
    guest: str | None = None,
    fetch: Fetch | None = None,
    timeout: float = FETCH_TIMEOUT,
    clock: Callable[[], float] = time.time,
    pushed_copy: str | None = None,
) -> Report:
    """One convergence run (see the module docstring); never two at once per `state_dir`."""
    directory = Path(state_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        with agent_lock(directory):
            try:
                run = _Run(directory, engine_factory, clock)
            except StateError as exc:
                report = Report(iso(clock()), FAILED, "nothing done", error=str(exc))
            else:
                report = run.converge(
                    (source, pushed_copy) if pushed_copy else (source,),
                    public_key,
                    Path(env_dir),
                    stack,
                    guest,
                    fetch or fetch_document,
                    timeout,
                )
            write_atomically(directory / REPORT_FILE, json.dumps(report.as_json(), indent=2) + "\n")
            return report
    except BusyError as exc:  # the holder writes the report: not overwritten from here
        return Report(iso(clock()), BUSY, str(exc))


class _Run:
    def __init__(self, state_dir: Path, engine_factory: EngineFactory, clock: Callable[[], float]):
        self.state_dir, self.clock = state_dir, clock
        self.engine = engine_factory()
        self.state = AgentState.load(state_dir)
        self.desired: DesiredRelease | None = None
        self.note = ""  # added to the report's message

    def converge(
        self,
        sources: tuple[str, ...],
        public_key: Ed25519PublicKey,
        env_dir: Path,
        stack: str | None,
        guest: str | None,
        fetch: Fetch,
        timeout: float,
    ) -> Report:
        """`sources`: the publisher's document, then the pushed copy when there is one."""
        found: list[DesiredRelease] = []
        source_error: tuple[str, str, str] | None = None  # (outcome, message, error)
        for index, source in enumerate(sources):
            try:
                data = fetch(source, timeout)
                found.append(
                    parse(data, public_key, seen=self.state.seen, stack=stack, guest=guest)
                )
            except UnreachableError as exc:
                failure = (UNREACHABLE, "the desired release is unreachable", str(exc))
            except DesiredReleaseError as exc:
                failure = (REFUSED, "refused the desired release", str(exc))
            else:
                continue
            if index == 0:
                source_error = failure
        if not found:
            assert source_error is not None
            outcome, message, error = source_error
            return self.report(outcome, f"{message}: staying on {self.live_name()}", error)
        desired = max(found, key=lambda d: d.sequence)
        if source_error is not None:  # the pushed copy stood in for the publisher's document
            self.note = f"the pushed copy; the source: {source_error[2]}"
        self.desired = desired
        if self.state.seen != desired.seen:
            self.state = replace(self.state, seen=desired.seen)
            self.state.save(self.state_dir)
        name = f"sequence {desired.sequence} ({desired.content_hash[:12]})"
        applied, last = self.state.applied, self.state.last
        if applied is not None and applied.is_for(desired) and self.live_verifies(applied):
            return self.report(UP_TO_DATE, f"{name} is live and verifies")
        if last is not None and last.is_for(desired) and last.outcome in NOT_RETRIED:
            return self.report(
                last.outcome,
                f"{name} ended {last.outcome} before and is not retried: publish a newer "
                f"sequence; staying on {self.live_name()}",
            )
        try:
            spec = to_spec(desired, env_dir)
        except SecretsNotDeliveredError as exc:
            return self.report(
                WAITING_FOR_SECRETS,
                f"{name} waits for its env files: staying on {self.live_name()}",
                str(exc),
            )
        except DesiredReleaseError as exc:
            return self.report(REFUSED, f"refused {name}: staying on {self.live_name()}", str(exc))
        return self.deploy(desired, spec, name)

    def deploy(self, desired: DesiredRelease, spec: ReleaseSpec, name: str) -> Report:
        try:
            outcome = self.engine.deploy(spec)
        except LockHeldError as exc:  # the host deploy lock: an operator's rollback, say
            return self.report(BUSY, f"{name} not applied: the host deploy lock is held", str(exc))
        except SmokerError as exc:
            result = self.failed_outcome(exc)
            self.remember(Attempted(desired.sequence, desired.content_hash, result))
            return self.report(result, f"{name} was not deployed ({result})", str(exc))
        done = Attempted(desired.sequence, desired.content_hash, DEPLOYED_NOW, outcome.release)
        self.remember(done, applied=True)
        if outcome.outcome == UNCHANGED:
            return self.report(UP_TO_DATE, f"{name} is live: `up` and verified again")
        return self.report(DEPLOYED_NOW, f"{name} deployed as release {outcome.release}")

    def failed_outcome(self, exc: SmokerError) -> str:
        """rolled-back, rollback-failed or failed, as the engine's ledger recorded it."""
        if isinstance(exc, RollbackError):
            return ROLLBACK_FAILED
        with contextlib.suppress(SmokerError, OSError, ValueError):
            records = self.engine.history()
            if records and records[-1].get("outcome") == ROLLED_BACK:
                return ROLLED_BACK_NOW
        return FAILED

    def remember(self, attempted: Attempted, applied: bool = False) -> None:
        self.state = replace(
            self.state, last=attempted, applied=attempted if applied else self.state.applied
        )
        self.state.save(self.state_dir)

    def live_verifies(self, applied: Attempted) -> bool:
        """The applied document's release is live and its checks pass right now."""
        try:
            status = self.engine.status()
        except SmokerError:
            return False
        return bool(status.get("release") == applied.release and status.get("healthy"))

    def live(self) -> str | None:
        try:
            return self.engine.live()
        except SmokerError:
            return None

    def live_name(self) -> str:
        live = self.live()
        return f"release {live}" if live else "no release"

    def report(self, outcome: str, message: str, error: str | None = None) -> Report:
        desired = self.desired
        return Report(
            iso(self.clock()),
            outcome,
            f"{message} ({self.note})" if self.note else message,
            desired.sequence if desired else None,
            desired.content_hash if desired else None,
            self.live(),
            error,
        )


# -- the pieces -------------------------------------------------------------------------------


@contextlib.contextmanager
def agent_lock(state_dir: Path) -> Iterator[None]:
    """A non-blocking `flock` on `agent.lock` (released when the process dies); `BusyError`
    naming the holder's pid when another run holds it."""
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise BusyError(f"another apply is running (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def fetch_document(source: str, timeout: float) -> bytes:
    """The document from an `https://` URL (with `timeout`) or a file path; `UnreachableError`
    when it cannot be had. Other URL schemes are refused."""
    if "://" in source:
        if not source.startswith("https://"):
            raise DesiredReleaseError("the source must be an https:// URL or a file path")
        try:
            with urllib.request.urlopen(source, timeout=timeout) as response:
                data: bytes = response.read(MAX_DOCUMENT_BYTES + 1)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise UnreachableError(f"fetching {source} failed: {reason}") from None
        return data
    try:
        with open(source, "rb") as f:
            return f.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise UnreachableError(f"reading {source} failed: {exc.strerror}") from None


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a file whole or not at all (a sibling temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# -- the CLI ----------------------------------------------------------------------------------


def _log(line: str) -> None:
    print(line, file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    """The agent's command line (rendering/agent.py renders the unit that runs it)."""
    parser = argparse.ArgumentParser(
        prog="python -m deploy.agent", description="Converge this device to its desired release."
    )
    parser.add_argument("--source", required=True, help="https:// URL or file path")
    parser.add_argument("--pushed-copy", help="the copy `pulumi up` pushes (a file path)")
    parser.add_argument("--public-key", required=True, help="the release signing key's PEM")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--project", required=True, help="the Compose project")
    parser.add_argument("--app-dir", required=True)
    parser.add_argument("--env-dir", default=layout.AGENT_ENV_DIR)
    parser.add_argument("--stack", help="refuse documents for another stack")
    parser.add_argument("--guest", help="refuse documents for another guest")
    parser.add_argument("--timeout", type=float, default=FETCH_TIMEOUT, help="fetch timeout (s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        public_key = public_key_from_pem(Path(args.public_key).read_bytes())
    except (OSError, DesiredReleaseError) as exc:
        print(f"error: --public-key {args.public_key}: {exc}", file=sys.stderr)
        return 2

    def engine() -> Engine:
        site = Site(args.project, args.app_dir)
        return Engine(LocalTransport(), site, deployer("agent"), Policy(backup=False), log=_log)

    report = converge(
        args.source,
        public_key,
        args.state_dir,
        engine,
        env_dir=args.env_dir,
        stack=args.stack,
        guest=args.guest,
        timeout=args.timeout,
        pushed_copy=args.pushed_copy,
    )
    print(f"{report.outcome}: {report.message}" + (f": {report.error}" if report.error else ""))
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
