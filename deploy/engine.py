"""The safe-deploy engine: lock -> backup -> stage -> pull -> up -> verify -> commit | roll back.

Pure Python over a `Transport` (SSH or local); it knows nothing about Pulumi. This module is the
orchestration; what runs on the guest is in `deploy.commands`, how a release is verified in
`deploy.checks`, what the ledger records in `deploy.record`, and what a host left by hand or by a
crash looks like in `deploy.diagnosis`. Every attempt that took the lock ends in one ledger
record and in one of these states:

* deployed: the new release is live, verified, and `current` points at it;
* failed before anything changed (lock, backup, stage, pull): the host is exactly as it was;
* rolled back: the previous release (its exact digests, compose and env) is live and verified,
  and `DeployError` says so. Behind the proxy (cloud guests, `deploy.cutover`) the previous
  release never stopped: the new one was verified next to it and removed, or the proxy was
  switched back to it;
* rollback failed: `RollbackError` names the exact recovery commands;
* connection lost: nothing more can be done from here; the lock goes stale, and `lock break`
  records the attempt as abandoned; the next deploy ends on a verified release.

Waits have deadlines and back off; nothing sleeps a fixed time.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from deploy import commands, steps
from deploy.checks import (
    Auth,
    Checker,
    Count,
    Get,
    Problem,
    fetch,
    mongo_auth,
    mongo_documents,
    permanent,
    tail,
)
from deploy.cutover import Cutover, routes_of
from deploy.diagnosis import (
    Finding,
    HostState,
    findings,
    mongo_stopped,
    proxy_elsewhere,
    stale_lock,
)
from deploy.ledger import Ledger, LedgerError
from deploy.lock import HostLock, Owner
from deploy.record import (
    BACKED_UP,
    DEPLOYED,
    FAILED,
    INTERRUPTED,
    RESTORED,
    ROLLBACK_FAILED,
    ROLLED_BACK,
    UNCHANGED,
    Attempt,
    DeployError,
    Outcome,
    RollbackError,
    RollbackRecord,
    StepError,
    abandoned,
    failure,
    iso,
    lost,
)
from deploy.release import Checks, ReleaseSpec, Site, content_hash, pin, service_images
from deploy.transport import CommandResult, SshTarget, Transport, TransportError, connect
from layout import BACKUP_TOOL_NAME, LEDGER_PATH

__all__ = [
    "DeployError",
    "Engine",
    "Outcome",
    "Policy",
    "RollbackError",
    "deployer",
    "fetch",
    "mongo_auth",
    "over_ssh",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Policy:
    backup: bool = True  # pre-deploy MongoDB backup (cloud guests)
    restore_on_rollback: bool = False
    keep_releases: int = 5
    verify_timeout: float = 300.0
    lock_lease: float = 120.0
    pull_timeout: float = 900.0
    failing_window: float = 20.0  # up and answering errors this long: failed (not the deadline)
    drain_seconds: float = 20.0  # behind the proxy: the old release's in-flight requests


def deployer(via: str) -> str:
    """Who is deploying, for the lock and the ledger: the CI actor, else user@machine."""
    actor = os.environ.get("GITHUB_ACTOR")
    who = f"{actor} (GitHub Actions)" if actor else f"{getpass.getuser()}@{socket.gethostname()}"
    return f"{who} via {via}"


class Engine:
    def __init__(
        self,
        transport: Transport,
        site: Site,
        who: str,
        policy: Policy = Policy(),
        *,
        auth: Auth = mongo_auth,
        count: Count = mongo_documents,
        get: Get = fetch,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = lambda _: None,
        ledger_path: str = LEDGER_PATH,
        cli: str = "python -m deploy --stack <stack> --guest <guest>",
        redeploy: str = "pulumi up --stack <stack>",
    ) -> None:
        self.cli = cli  # how an operator runs the CLI for this guest (in recovery messages)
        self.redeploy = redeploy  # how an operator deploys this guest again
        self.t, self.site, self.who, self.policy = transport, site, who, policy
        self.clock, self.monotonic, self.sleep, self.log = clock, monotonic, sleep, log
        self.checker = Checker(transport, site, auth, get)
        self.count = count
        self.lock = HostLock(
            transport, lease_seconds=policy.lock_lease, clock=clock, breaker=f"{cli} lock break"
        )
        self.ledger = Ledger(transport, ledger_path)
        self.cutover = Cutover(
            transport,
            site,
            drain_seconds=policy.drain_seconds,
            lease=policy.lock_lease,
            monotonic=monotonic,
            sleep=sleep,
            renew=self._renew,
            log=log,
        )
        self._owner: Owner | None = None
        self._lease_until = 0.0  # when the lock goes stale unless renewed (for messages)
        self._step = "start"  # the step running now (where a lost connection or a bug hit)
        self._timings: dict[str, float] = {}  # the running attempt's

    # -- public operations --------------------------------------------------------------------

    def deploy(self, spec: ReleaseSpec) -> Outcome:
        """Deploy `spec`: a new verified live release, or an exception after a rollback."""
        return self._attempt("deploy", lambda attempt: self._deploy(spec, attempt))

    def rollback(self, to: str | None = None) -> Outcome:
        """Make an earlier release (default: the one before the live one) live again, verified."""
        return self._attempt("rollback", lambda attempt: self._rollback(to, attempt))

    def backup(self) -> dict[str, str]:
        """A verified on-demand MongoDB backup (under the lock, recorded in the ledger)."""

        def body(attempt: Attempt) -> dict[str, str]:
            attempt.previous = attempt.release = self._survey(attempt).live
            attempt.backup = self._timed("backup", lambda: steps.backup(self.t, "predeploy"))
            attempt.outcome = BACKED_UP
            return attempt.backup

        return self._attempt("backup", body)

    def restore(self, snapshot: str | None = None, force: bool = False) -> dict[str, Any]:
        """The rebuild drill: fetch an off-guest backup (the newest made before this guest was
        built, or `snapshot`), restore it under the live release and verify that release.
        Refused when the database already holds documents, unless `force` (then a verified
        backup of them is made first)."""

        def body(attempt: Attempt) -> dict[str, Any]:
            live = self._survey(attempt).live
            attempt.previous = attempt.release = live
            if live is None:
                raise DeployError(
                    f"no live release on this guest: run `{self.redeploy}` first (it builds the "
                    "guest and deploys the release); then restore its data with this command"
                )
            if not self._mongo_running():
                raise DeployError(str(mongo_stopped(self.site, live)))
            held = self._documents(live)
            if held and not force:
                raise DeployError(
                    f"refused: the application database already holds {held} documents, and a "
                    f"restore replaces them. Run `{self.cli} backup` first if you want them, then "
                    f"`{self.cli} restore --force` (it also makes a verified backup first)"
                )
            if held:
                attempt.backup = self._timed("backup", lambda: steps.backup(self.t, "predeploy"))
            fetched = self._timed("fetch", lambda: steps.fetch(self.t, snapshot))
            self.log(f"restoring {fetched['id']} (sha256 {fetched['sha256']})")
            try:
                self._timed("restore", lambda: steps.restore_backup(self.t, fetched))
            except StepError as exc:
                attempt.fail("restore", str(exc))
                name = fetched["id"].removesuffix(".archive.gz")
                again = f"`{self.cli} restore --snapshot {name} --force`"
                safety = (
                    f"; the data it replaced is in {attempt.backup['path']}"
                    if attempt.backup
                    else ""
                )
                raise DeployError(
                    f"{exc}. The database may hold part of it: run {again} again{safety}"
                ) from None
            self._timed("verify", lambda: self._verify(live))
            attempt.outcome = RESTORED
            return {
                "release": live,
                "restored": fetched["id"],
                "sha256": fetched["sha256"],
                "documents": self._documents(live),
                "replaced": held,
                "safetyBackup": (attempt.backup or {}).get("path"),
                "seconds": dict(attempt.timings),
            }

        return self._attempt("restore", body)

    def _documents(self, release_id: str) -> int:
        """Documents in the application database (as the release's application user sees it)."""
        checks = Checks.from_dict(self.manifest(release_id).get("checks") or {})
        if not checks.mongo_user_env:
            raise DeployError(f"release {release_id} names no MongoDB user to count documents with")
        env_path, url = self.checker.db_url(release_id, checks)
        if not url:
            raise DeployError(f"{env_path} has no DB_URL")
        try:
            return self.count(self.t, checks.mongo_port, url)
        except TransportError:
            raise
        except Exception as exc:  # a driver error: its kind only, never the URL
            raise DeployError(f"could not count the documents ({type(exc).__name__})") from None

    def backups(self) -> dict[str, Any] | None:
        """The backup tool's report (newest local and off-guest copies, their ages, problems)."""
        result = self._run(commands.backup_report())
        if not result.ok or not result.stdout.strip():
            return None
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def status(self) -> dict[str, Any]:
        """The live release, its digests, the lock, whether it verifies right now, and every
        problem of the host with the command that fixes it."""
        state = self.survey()
        live = state.live
        manifest = self.manifest(live) if live else {}
        problem = self._problem(live) if live else Problem("no live release")
        holder = self.lock.status()
        found = self.findings(state, holder)
        backups = self.backups() if self.policy.backup else None
        return {
            "release": live,
            "proxy": self.cutover.served() if self.site.proxied else None,
            "digests": manifest.get("digests", {}),
            "deployedAt": manifest.get("created"),
            "backup": manifest.get("backup"),
            "healthy": problem is None,
            "problem": str(problem) if problem else None,
            "lock": holder.describe(self.clock()) if holder else None,
            "backups": backups,
            "findings": [str(f) for f in found]
            + [
                f"backups: {p} (on the guest: `{BACKUP_TOOL_NAME} list`, "
                f"`journalctl -u '{BACKUP_TOOL_NAME}*'`)"
                for p in (backups or {}).get("problems", [])
            ],
        }

    def history(self) -> list[dict[str, Any]]:
        return self.ledger.records()

    def break_lock(self, force: bool = False) -> Owner | None:
        """Break a stale lock (any lock with `force`) and record its holder's attempt, which
        ended without a record of its own, as abandoned."""
        holder = self.lock.break_stale(force=force)
        if holder is not None:
            self.ledger.append(abandoned(holder, self.who, self.clock()).as_json())
        return holder

    # -- host state ---------------------------------------------------------------------------

    def live(self) -> str | None:
        out = self._run(commands.read_current(self.site)).stdout.strip()
        return out.rsplit("/", 1)[-1] if out else None

    def releases(self) -> list[tuple[str, bool]]:
        """(release id, committed) oldest first."""
        result = self._run(commands.list_releases(self.site))
        rows = [line.split() for line in result.stdout.splitlines() if line.strip()]
        return sorted((name, flag == "1") for name, flag in rows)

    def manifest(self, release_id: str) -> dict[str, Any]:
        result = self._run(commands.cat_manifest(self.site, release_id))
        if not result.ok:
            path = commands.manifest_path(self.site, release_id)
            raise DeployError(f"release {release_id} has no manifest at {path}")
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def survey(self) -> HostState:
        return HostState.parse(self._run(commands.survey(self.site, self.ledger.path)).stdout)

    def findings(self, state: HostState, holder: Owner | None) -> list[Finding]:
        """Every problem of the host: its state, a stale lock, a stopped MongoDB."""
        found = findings(
            state, self.site, cli=self.cli, redeploy=self.redeploy, ledger_path=self.ledger.path
        )
        if holder is not None and holder.until < self.clock():
            found.append(stale_lock(holder, self.clock(), self.cli))
        if self.policy.backup and not self._mongo_running():
            found.append(mongo_stopped(self.site, state.live))
        if self.site.proxied and state.live:
            served = self.cutover.served()
            if served != state.live:
                found.append(proxy_elsewhere(served, state.live, self.redeploy))
        return found

    # -- the paths ----------------------------------------------------------------------------

    def _attempt(self, action: str, body: Callable[[Attempt], T]) -> T:
        """Run `body` under the lock; whatever ends it, one ledger record (or, when the
        connection is gone, a message saying how the next `lock break` records it)."""
        started = self.monotonic()
        attempt = Attempt(action, self.who, iso(self.clock()))
        self._step, self._timings = "start", attempt.timings
        try:
            with self._locked(action):
                try:
                    result = body(attempt)
                except BaseException as exc:
                    error = self._settle(attempt, exc)
                    self._record(attempt, started, error)
                    if error is exc:
                        raise
                    raise error from None
                self._record(attempt, started, None)
                return result
        except TransportError as exc:
            raise DeployError(lost(attempt, str(exc), self.cli, self._lease_until)) from exc

    def _settle(self, attempt: Attempt, exc: BaseException) -> BaseException:
        """Complete the record of a failed attempt; the exception for the caller."""
        if isinstance(exc, StepError):
            attempt.step = exc.step
            attempt.error = attempt.error or str(exc)
            attempt.outcome = attempt.outcome or FAILED
            return failure(attempt, self.site, self.cli, self.ledger.path)
        if attempt.outcome is None:
            if isinstance(exc, TransportError):
                attempt.fail(self._step, f"the connection was lost: {exc}")
            elif isinstance(exc, DeployError):
                attempt.fail(self._step, str(exc))
            elif isinstance(exc, Exception):  # a bug or a surprise: still one ledger record
                attempt.fail("internal", repr(exc))
            else:  # Ctrl-C and the like
                attempt.fail(self._step, type(exc).__name__, INTERRUPTED)
        return exc

    def _record(self, attempt: Attempt, started: float, error: BaseException | None) -> None:
        attempt.finished = iso(self.clock())
        attempt.timings["total"] = round(self.monotonic() - started, 3)
        try:
            self.ledger.append(attempt.as_json())
        except LedgerError as exc:
            what = f"{attempt.action} of {attempt.release or 'a new release'}: {attempt.outcome}"
            first = f"{error} " if isinstance(error, DeployError) else f"{what}. "
            raise LedgerError(f"{first}It was not recorded: {exc}") from error

    def _deploy(self, spec: ReleaseSpec, attempt: Attempt) -> Outcome:
        live = self._survey(attempt).live
        attempt.previous = live
        backup = self._timed("backup", lambda: self._backup_if_running("predeploy", live))
        attempt.backup = backup
        staging = self._timed("stage", lambda: steps.stage(self.t, self.site, spec))
        try:
            pinned = self._timed(
                "pull",
                lambda: steps.pull(self.t, spec.compose, self.policy.pull_timeout, self._renew),
            )
        except StepError:
            self._run(commands.remove(staging))
            raise
        compose = pin(spec.compose, pinned)
        digest = content_hash(compose, spec.env_files, spec.checks, spec.routes)
        attempt.digests = {svc: pinned[ref] for svc, ref in service_images(spec.compose).items()}
        if live and self.manifest(live).get("content") == digest:
            # Already the live release: `up` it anyway (a deploy that died after its `up` left
            # other containers running), then verify; compose recreates nothing that matches.
            self._run(commands.remove(staging))
            attempt.release = live
            self._go_live(live, live, backup, attempt)
            attempt.outcome = UNCHANGED
            return self._outcome(live, UNCHANGED, attempt)
        release_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock())) + "-" + digest
        attempt.release = release_id
        manifest = {
            "id": release_id,
            "project": self.site.project,
            "content": digest,
            "digests": attempt.digests,
            "checks": spec.checks.as_dict(),
            **({"routes": [dict(r) for r in spec.routes]} if spec.routes else {}),
            "backup": backup,
            "created": iso(self.clock()),
            "who": self.who,
        }
        self._timed(
            "stage", lambda: steps.seal(self.t, self.site, staging, release_id, compose, manifest)
        )
        self._go_live(release_id, live, backup, attempt)
        return self._outcome(release_id, DEPLOYED, attempt)

    def _rollback(self, to: str | None, attempt: Attempt) -> Outcome:
        state = self._survey(attempt)
        live = state.live
        attempt.previous = live
        target = to or self._before(live, state)
        if target not in state.names:
            raise StepError("select", f"no release {target!r} on the host (see `status`)")
        attempt.release = target
        attempt.digests = self.manifest(target).get("digests", {})
        attempt.backup = self._timed("backup", lambda: self._backup_if_running("predeploy", live))
        self._go_live(target, live, attempt.backup, attempt)
        return self._outcome(target, ROLLED_BACK, attempt)

    def _go_live(
        self,
        release_id: str,
        previous: str | None,
        backup: dict[str, str] | None,
        attempt: Attempt,
    ) -> None:
        """Up, verify, commit; on failure put `previous` back (or report why it could not)."""
        if self.site.proxied:
            self._cut_over(release_id, previous, attempt)
            return
        try:
            self._timed("up", lambda: self._up(release_id))
            self._timed("verify", lambda: self._verify(release_id))
            self._timed("commit", lambda: self._commit(release_id))
        except StepError as exc:
            attempt.step, attempt.error = exc.step, str(exc)
            self._timed("rollback", lambda: self._restore(previous, backup, attempt))
            raise
        attempt.outcome = DEPLOYED
        self._timed("prune", self._prune)

    def _cut_over(self, release_id: str, previous: str | None, attempt: Attempt) -> None:
        """Behind the proxy: start the release next to the live one and verify it; switch the
        proxy and commit; then drain and stop the old release. Until the switch the live
        release keeps every request; a failure before it removes the new release's containers,
        a failure after it switches back."""
        manifest = self.manifest(release_id)
        routes = routes_of(manifest)
        if not routes:
            raise StepError(
                "select",
                f"release {release_id} is from before the proxy (its compose file publishes the "
                "proxy's ports): deploy its commit again instead",
            )
        try:
            self._timed(
                "up", lambda: self.cutover.start(release_id, self.policy.verify_timeout + 60)
            )
            self._timed("verify", lambda: self._verify(release_id, outside=False))
        except StepError as exc:
            attempt.step, attempt.error = exc.step, str(exc)
            self._timed("rollback", lambda: self._keep(previous, release_id, attempt))
            raise
        try:
            self._timed("switch", lambda: self.cutover.switch(release_id, routes))
            if manifest.get("checks", {}).get("outside"):  # the Tailscale URLs reach it now
                self._timed("verify", lambda: self._verify(release_id, only_outside=True))
            self._timed("commit", lambda: self._commit(release_id))
        except StepError as exc:
            attempt.step, attempt.error = exc.step, str(exc)
            self._timed("rollback", lambda: self._switch_back(previous, release_id, attempt))
            raise
        attempt.outcome = DEPLOYED
        stopped = self._timed("drain", lambda: self.cutover.retire(release_id, routes))
        if stopped:
            self.log(f"drained and stopped {', '.join(stopped)}")
        self._timed("prune", self._prune)

    def _keep(self, previous: str | None, failed: str, attempt: Attempt) -> None:
        """The new release never took traffic: remove it; the previous one still serves."""
        if failed != previous:
            self.cutover.remove(failed)
        self._settle_previous(previous, attempt)

    def _switch_back(self, previous: str | None, failed: str, attempt: Attempt) -> None:
        """The proxy back to `previous` (to no release on a first deploy), then the failed
        release removed. A release from before the proxy cannot take traffic back: the new,
        verified one keeps it."""
        routes = routes_of(self.manifest(previous)) if previous else []
        if previous is not None and not routes:
            attempt.outcome = ROLLBACK_FAILED
            attempt.rollback = RollbackRecord(
                previous,
                "failed",
                f"{previous} is from before the proxy and cannot take traffic back; {failed} "
                "(verified) keeps serving",
            )
            return
        try:
            self.cutover.switch(previous, routes or routes_of(self.manifest(failed)))
        except StepError as exc:
            attempt.outcome = ROLLBACK_FAILED
            attempt.rollback = RollbackRecord(previous, "failed", str(exc))
            return
        if failed != previous:
            self.cutover.remove(failed)
        self._settle_previous(previous, attempt)

    def _settle_previous(self, previous: str | None, attempt: Attempt) -> None:
        """Record whether the release that serves now (the previous one) verifies."""
        if previous is None:
            attempt.outcome, attempt.rollback = FAILED, RollbackRecord(None, "none")
            return
        problem = self._problem(previous)
        if problem is not None:
            attempt.outcome = ROLLBACK_FAILED
            attempt.rollback = RollbackRecord(previous, "failed", str(problem))
            return
        attempt.outcome, attempt.rollback = ROLLED_BACK, RollbackRecord(previous, "verified")

    def _restore(
        self, previous: str | None, backup: dict[str, str] | None, attempt: Attempt
    ) -> None:
        if previous is None:
            attempt.outcome, attempt.rollback = FAILED, RollbackRecord(None, "none")
            return
        try:
            self._up(previous)
            if backup and self.policy.restore_on_rollback:
                steps.restore_backup(self.t, backup)
            self._verify(previous)
        except StepError as exc:
            attempt.outcome = ROLLBACK_FAILED
            attempt.rollback = RollbackRecord(previous, "failed", str(exc))
            return
        attempt.outcome, attempt.rollback = ROLLED_BACK, RollbackRecord(previous, "verified")

    # -- the steps ----------------------------------------------------------------------------

    @contextmanager
    def _locked(self, what: str) -> Iterator[None]:
        self._owner = self.lock.acquire(self.who, what)
        self._lease_until = self._owner.until
        try:
            yield
        finally:
            self._owner = None
            self.lock.release()

    def _renew(self, seconds: float | None = None) -> None:
        if self._owner is not None:
            # the lease is written before it counts: a process dying between the two leaves
            # a lock that goes stale at the time every message of this attempt states
            self._owner = self.lock.renew(self._owner, seconds)
            self._lease_until = self._owner.until

    def _survey(self, attempt: Attempt) -> HostState:
        """The host as this attempt finds it: its problems logged and recorded, the
        half-staged releases of dead deploys removed."""
        state = self.survey()
        for finding in findings(
            state, self.site, cli=self.cli, redeploy=self.redeploy, ledger_path=self.ledger.path
        ):
            self.log(f"found: {finding}")
            attempt.findings.append(str(finding))
        if state.staging:
            removed = self._run(commands.drop_staging(self.site)).stdout.split()
            for name in removed:
                self.log(f"removed the half-staged {name} left by an earlier deploy")
        return state

    def _mongo_running(self) -> bool:
        return bool(self._run(commands.mongo_running(self.site)).stdout.strip())

    def _backup_if_running(self, kind: str, live: str | None) -> dict[str, str] | None:
        if not self.policy.backup:
            return None
        if not self._mongo_running():
            raise StepError(
                "backup", f"no pre-deploy backup possible: {mongo_stopped(self.site, live)}"
            )
        return steps.backup(self.t, kind)

    def _up(self, release_id: str) -> None:
        timeout = self.policy.verify_timeout + 60  # `up` waits for dependencies to be healthy
        self._renew(timeout + self.policy.lock_lease)
        result = self._run(commands.compose_up(self.site, release_id), timeout=timeout)
        if not result.ok:
            raise StepError("up", f"`docker compose up` failed: {tail(result.stderr)}")

    def _verify(self, release_id: str, outside: bool = True, only_outside: bool = False) -> None:
        """Poll the checks with backoff until all pass, one fails for good, the release keeps
        answering errors for `failing_window` (it is up and failing), or the deadline."""
        deadline = self.monotonic() + self.policy.verify_timeout
        delay = 0.25
        failing_since: float | None = None
        while True:
            if only_outside:
                manifest = self.manifest(release_id)
                problem = self.checker.outside(Checks.from_dict(manifest.get("checks") or {}))
            else:
                problem = self._problem(release_id, outside)
            if problem is None:
                return
            now = self.monotonic()
            failing_since = (failing_since or now) if problem.failing else None
            if failing_since is not None and now - failing_since >= self.policy.failing_window:
                raise StepError(
                    "verify",
                    f"release {release_id} was not verified: it is up but kept failing for "
                    f"{self.policy.failing_window:g} s: {problem}",
                )
            if problem.permanent or now + delay > deadline:
                raise StepError("verify", f"release {release_id} was not verified: {problem}")
            self._renew()
            self.sleep(delay)
            delay = min(delay * 1.5, 3.0)

    def _problem(self, release_id: str, outside: bool = True) -> Problem | None:
        """The first failing check, or None."""
        try:
            manifest = self.manifest(release_id)
        except DeployError as exc:
            return permanent(str(exc))
        return self.checker.problem(release_id, manifest, outside)

    def _commit(self, release_id: str) -> None:
        done = self._run(commands.commit(self.site, release_id))
        if not done.ok:
            raise StepError(
                "commit", f"could not point current at {release_id}: {tail(done.stderr)}"
            )

    def _prune(self) -> None:
        """Keep the live release and the newest committed ones (and their images)."""
        releases = self.releases()
        live = self.live()
        committed = [name for name, ok in releases if ok]
        keep = set(committed[-self.policy.keep_releases :]) | {live}
        drop = [name for name, _ in releases if name not in keep]
        if not drop:
            return
        kept_images = {
            ref for name in keep if name for ref in self.manifest(name)["digests"].values()
        }
        dropped_images = {
            ref for name in drop for ref in self.manifest(name)["digests"].values()
        } - kept_images
        self._run(commands.remove(*(self.site.release_dir(name) for name in drop)))
        if dropped_images:
            self._run(commands.remove_images(sorted(dropped_images)))
        if self.policy.backup:
            self._run(commands.backup_prune())
        self.log(f"pruned releases {', '.join(drop)}")

    # -- helpers ------------------------------------------------------------------------------

    def _before(self, live: str | None, state: HostState) -> str:
        committed = [name for name, ok in state.releases if ok and name != live]
        older = [name for name in committed if live is None or name < live]
        if not older:
            raise StepError("select", "no earlier committed release to roll back to")
        return older[-1]

    def _timed(self, name: str, step: Callable[[], T]) -> T:
        self._step = name
        start = self.monotonic()
        try:
            return step()
        finally:
            timings = self._timings
            timings[name] = round(timings.get(name, 0.0) + self.monotonic() - start, 3)

    def _outcome(self, release_id: str, outcome: str, attempt: Attempt) -> Outcome:
        return Outcome(
            release=release_id,
            outcome=outcome,
            digests=dict(attempt.digests),
            backup=attempt.backup,
            deployed_at=iso(self.clock()),
            timings=attempt.timings,
        )

    def _run(self, command: str, stdin: bytes = b"", timeout: float = 120) -> CommandResult:
        return self.t.run(command, stdin=stdin, timeout=timeout)


@contextmanager
def over_ssh(
    target: SshTarget, site: Site, who: str, policy: Policy, **options: Any
) -> Iterator[Engine]:
    """The engine on one SSH connection to the guest (host key pinned)."""
    with connect(target) as transport:
        yield Engine(transport, site, who, policy, **options)
