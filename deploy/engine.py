"""The safe-deploy engine: lock -> backup -> stage -> pull -> up -> verify -> commit | roll back.

Pure Python over a `Transport` (SSH or local); it knows nothing about Pulumi. Every attempt ends
in one ledger record and in one of these states:

* deployed: the new release is live, verified, and `current` points at it;
* failed before anything changed (lock, backup, stage, pull): the host is exactly as it was;
* rolled back: the previous release (its exact digests, compose and env) is live and verified,
  and `DeployError` says so;
* rollback failed: `RollbackError` names the exact recovery commands;
* connection lost: nothing more can be done from here; the lock goes stale, and the next deploy
  (after `lock break`) ends on a verified release.

Waits have deadlines and back off; nothing sleeps a fixed time.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import shlex
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from deploy.ledger import LEDGER_PATH, Ledger
from deploy.lock import HostLock, Owner
from deploy.release import (
    Checks,
    HttpCheck,
    ReleaseSpec,
    Site,
    content_hash,
    pin,
    repository,
    service_images,
)
from deploy.transport import SshTarget, Transport, TransportError, connect
from layout import BACKUP_TOOL, COMMITTED_MARK, STAGING_PREFIX, running_service

q = shlex.quote


class DeployError(RuntimeError):
    """The deploy failed; the message says what failed and which release is live."""


class RollbackError(DeployError):
    """The rollback failed as well; the message gives the exact recovery commands."""


class _StepError(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


@dataclass(frozen=True)
class Policy:
    backup: bool = True  # pre-deploy MongoDB backup (cloud guests)
    restore_on_rollback: bool = False
    keep_releases: int = 5
    verify_timeout: float = 300.0
    lock_lease: float = 120.0
    pull_timeout: float = 900.0


@dataclass
class Outcome:
    release: str
    outcome: str  # deployed | unchanged | rolled-back (CLI rollback)
    digests: dict[str, str]
    backup: dict[str, str] | None
    deployed_at: str
    timings: dict[str, float] = field(default_factory=dict)


def mongo_auth(transport: Transport, port: int, db_url: str) -> None:
    """Authenticate as the application user of `db_url` through the transport (raises)."""
    from deploy.mongo_users import connect  # pymongo only where it is needed

    url = urlsplit(db_url)
    database = url.path.lstrip("/") or "admin"
    with transport.forward(port) as local:
        client = connect(local, unquote(url.username or ""), unquote(url.password or ""))
        try:
            client[database].list_collection_names()
        finally:
            client.close()


def fetch(url: str, timeout: float = 5) -> tuple[int, str]:
    """GET `url` from here: (status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, ValueError):
        return 0, ""


def deployer(via: str) -> str:
    """Who is deploying, for the lock and the ledger: the CI actor, else user@machine."""
    actor = os.environ.get("GITHUB_ACTOR")
    who = f"{actor} (GitHub Actions)" if actor else f"{getpass.getuser()}@{socket.gethostname()}"
    return f"{who} via {via}"


def _now_iso(clock: Callable[[], float]) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock()))


