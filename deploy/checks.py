"""Verifying a release: every container runs its digest and is healthy, the HTTP endpoints
answer as they should, and the application user can authenticate.

A check that fails returns a `Problem`: `permanent` when waiting cannot fix it (a container the
engine saw turn unhealthy, an env file without `DB_URL`), so verification stops at once instead
of running into its deadline; `failing` when the release is up (every container running and
healthy) and a check got an answer, but the wrong one (a 5xx, `status: error`, a refused login):
the engine gives that a short window (`failingWindowSeconds`), not the whole deadline; otherwise
it is "not up yet" and the engine polls again.

Behind the proxy, a release's checks name its services (`http://backend:3001/...`): they are
asked at the IP of the release's own container, so a release is verified before it takes traffic.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from deploy import commands
from deploy.release import Checks, HttpCheck, Site
from deploy.transport import Transport, TransportError
from layout import MONGO_SERVICE

Auth = Callable[[Transport, int, str], None]
Count = Callable[[Transport, int, str], int]
Get = Callable[[str], tuple[int, str]]


@dataclass(frozen=True)
class Problem:
    """Why a release does not verify (right now, or for good)."""

    message: str
    permanent: bool = False  # waiting cannot fix it
    failing: bool = False  # up, and answering errors (not "not up yet")

    def __str__(self) -> str:
        return self.message


def transient(message: str) -> Problem:
    return Problem(message)


def permanent(message: str) -> Problem:
    return Problem(message, permanent=True)


def failing(message: str) -> Problem:
    return Problem(message, failing=True)


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


def mongo_documents(transport: Transport, port: int, db_url: str) -> int:
    """How many documents the database of `db_url` holds, as its application user sees it."""
    from deploy.mongo_users import connect

    url = urlsplit(db_url)
    with transport.forward(port) as local:
        client = connect(local, unquote(url.username or ""), unquote(url.password or ""))
        try:
            db = client[url.path.lstrip("/") or "admin"]
            return sum(
                db[name].estimated_document_count()
                for name in db.list_collection_names()
                if not name.startswith("system.")
            )
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


def containers_problem(rows: list[dict[str, Any]], digests: Mapping[str, str]) -> Problem | None:
    """`docker compose ps` rows against the release's digests: the first service that is not
    running its digest, healthy."""
    by_service = {row.get("Service"): row for row in rows}
    for service, image in sorted(digests.items()):
        row = by_service.get(service)
        if row is None:
            return transient(f"service {service} has no container")
        if row.get("Image") != image:
            return transient(f"service {service} runs {row.get('Image')}, not {image}")
        if row.get("Health") == "unhealthy":
            return permanent(f"service {service} is unhealthy")
        if row.get("State") != "running":
            return transient(f"service {service} is {row.get('State')}")
        if row.get("Health") not in ("healthy", "", None):
            return transient(f"service {service} is {row.get('Health')}")
    return None


def answer_problem(check: HttpCheck, code: str, body: str) -> Problem | None:
    if code in ("", "000", "0"):
        return transient(f"GET {check.url} answered nothing")
    if code != str(check.status):
        return failing(f"GET {check.url} answered {code}")
    if check.json:
        try:
            doc = json.loads(body)
        except ValueError:
            return failing(f"GET {check.url} did not answer JSON")
        for key, want in check.json.items():
            if doc.get(key) != want:
                return failing(f"GET {check.url}: {key} is {doc.get(key)!r}, not {want!r}")
    return None


def at_address(url: str, addresses: Mapping[str, str]) -> str:
    """`http://backend:3001/x` -> `http://<backend's IP>:3001/x` (other hosts unchanged)."""
    parts = urlsplit(url)
    ip = addresses.get(parts.hostname or "")
    if ip is None:
        return url
    netloc = f"{ip}:{parts.port}" if parts.port else ip
    return parts._replace(netloc=netloc).geturl()


class Checker:
    """Runs a release's checks on the guest (and the outside ones from here)."""

    def __init__(self, transport: Transport, site: Site, auth: Auth, get: Get) -> None:
        self.t, self.site, self.auth, self.get = transport, site, auth, get

    def problem(
        self, release_id: str, manifest: Mapping[str, Any], outside: bool = True
    ) -> Problem | None:
        """The first failing check of the release, or None when it verifies. Without
        `outside`, the checks through the Tailscale URLs wait (behind the proxy they reach the
        release that serves, so they run after the switch)."""
        checks = Checks.from_dict(manifest.get("checks") or {})
        project = self.site.project_of(release_id, manifest)
        digests = dict(manifest.get("digests") or {})
        if project != self.site.project:  # its own project: MongoDB is in the guest's
            digests.pop(MONGO_SERVICE, None)
        return (
            self.containers(release_id, digests, project)
            or self.http(checks, self.addresses(project) if project != self.site.project else {})
            or self.app_user(release_id, checks)
            or (self.outside(checks) if outside else None)
        )

    def containers(
        self, release_id: str, digests: Mapping[str, str], project: str | None = None
    ) -> Problem | None:
        result = self.t.run(commands.compose_ps(self.site, release_id, project))
        if not result.ok:
            return transient(f"`docker compose ps` failed: {tail(result.stderr)}")
        return containers_problem(json_rows(result.stdout), digests)

    def addresses(self, project: str) -> dict[str, str]:
        """service -> the IP of its running container in `project`."""
        rows = self.t.run(commands.addresses(project)).stdout.splitlines()
        return {parts[0]: parts[1] for parts in map(str.split, rows) if len(parts) >= 2}

    def http(self, checks: Checks, addresses: Mapping[str, str] | None = None) -> Problem | None:
        for check in checks.http:
            url = at_address(check.url, addresses or {})
            result = self.t.run(commands.curl(url), timeout=30)
            body, _, code = result.stdout.rpartition("\n")
            problem = answer_problem(check, code.strip(), body)
            if problem:
                return problem
        return None

    def outside(self, checks: Checks) -> Problem | None:
        for check in checks.outside:
            status, body = self.get(check.url)
            problem = answer_problem(check, str(status or ""), body)
            if problem:
                return Problem(f"from outside: {problem}", problem.permanent, problem.failing)
        return None

    def db_url(self, release_id: str, checks: Checks) -> tuple[str, str]:
        """The env file of the release's application user, and its DB_URL ('' when unset)."""
        env_path = f"{self.site.release_dir(release_id)}/{checks.mongo_user_env}"
        return env_path, self.t.run(commands.db_url(env_path)).stdout.strip()

    def app_user(self, release_id: str, checks: Checks) -> Problem | None:
        if not checks.mongo_user_env:
            return None
        env_path, url = self.db_url(release_id, checks)
        if not url:
            return permanent(f"{env_path} has no DB_URL")
        try:
            self.auth(self.t, checks.mongo_port, url)
        except TransportError:
            raise
        except Exception as exc:  # any driver error: report its kind, never the URL
            message = f"the application user cannot authenticate ({type(exc).__name__})"
            # MongoDB answered and refused (OperationFailure): up and failing, not "not up yet"
            return (
                failing(message) if type(exc).__name__ == "OperationFailure" else transient(message)
            )
        return None


def tail(text: str, lines: int = 3) -> str:
    """The last lines of a command's output, on one line (for messages)."""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:]) or "no output"


def json_rows(text: str) -> list[dict[str, Any]]:
    """`docker compose ps --format json`: a JSON array (older) or one object per line (newer)."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        rows: list[dict[str, Any]] = json.loads(text)
        return rows
    return [json.loads(line) for line in text.splitlines() if line.strip()]
