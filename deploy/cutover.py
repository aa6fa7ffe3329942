"""Health-gated cutover behind the guest's reverse proxy (cloud guests).

A release's `backend` and `frontend` start in a Compose project of their own, next to the live
release's, with no host ports. Only once they are verified does the proxy switch: the engine
writes `upstreams.conf` naming the new containers, nginx tests it and reloads, and its old
workers finish their requests while every new connection goes to the new release. Then the old
release drains (its connections from the proxy end, or `drainSeconds` pass) and is stopped: its
graceful shutdown closes its WebSockets with a close frame, and their clients reconnect to the
new release. The proxy only ever names a verified release, so a deploy that dies at any point
leaves traffic on one.

`Cutover` runs the proxy's side of this over the transport; the order, the verification and
the ledger are the engine's (`deploy.engine`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from deploy import commands
from deploy.checks import tail
from deploy.record import StepError
from deploy.release import Site
from deploy.transport import CommandResult, Transport
from layout import (
    NO_RELEASE,
    container_name,
    proxy_project,
    release_project,
    upstream_name,
)

SWITCH_TIMEOUT = 15.0  # for nginx's new workers to answer with the new release
PROXY_START_TIMEOUT = 30.0
APP_SERVICES = ("backend", "frontend")  # what a release from before the proxy ran in the project


@dataclass(frozen=True)
class Route:
    service: str
    port: int


def routes_of(manifest: Mapping[str, Any]) -> list[Route]:
    return [Route(str(r["service"]), int(r["port"])) for r in manifest.get("routes") or ()]


def upstreams(site: Site, release_id: str | None, routes: Iterable[Route]) -> str:
    """upstreams.conf: each route's upstream at the release's container, and the release's id
    for the status port. Without a release every route answers 502."""
    name = release_id or NO_RELEASE
    lines = [
        "# Written by the deploy engine at each cutover: the release that takes traffic.",
        f'map $host $smoker_release {{ default "{name}"; }}',
    ]
    for route in routes:
        if release_id is None:
            server = "127.0.0.1:9"  # nothing listens: 502 until the first release
        else:
            project = release_project(site.project, release_id)
            server = f"{container_name(project, route.service)}:{route.port}"
        lines.append(f"upstream {upstream_name(route.service)} {{ server {server}; }}")
    return "\n".join(lines) + "\n"


class Cutover:
    def __init__(
        self,
        transport: Transport,
        site: Site,
        *,
        drain_seconds: float,
        lease: float,
        stop_grace: int = 10,
        monotonic: Callable[[], float],
        sleep: Callable[[float], None],
        renew: Callable[[float | None], None],
        log: Callable[[str], None],
    ) -> None:
        self.t, self.site, self.lease = transport, site, lease
        self.drain_seconds, self.stop_grace = drain_seconds, stop_grace
        self.monotonic, self.sleep, self.renew, self.log = monotonic, sleep, renew, log

    # -- starting a release next to the live one --------------------------------------------

    def start(self, release_id: str, timeout: float) -> None:
        """Networks, MongoDB (unchanged unless the release changes it), then the release's app
        services in their own project (`up` returns once the backend is healthy)."""
        for command, what in (
            (commands.ensure_networks(self.site), "creating the networks"),
            (commands.up_data(self.site, release_id), "starting MongoDB"),
            (commands.up_release(self.site, release_id), "`docker compose up`"),
        ):
            self.renew(timeout + self.lease)  # the lock outlives the longest wait
            result = self._run(command, timeout=timeout)
            if not result.ok:
                raise StepError("up", f"{what} failed: {tail(result.stderr)}")
        self.renew(None)  # the long waits are over: a deploy dying now leaves the usual lease

    def remove(self, release_id: str) -> None:
        """Stop and remove a release's app containers (it never took traffic, or no longer)."""
        project = release_project(self.site.project, release_id)
        self._run(commands.down_project(project, self.stop_grace), timeout=120)

    # -- the proxy ----------------------------------------------------------------------------

    def served(self) -> str | None:
        """The release the proxy serves now; None when it does not answer."""
        out = self._run(commands.served(self.site)).stdout.strip()
        return out or None

    def switch(self, release_id: str | None, routes: list[Route]) -> None:
        """Point the proxy at `release_id` (None: no release) and wait until it serves it."""
        want = release_id or NO_RELEASE
        text = upstreams(self.site, release_id, routes)
        wrote = self._run(commands.write_upstreams(self.site), stdin=text.encode())
        if not wrote.ok:
            raise StepError("switch", f"could not write upstreams.conf: {tail(wrote.stderr)}")
        if self._proxy_running():
            reloaded = self._run(commands.reload_proxy(self.site), timeout=60)
            if not reloaded.ok:
                raise StepError(
                    "switch", f"the proxy refused the new upstreams: {tail(reloaded.stderr)}"
                )
        else:
            self._start_proxy()
        deadline = self.monotonic() + SWITCH_TIMEOUT
        delay = 0.05
        while (now := self.served()) != want:
            if self.monotonic() + delay > deadline:
                raise StepError(
                    "switch", f"the proxy serves {now or 'nothing'}, not {want}, after reloading"
                )
            self.sleep(delay)
            delay = min(delay * 2, 1.0)
        self.log(f"the proxy serves {want}")

    def _proxy_running(self) -> bool:
        return bool(self._run(commands.proxy_running(self.site)).stdout.strip())

    def _start_proxy(self) -> None:
        """Start the proxy. A release from before the proxy holds its ports: its app services
        stop first (the one interruption of the move to the proxy, about a second)."""
        legacy = self._run(
            commands.stop_services(self.site.project, list(APP_SERVICES), self.stop_grace),
            timeout=120,
        )
        if not legacy.ok:
            raise StepError("switch", f"could not stop the old app services: {tail(legacy.stderr)}")
        started = self._run(commands.proxy_up(self.site), timeout=PROXY_START_TIMEOUT + 60)
        if not started.ok:
            raise StepError("switch", f"the proxy did not start: {tail(started.stderr)}")

    # -- the old release ----------------------------------------------------------------------

    def others(self, keep: str) -> list[str]:
        """The release projects with containers, other than `keep`'s (and the proxy's)."""
        prefix = f"{self.site.project}-"
        skip = {release_project(self.site.project, keep), proxy_project(self.site.project)}
        rows = self._run(commands.projects(self.site)).stdout.split()
        return [p for p in rows if p.startswith(prefix) and p not in skip]

    def retire(self, keep: str, routes: list[Route]) -> list[str]:
        """Drain, then stop every release project but `keep`'s; returns the projects stopped."""
        old = self.others(keep)
        if not old:
            return []
        ports = {r.service: r.port for r in routes}
        deadline = self.monotonic() + self.drain_seconds
        delay = 0.1
        while True:
            open_ = sum(self._open_connections(project, ports) for project in old)
            if open_ == 0:
                break
            left = deadline - self.monotonic()
            if left <= 0:
                self.log(f"drain: {open_} connection(s) still open after {self.drain_seconds:g} s")
                break
            self.renew(None)
            self.sleep(min(delay, left))
            delay = min(delay * 1.5, 1.0)
        for project in old:
            done = self._run(commands.down_project(project, self.stop_grace), timeout=120)
            if not done.ok:
                raise StepError("drain", f"could not stop {project}: {tail(done.stderr)}")
        return old

    def _open_connections(self, project: str, ports: Mapping[str, int]) -> int:
        out = self._run(commands.connections(project, dict(ports))).stdout
        return sum(int(parts[1]) for parts in map(str.split, out.splitlines()) if len(parts) == 2)

    def _run(self, command: str, stdin: bytes = b"", timeout: float = 120) -> CommandResult:
        return self.t.run(command, stdin=stdin, timeout=timeout)