class Engine:
    def __init__(
        self,
        transport: Transport,
        site: Site,
        who: str,
        policy: Policy = Policy(),
        *,
        auth: Callable[[Transport, int, str], None] = mongo_auth,
        get: Callable[[str], tuple[int, str]] = fetch,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = lambda _: None,
        ledger_path: str = LEDGER_PATH,
        cli: str = "python -m deploy --stack <stack> --guest <guest>",
    ) -> None:
        self.cli = cli  # how an operator runs the CLI for this guest (in recovery messages)
        self.t, self.site, self.who, self.policy = transport, site, who, policy
        self.get = get
        self.auth, self.clock, self.monotonic, self.sleep, self.log = (
            auth,
            clock,
            monotonic,
            sleep,
            log,
        )
        self.lock = HostLock(transport, lease_seconds=policy.lock_lease, clock=clock)
        self.ledger = Ledger(transport, ledger_path)
        self._owner: Owner | None = None

    # -- public operations --------------------------------------------------------------------

    def deploy(self, spec: ReleaseSpec) -> Outcome:
        """Deploy `spec`: a new verified live release, or an exception after a rollback."""
        return self._attempt("deploy", lambda record: self._deploy(spec, record))

    def rollback(self, to: str | None = None) -> Outcome:
        """Make an earlier release (default: the one before the live one) live again, verified."""
        return self._attempt("rollback", lambda record: self._rollback(to, record))

    def backup(self) -> dict[str, str]:
        """A verified on-demand MongoDB backup (under the lock)."""
        with self._locked("backup"):
            return self._backup("predeploy")

    def status(self) -> dict[str, Any]:
        """The live release, its digests, the lock, and whether it verifies right now."""
        live = self.live()
        manifest = self.manifest(live) if live else {}
        problem = self._problem(live) if live else "no live release"
        holder = self.lock.status()
        return {
            "release": live,
            "digests": manifest.get("digests", {}),
            "deployedAt": manifest.get("created"),
            "backup": manifest.get("backup"),
            "healthy": problem is None,
            "problem": problem,
            "lock": holder.describe(self.clock()) if holder else None,
        }

    def history(self) -> list[dict[str, Any]]:
        return self.ledger.records()

    # -- host state ---------------------------------------------------------------------------

    def live(self) -> str | None:
        out = self._run(f"readlink {q(self.site.current)} || true").stdout.strip()
        return out.rsplit("/", 1)[-1] if out else None

    def releases(self) -> list[tuple[str, bool]]:
        """(release id, committed) oldest first."""
        result = self._run(
            f"cd {q(self.site.releases)} 2>/dev/null || exit 0; for d in */; do d=${{d%/}}; "
            f'[ -f "$d/manifest.json" ] || continue; '
            f'if [ -f "$d/{COMMITTED_MARK}" ]; then echo "$d 1"; else echo "$d 0"; fi; done'
        )
        rows = [line.split() for line in result.stdout.splitlines() if line.strip()]
        return sorted((name, flag == "1") for name, flag in rows)

    def manifest(self, release_id: str) -> dict[str, Any]:
        path = f"{self.site.release_dir(release_id)}/manifest.json"
        result = self._run(f"cat {q(path)}")
        if not result.ok:
            raise DeployError(f"release {release_id} has no manifest at {path}")
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    # -- the paths ----------------------------------------------------------------------------

    def _attempt(self, action: str, body: Callable[[dict[str, Any]], Outcome]) -> Outcome:
        started = self.monotonic()
        record: dict[str, Any] = {
            "action": action,
            "who": self.who,
            "started": _now_iso(self.clock),
            "timings": {},
        }
        try:
            with self._locked(action):
                try:
                    outcome = body(record)
                except _StepError as exc:
                    record.update(outcome=record.get("outcome", "failed"), step=exc.step)
                    record.setdefault("error", str(exc))
                    raise self._failure(record) from None
                except (TransportError, DeployError):
                    raise
                except Exception as exc:  # a bug or a surprise: still one ledger record
                    record.update(outcome="failed", step="internal", error=repr(exc))
                    raise
                finally:
                    record["finished"] = _now_iso(self.clock)
                    record["timings"]["total"] = round(self.monotonic() - started, 3)
                    if "outcome" in record:
                        self.ledger.append(record)
        except TransportError as exc:
            raise DeployError(self._lost(action, record, exc)) from exc
        return outcome

    def _deploy(self, spec: ReleaseSpec, record: dict[str, Any]) -> Outcome:
        live = self.live()
        record["previous"] = live
        self._drop_half_staged()
        backup = self._timed(record, "backup", lambda: self._backup_if_running("predeploy"))
        record["backup"] = backup
        staging = self._timed(record, "stage", lambda: self._stage(spec))
        try:
            pinned = self._timed(record, "pull", lambda: self._pull(spec.compose))
        except _StepError:
            self._run(f"rm -rf {q(staging)}")
            raise
        compose = pin(spec.compose, pinned)
        digest = content_hash(compose, spec.env_files, spec.checks)
        record["digests"] = {svc: pinned[ref] for svc, ref in service_images(spec.compose).items()}
        if live and self.manifest(live).get("content") == digest:
            # Already the live release: `up` it anyway (a deploy that died after its `up` left
            # other containers running), then verify; compose recreates nothing that matches.
            self._run(f"rm -rf {q(staging)}")
            record["release"] = live
            self._go_live(live, live, backup, record)
            record["outcome"] = "unchanged"
            return self._outcome(live, "unchanged", record)
        release_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock())) + "-" + digest
        record["release"] = release_id
        self._timed(
            record,
            "stage",
            lambda: self._seal(staging, release_id, spec, compose, pinned, digest, backup),
        )
        self._go_live(release_id, live, backup, record)
        return self._outcome(release_id, "deployed", record)

    def _rollback(self, to: str | None, record: dict[str, Any]) -> Outcome:
        live = self.live()
        record["previous"] = live
        target = to or self._before(live)
        known = dict(self.releases())
        if target not in known:
            raise _StepError("select", f"no release {target!r} on the host (see `status`)")
        record["release"] = target
        record["digests"] = self.manifest(target).get("digests", {})
        record["backup"] = self._timed(
            record, "backup", lambda: self._backup_if_running("predeploy")
        )
        self._go_live(target, live, record["backup"], record)
        return self._outcome(target, "rolled-back", record)

    def _go_live(
        self,
        release_id: str,
        previous: str | None,
        backup: dict[str, str] | None,
        record: dict[str, Any],
    ) -> None:
        """Up, verify, commit; on failure put `previous` back (or report why it could not)."""
        try:
            self._timed(record, "up", lambda: self._up(release_id))
            self._timed(record, "verify", lambda: self._verify(release_id))
            self._timed(record, "commit", lambda: self._commit(release_id))
        except _StepError as failure:
            record.update(step=failure.step, error=str(failure))
            self._timed(record, "rollback", lambda: self._restore(previous, backup, record))
            raise
        record["outcome"] = "deployed"
        self._timed(record, "prune", self._prune)

    def _restore(
        self, previous: str | None, backup: dict[str, str] | None, record: dict[str, Any]
    ) -> None:
        if previous is None:
            record.update(outcome="failed", rollback={"to": None, "outcome": "none"})
            return
        try:
            self._up(previous)
            if backup and self.policy.restore_on_rollback:
                self._restore_backup(backup)
            self._verify(previous)
        except _StepError as exc:
            record.update(
                outcome="rollback-failed",
                rollback={"to": previous, "outcome": "failed", "error": str(exc)},
            )
            return
        record.update(outcome="rolled-back", rollback={"to": previous, "outcome": "verified"})

    # -- the steps ----------------------------------------------------------------------------

    @contextmanager
    def _locked(self, what: str) -> Iterator[None]:
        self._owner = self.lock.acquire(self.who, what)
        try:
            yield
        finally:
            self._owner = None
            self.lock.release()

    def _renew(self, seconds: float | None = None) -> None:
        if self._owner is not None:
            self._owner = self.lock.renew(self._owner, seconds)

    def _drop_half_staged(self) -> None:
        """A deploy that died while staging leaves `.staging-*`: never used, removed."""
        removed = self._run(
            f"cd {q(self.site.releases)} 2>/dev/null || exit 0; "
            f'for d in {STAGING_PREFIX}*; do [ -e "$d" ] || continue; rm -rf "$d"; '
            'echo "$d"; done'
        ).stdout.split()
        for name in removed:
            self.log(f"removed the half-staged {name} left by an earlier deploy")

    def _mongo_running(self) -> bool:
        result = self._run(running_service(self.site.project))
        return bool(result.stdout.strip())

    def _backup_if_running(self, kind: str) -> dict[str, str] | None:
        if not self.policy.backup:
            return None
        if not self._mongo_running():
            raise _StepError("backup", "MongoDB is not running: no pre-deploy backup possible")
        return self._backup(kind)

    def _backup(self, kind: str) -> dict[str, str]:
        """Dump with the backup tool, then check the archive against its manifest ourselves."""
        result = self._run(f"{BACKUP_TOOL} dump --class {q(kind)}", timeout=1800)
        lines = result.stdout.strip().splitlines()
        if not result.ok or not lines:
            raise _StepError("backup", f"the pre-deploy backup failed: {_tail(result.stderr)}")
        archive = lines[-1]
        check = self._run(
            f'a={q(archive)}; gzip -t "$a" && sha256sum "$a" | cut -d\' \' -f1 && '
            'cat "${a%.archive.gz}.json"'
        )
        if not check.ok:
            raise _StepError("backup", f"the backup {archive} is not intact: {_tail(check.stderr)}")
        sha, _, manifest = check.stdout.partition("\n")
        if json.loads(manifest).get("sha256") != sha.strip():
            raise _StepError("backup", f"the backup {archive} does not match its checksum")
        return {"id": archive.rsplit("/", 1)[-1], "path": archive, "sha256": sha.strip()}

    def _restore_backup(self, backup: dict[str, str]) -> None:
        result = self._run(f"{BACKUP_TOOL} restore {q(backup['path'])} --in-place", timeout=1800)
        if not result.ok:
            raise _StepError("restore", f"restoring {backup['id']} failed: {_tail(result.stderr)}")

    def _stage(self, spec: ReleaseSpec) -> str:
        staging = f"{self.site.releases}/{STAGING_PREFIX}{secrets.token_hex(4)}"
        made = self._run(f"mkdir -p {q(self.site.releases)} && install -d -m 0700 {q(staging)}")
        if not made.ok:
            raise _StepError("stage", f"could not create {staging}: {_tail(made.stderr)}")
        for name, content in spec.env_files.items():
            wrote = self._run(
                f"umask 077 && cat > {q(staging + '/' + name)}", stdin=content.encode()
            )
            if not wrote.ok:
                self._run(f"rm -rf {q(staging)}")
                raise _StepError("stage", f"could not write {name}: {_tail(wrote.stderr)}")
        return staging

    def _pull(self, compose: str) -> dict[str, str]:
        """Pull every image once and resolve it to `repo@sha256:...` (only digests from here)."""
        pinned: dict[str, str] = {}
        for ref in sorted(set(service_images(compose).values())):
            self._renew()
            if "@sha256:" in ref:
                got = self._run(
                    f"docker image inspect {q(ref)} >/dev/null 2>&1 || docker pull -q {q(ref)}",
                    timeout=self.policy.pull_timeout,
                )
                if not got.ok:
                    raise _StepError("pull", f"pulling {ref} failed: {_tail(got.stderr)}")
                pinned[ref] = ref
                continue
            got = self._run(
                f"docker pull -q {q(ref)} >/dev/null && "
                f"docker image inspect --format '{{{{json .RepoDigests}}}}' {q(ref)}",
                timeout=self.policy.pull_timeout,
            )
            if not got.ok:
                raise _StepError("pull", f"pulling {ref} failed: {_tail(got.stderr)}")
            repo = repository(ref)
            digests = [d for d in json.loads(got.stdout or "[]") if repository(d) == repo]
            if not digests:
                raise _StepError("pull", f"{ref} has no registry digest for {repo}")
            pinned[ref] = digests[0]
        return pinned

    def _seal(
        self,
        staging: str,
        release_id: str,
        spec: ReleaseSpec,
        compose: str,
        pinned: dict[str, str],
        content: str,
        backup: dict[str, str] | None,
    ) -> None:
        """Write compose and manifest, check the compose file, then move it in place whole."""
        manifest = {
            "id": release_id,
            "project": self.site.project,
            "content": content,
            "digests": {svc: pinned[ref] for svc, ref in service_images(spec.compose).items()},
            "checks": spec.checks.as_dict(),
            "backup": backup,
            "created": _now_iso(self.clock),
            "who": self.who,
        }
        compose = (
            f"# Release {release_id}, images pinned by digest. Managed by smoker-infra.\n" + compose
        )
        target = self.site.release_dir(release_id)
        for name, text in (
            ("compose.yaml", compose),
            ("manifest.json", json.dumps(manifest, indent=2) + "\n"),
        ):
            self._run(f"umask 077 && cat > {q(staging + '/' + name)}", stdin=text.encode())
        sealed = self._run(
            f"docker compose -f {q(staging + '/compose.yaml')} config -q && "
            f"mv -T {q(staging)} {q(target)}"
        )
        if not sealed.ok:
            self._run(f"rm -rf {q(staging)}")
            raise _StepError("stage", f"the release's compose file is invalid: {sealed.stderr}")

    def _up(self, release_id: str) -> None:
        timeout = self.policy.verify_timeout + 60  # `up` waits for dependencies to be healthy
        self._renew(timeout + self.policy.lock_lease)
        result = self._run(
            f"{self.site.compose(release_id)} up -d --remove-orphans", timeout=timeout
        )
        if not result.ok:
            raise _StepError("up", f"`docker compose up` failed: {_tail(result.stderr)}")

    def _verify(self, release_id: str) -> None:
        """Poll the checks with backoff until all pass, one fails for good, or the deadline."""
        deadline = self.monotonic() + self.policy.verify_timeout
        delay = 0.25
        while True:
            problem = self._problem(release_id)
            if problem is None:
                return
            if problem.startswith("!") or self.monotonic() + delay > deadline:
                raise _StepError(
                    "verify",
                    f"release {release_id} was not verified: {problem.lstrip('!')}",
                )
            self._renew()
            self.sleep(delay)
            delay = min(delay * 1.5, 3.0)

    def _problem(self, release_id: str) -> str | None:
        """The first failing check, or None; a leading '!' marks a failure waiting cannot fix."""
        try:
            manifest = self.manifest(release_id)
        except DeployError as exc:
            return f"!{exc}"
        return (
            self._containers_problem(release_id, manifest["digests"])
            or self._http_problem(Checks.from_dict(manifest.get("checks") or {}))
            or self._auth_problem(release_id, Checks.from_dict(manifest.get("checks") or {}))
        )

    def _containers_problem(self, release_id: str, digests: dict[str, str]) -> str | None:
        result = self._run(f"{self.site.compose(release_id)} ps -a --format json")
        if not result.ok:
            return f"`docker compose ps` failed: {_tail(result.stderr)}"
        rows = _json_rows(result.stdout)
        by_service = {row.get("Service"): row for row in rows}
        for service, image in sorted(digests.items()):
            row = by_service.get(service)
            if row is None:
                return f"service {service} has no container"
            if row.get("Image") != image:
                return f"service {service} runs {row.get('Image')}, not {image}"
            if row.get("Health") == "unhealthy":
                return f"!service {service} is unhealthy"
            if row.get("State") != "running":
                return f"service {service} is {row.get('State')}"
            if row.get("Health") not in ("healthy", "", None):
                return f"service {service} is {row.get('Health')}"
        return None

    def _http_problem(self, checks: Checks) -> str | None:
        for check in checks.http:
            result = self._run(f"curl -s -m 5 -w '\\n%{{http_code}}' {q(check.url)}", timeout=30)
            body, _, code = result.stdout.rpartition("\n")
            problem = _answer_problem(check, code.strip(), body)
            if problem:
                return problem
        for check in checks.outside:
            status, body = self.get(check.url)
            problem = _answer_problem(check, str(status or ""), body)
            if problem:
                return f"from outside: {problem}"
        return None

    def _auth_problem(self, release_id: str, checks: Checks) -> str | None:
        if not checks.mongo_user_env:
            return None
        env_path = f"{self.site.release_dir(release_id)}/{checks.mongo_user_env}"
        env = self._run(f"sed -n 's/^DB_URL=//p' {q(env_path)}")
        url = env.stdout.strip()
        if not url:
            return f"!{env_path} has no DB_URL"
        try:
            self.auth(self.t, checks.mongo_port, url)
        except TransportError:
            raise
        except Exception as exc:  # any driver error: report its kind, never the URL
            return f"the application user cannot authenticate ({type(exc).__name__})"
        return None

    def _commit(self, release_id: str) -> None:
        rel = f"releases/{release_id}"
        done = self._run(
            f"cd {q(self.site.app_dir)} && touch {q(rel + '/' + COMMITTED_MARK)} && "
            f"ln -sfn {q(rel)} .current.new && mv -T .current.new current"
        )
        if not done.ok:
            raise _StepError("commit", f"could not point current at {release_id}: {done.stderr}")

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
        paths = " ".join(q(self.site.release_dir(name)) for name in drop)
        self._run(f"rm -rf {paths}")
        if dropped_images:
            refs = " ".join(q(ref) for ref in sorted(dropped_images))
            self._run(f"docker image rm {refs} >/dev/null 2>&1 || true")
        if self.policy.backup:
            self._run(f"{BACKUP_TOOL} prune >/dev/null")
        self.log(f"pruned releases {', '.join(drop)}")

    # -- helpers ------------------------------------------------------------------------------

    def _before(self, live: str | None) -> str:
        committed = [name for name, ok in self.releases() if ok and name != live]
        older = [name for name in committed if live is None or name < live]
        if not older:
            raise _StepError("select", "no earlier committed release to roll back to")
        return older[-1]

    def _timed(self, record: dict[str, Any], name: str, step: Callable[[], Any]) -> Any:
        start = self.monotonic()
        try:
            return step()
        finally:
            timings = record["timings"]
            timings[name] = round(timings.get(name, 0.0) + self.monotonic() - start, 3)

    def _outcome(self, release_id: str, outcome: str, record: dict[str, Any]) -> Outcome:
        return Outcome(
            release=release_id,
            outcome=outcome,
            digests=dict(record.get("digests") or {}),
            backup=record.get("backup"),
            deployed_at=_now_iso(self.clock),
            timings=record["timings"],
        )

    def _failure(self, record: dict[str, Any]) -> DeployError:
        """The exception for a failed attempt: what failed, what is live, where to look."""
        step, error = record.get("step"), record.get("error")
        backup = record.get("backup") or {}
        where = f"Ledger: {self.ledger.path}."
        if backup:
            where += f" Pre-deploy backup: {backup['path']} (sha256 {backup['sha256']})."
        previous = record.get("previous")
        outcome = record["outcome"]
        release = record.get("release") or "a new release"
        failed = f"{record['action']} of {release} failed at {step}: {error}."
        if outcome == "rolled-back":
            return DeployError(
                f"{failed} Rolled back: release {previous} is live and verified. {where}"
            )
        if outcome == "rollback-failed":
            rollback = record["rollback"]
            compose = self.site.compose(previous or "")
            by_hand = f"`{self.cli} rollback --to {previous}`, or on the guest `{compose} up -d`"
            if backup:
                restore = f"{BACKUP_TOOL} restore {backup['path']} --in-place"
                by_hand += f" and, to restore data, `{restore}`"
            return RollbackError(
                f"{failed} The rollback to {previous} failed too: {rollback['error']}. "
                f"Recover by hand: {by_hand}. {where}"
            )
        if record.get("rollback", {}).get("outcome") == "none":
            return DeployError(
                f"{failed} There is no earlier release to roll back to: the failed release is "
                f"left running for inspection. {where}"
            )
        return DeployError(
            f"{failed} Nothing was changed on the host"
            + (f"; release {previous} is still live." if previous else ".")
            + f" {where}"
        )

    def _lost(self, action: str, record: dict[str, Any], exc: TransportError) -> str:
        return (
            f"{action} of {record.get('release') or 'a new release'}: the connection to the "
            f"host was lost ({exc}). The host may be between releases; `current` still points at "
            f"{record.get('previous') or 'no release'}. The deploy lock goes stale after "
            f"{self.policy.lock_lease:.0f} s; then `{self.cli} lock break` and deploy "
            "again: the next deploy ends on a verified release."
        )

    def _run(self, command: str, stdin: bytes = b"", timeout: float = 120) -> Any:
        return self.t.run(command, stdin=stdin, timeout=timeout)


def _answer_problem(check: HttpCheck, code: str, body: str) -> str | None:
    if code != str(check.status):
        return f"GET {check.url} answered {code or 'nothing'}"
    if check.json:
        try:
            doc = json.loads(body)
        except ValueError:
            return f"GET {check.url} did not answer JSON"
        for key, want in check.json.items():
            if doc.get(key) != want:
                return f"GET {check.url}: {key} is {doc.get(key)!r}, not {want!r}"
    return None


@contextmanager
def over_ssh(
    target: SshTarget, site: Site, who: str, policy: Policy, **options: Any
) -> Iterator[Engine]:
    """The engine on one SSH connection to the guest (host key pinned)."""
    with connect(target) as transport:
        yield Engine(transport, site, who, policy, **options)


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-lines:]) or "no output"


def _json_rows(text: str) -> list[dict[str, Any]]:
    """`docker compose ps --format json`: a JSON array (older) or one object per line (newer)."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        rows: list[dict[str, Any]] = json.loads(text)
        return rows
    return [json.loads(line) for line in text.splitlines() if line.strip()]
