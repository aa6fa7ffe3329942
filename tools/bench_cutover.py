"""`make bench`, the cutover rows: failed requests through the loopback ports Tailscale serve
targets, today's in-place update against the cutover behind the proxy, on the same test guest.

"In place" is the layout before the proxy, rebuilt from the release's inputs (backend and
frontend publish 127.0.0.1:3001 and :80 themselves, one Compose project, `up -d` replaces them).
Probes run inside the guest every 50 ms (tests/tier3/probe.py), each on a fresh connection.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from typing import Any

import yaml

from components.release import release_engine, release_spec
from deploy.engine import DeployError

IN_PLACE_PORTS = {"backend": "127.0.0.1:3001:3001", "frontend": "127.0.0.1:80:3000"}
IN_PLACE_URLS = {"backend:3001": "127.0.0.1:3001", "frontend:3000": "127.0.0.1:80"}


def in_place_compose(compose: str) -> str:
    """A cloud release's compose file as it was before the proxy: one project, host ports."""
    project = yaml.safe_load(compose)
    project.pop("networks", None)
    services = project["services"]
    services["mongo"].pop("profiles", None)
    for name, port in IN_PLACE_PORTS.items():
        services[name].pop("networks", None)
        services[name]["ports"] = [port]
    services["backend"]["depends_on"] = {"mongo": {"condition": "service_healthy"}}
    return yaml.safe_dump(project, sort_keys=False, width=1000)


def in_place(props: dict[str, Any]) -> dict[str, Any]:
    """The Release inputs as they were before the proxy."""
    checks = yaml.safe_load(
        _replace_all(yaml.safe_dump(props["checks"]), IN_PLACE_URLS)  # same checks, host ports
    )
    return {**props, "compose": in_place_compose(props["compose"]), "checks": checks, "routes": []}


def _replace_all(text: str, pairs: dict[str, str]) -> str:
    for old, new in pairs.items():
        text = text.replace(old, new)
    return text


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_cutover(env: Any, releases: Any) -> None:
    from tests.tier3.app_env import SECRETS
    from tests.tier3.probe import BACKEND, FRONTEND, probing
    from tests.tier3.release_env import N1, N2, N, release_config, release_props

    guest = env.guest

    def props(version: str) -> dict[str, Any]:
        return release_props(env, release_config(env.cfg, releases, version), SECRETS)

    def attempt(name: str, p: dict[str, Any], run: Callable[[Any], Any]) -> dict[str, Any]:
        """Run one deploy/rollback under probes: failed probes per port and its timings."""
        with (
            probing(guest, name, probes=(BACKEND, FRONTEND), max_seconds=600) as t,
            release_engine(p, "bench") as engine,
        ):
            with contextlib.suppress(DeployError):
                run(engine)
            timings = engine.history()[-1]["timings"]
        failed = t.failed()
        return {"backend": failed[BACKEND], "frontend": failed[FRONTEND], "timings": timings}

    def scenarios(layout: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        return {
            "upgrade": attempt(
                "up", layout(props(N1)), lambda e: e.deploy(release_spec(layout(props(N1))))
            ),
            "broken": attempt(
                "broken", layout(props(N2)), lambda e: e.deploy(release_spec(layout(props(N2))))
            ),
            "rollback": attempt("back", layout(props(N1)), lambda e: e.rollback()),
        }

    # today's in-place update: from N, the three scenarios
    _leave_the_proxy(guest, env.cfg)
    with release_engine(in_place(props(N)), "bench") as engine:
        engine.deploy(release_spec(in_place(props(N))))
    before = scenarios(in_place)
    # the move to the proxy (once per guest), then the same three behind it
    moved = attempt("move", props(N), lambda e: e.deploy(release_spec(props(N))))
    after = scenarios(lambda p: p)

    print(f"{'cutover (probes every 50 ms, through 127.0.0.1:3001 and :80)':<52} in place -> proxy")
    for key, label in (
        ("upgrade", "upgrade N -> N+1: failed requests"),
        ("broken", "broken N+2 tried and abandoned: failed requests"),
        ("rollback", "rollback N+1 -> N: failed requests"),
    ):
        was, now = before[key], after[key]
        print(
            f"{'  ' + label:<52} backend {was['backend']:4d} -> {now['backend']:d}, "
            f"frontend {was['frontend']:4d} -> {now['frontend']:d}   (target 0)"
        )
    print(
        f"{'  the move to the proxy, once per guest':<52} backend {moved['backend']}, "
        f"frontend {moved['frontend']} failed"
    )
    was_t, now_t = before["upgrade"]["timings"], after["upgrade"]["timings"]
    start_verified_was = was_t["up"] + was_t["verify"]
    start_verified_now = now_t["up"] + now_t["verify"] + now_t.get("switch", 0.0)
    print(
        f"{'  upgrade, start -> verified (up+verify[+switch])':<52} "
        f"{start_verified_was:6.2f} s -> {start_verified_now:6.2f} s "
        f"({start_verified_now / start_verified_was - 1:+.0%}; target <= +20%)"
    )
    print(
        f"{'  upgrade, whole attempt (backup, pull, drain ...)':<52} "
        f"{was_t['total']:6.2f} s -> {now_t['total']:6.2f} s (drain {now_t.get('drain', 0):.2f} s)"
    )
    broken_t = after["broken"]["timings"]
    print(
        f"{'  broken N+2 detected (up + verify)':<52} "
        f"{before['broken']['timings']['up'] + before['broken']['timings'].get('verify', 0):6.2f}"
        f" s -> {broken_t['up'] + broken_t.get('verify', 0):6.2f} s"
    )
    _latency(guest)


def _leave_the_proxy(guest: Any, cfg: Any) -> None:
    """Back to the layout before the proxy: the proxy and every release project stopped."""
    project = f"smart-smoker-{cfg.environment}"
    guest.run(
        "docker ps -aq --filter label=com.docker.compose.project | xargs -r docker inspect "
        "-f '{{.Id}} {{index .Config.Labels \"com.docker.compose.project\"}}' | "
        f"awk '$2 ~ /^{project}-/ {{print $1}}' | xargs -r docker rm -f >/dev/null"
    )


def _latency(guest: Any) -> None:
    """The proxy's added latency on /api/health: through it, and straight at the container."""
    from tests.tier3.probe import BACKEND, traffic

    ip = guest.run(
        "docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "
        "$(docker ps -q --filter label=com.docker.compose.service=backend | head -1)"
    ).stdout.split()[0]
    direct = f"http://{ip}:3001/api/health"
    samples: dict[str, list[float]] = {}
    for name, url in (("direct", direct), ("proxy", BACKEND), ("direct2", direct)):
        t = traffic(guest, f"lat-{name}", probes=(url,), interval=0.005, max_count=1000).start()
        summary = t.wait(120)  # it stops by itself after max_count probes
        samples.setdefault(name.rstrip("2"), []).extend(summary["targets"][url]["latencies_ms"])
    p50 = percentile(samples["proxy"], 0.5) - percentile(samples["direct"], 0.5)
    p99 = percentile(samples["proxy"], 0.99) - percentile(samples["direct"], 0.99)
    print(
        f"{'  proxy added latency, /api/health p50 / p99':<52} {p50:6.3f} ms / {p99:6.3f} ms "
        f"(targets < 1 / < 5 ms; direct p50 {statistics.median(samples['direct']):.3f} ms, "
        f"n={len(samples['proxy'])})"
    )
