"""Tier 1: the cutover behind the proxy over the fake host: the live release keeps traffic until
a verified one replaces it, failures never reach the proxy, and a deploy that dies at any
command leaves the proxy on a verified release that the next deploy moves on from."""

from __future__ import annotations

from typing import Any

import pytest

from deploy.cutover import Route, upstreams
from deploy.engine import DeployError, Engine, Policy
from deploy.lock import HostLock, LockHeldError
from deploy.record import ROLLED_BACK
from deploy.release import Checks, HttpCheck, ReleaseSpec, Site
from layout import release_project
from tests.unit.engine_kit import APP_DIR, PROJECT, Clock, digest, make_engine, proxied_spec, spec
from tests.unit.fake_host import FakeHost

POLICY: dict[str, Any] = {"drain_seconds": 5, "failing_window": 4}


def engine(host: FakeHost, clock: Clock, **policy: Any) -> Engine:
    return make_engine(host, clock, proxied=True, **{**POLICY, **policy})


def deploy(host: FakeHost, clock: Clock, version: str) -> str:
    clock.t += 60  # distinct, ordered release ids
    return engine(host, clock).deploy(proxied_spec(version)).release


def project(release_id: str) -> str:
    return release_project(PROJECT, release_id)


def generations(host: FakeHost, release_id: str) -> dict[str, int]:
    return {name: c.generation for name, c in host.projects[project(release_id)].items()}


def served_only(host: FakeHost, allowed: set[str | None]) -> None:
    """The proxy served nothing but `allowed` before any command of the attempt."""
    assert set(host.served_log) <= allowed, set(host.served_log) - allowed


def test_the_first_release_starts_the_proxy_and_takes_traffic(host: FakeHost, clock: Clock) -> None:
    first = deploy(host, clock, "1.0.0")
    assert host.current == first and host.serving == first and host.proxy_running
    assert set(host.projects) == {project(first)}
    assert set(host.containers) == {"mongo"}  # MongoDB alone in the guest's project
    steps = host.steps
    assert steps.index("up-data") < steps.index("up") < steps.index("upstreams")
    assert steps.index("proxy-up") < steps.index("served") < steps.index("commit")


def test_an_upgrade_switches_only_after_verification_then_drains_the_old(
    host: FakeHost, clock: Clock
) -> None:
    old = deploy(host, clock, "1.0.0")
    mongo = host.containers["mongo"].generation
    before = generations(host, old)
    host.steps.clear()
    host.served_log.clear()
    host.open_connections[project(old)] = 3  # requests in flight on the old release
    new = deploy(host, clock, "1.1.0")
    assert host.serving == new == host.current
    assert set(host.projects) == {project(new)}  # the old one drained and stopped
    assert host.containers["mongo"].generation == mongo  # never recreated
    steps = host.steps
    # the old release kept every request until the new one was verified and switched to
    assert steps.index("up") < steps.index("http") < steps.index("upstreams")
    assert steps.index("reload") < steps.index("commit") < steps.index("connections")
    assert steps.index("connections") < steps.index("down")
    assert steps.count("connections") == 4  # polled until the last request finished
    served_only(host, {old, new})
    assert set(host.served_log[: steps.index("reload") + 1]) == {old}
    assert before  # the old release ran untouched until the drain (`down` its only change)
    assert "down" not in steps[: steps.index("connections")]


def test_a_drain_that_never_empties_ends_at_drain_seconds(host: FakeHost, clock: Clock) -> None:
    old = deploy(host, clock, "1.0.0")
    host.open_connections[project(old)] = 10**6  # a WebSocket that never closes by itself
    clock.t += 60
    outcome = engine(host, clock).deploy(proxied_spec("1.1.0"))
    assert 5 <= outcome.timings["drain"] < 7 and project(old) not in host.projects


def test_a_broken_release_never_takes_traffic(host: FakeHost, clock: Clock) -> None:
    old = deploy(host, clock, "1.1.0")
    before = generations(host, old)
    host.served_log.clear()
    with pytest.raises(DeployError, match=r"(?i)rolled back"):
        deploy(host, clock, "1.2.0")  # its backend never becomes healthy
    assert host.serving == old == host.current and generations(host, old) == before
    assert set(host.projects) == {project(old)}  # the failed release's containers are gone
    assert "upstreams" not in host.steps[-20:] and "reload" not in host.steps
    served_only(host, {old})
    record = host.ledger()[-1]
    assert record["outcome"] == ROLLED_BACK and record["rollback"]["outcome"] == "verified"


def test_up_and_failing_fails_after_the_window_not_the_deadline(
    host: FakeHost, clock: Clock
) -> None:
    old = deploy(host, clock, "1.0.0")
    host.http_broken.add(digest("backend", "1.1.0"))  # healthy containers, 503 from the API
    host.served_log.clear()
    with pytest.raises(DeployError, match=r"up but kept failing for 4 s: .*answered 503"):
        deploy(host, clock, "1.1.0")
    timings = host.ledger()[-1]["timings"]
    assert 4 <= timings["verify"] < 8  # not verify_timeout (30 s)
    assert host.serving == old and "reload" not in host.steps
    served_only(host, {old})


def test_not_up_yet_waits_for_the_deadline(host: FakeHost, clock: Clock) -> None:
    """An endpoint that answers nothing is "not up yet": the window does not apply."""
    deploy(host, clock, "1.0.0")
    host.fail("http", when=lambda command: True)  # curl exits 1: nothing answered
    with pytest.raises(DeployError, match="not verified"):
        deploy(host, clock, "1.1.0")
    assert host.ledger()[-1]["timings"]["verify"] >= 29


def test_a_refused_reload_switches_nothing(host: FakeHost, clock: Clock) -> None:
    old = deploy(host, clock, "1.0.0")
    host.fail("reload")
    host.served_log.clear()
    with pytest.raises(DeployError, match="proxy refused the new upstreams"):
        deploy(host, clock, "1.1.0")
    assert host.serving == old == host.current and set(host.projects) == {project(old)}
    served_only(host, {old})
    assert f'default "{old}"' in host.files[f"{APP_DIR}/proxy/conf/upstreams.conf"]


def test_a_failed_commit_switches_back(host: FakeHost, clock: Clock) -> None:
    old = deploy(host, clock, "1.0.0")
    host.fail("commit")
    with pytest.raises(DeployError, match=r"(?i)rolled back"):
        deploy(host, clock, "1.1.0")
    assert host.serving == old == host.current and set(host.projects) == {project(old)}
    assert host.ledger()[-1]["rollback"]["outcome"] == "verified"


def test_rollback_is_the_same_cutover_in_reverse(host: FakeHost, clock: Clock) -> None:
    first = deploy(host, clock, "1.0.0")
    second = deploy(host, clock, "1.1.0")
    host.steps.clear()
    host.served_log.clear()
    clock.t += 60
    outcome = engine(host, clock).rollback()
    assert outcome.release == first == host.serving == host.current
    assert set(host.projects) == {project(first)}
    assert host.steps.index("up") < host.steps.index("reload") < host.steps.index("down")
    served_only(host, {second, first})


def test_a_redeploy_of_the_live_release_changes_nothing(host: FakeHost, clock: Clock) -> None:
    live = deploy(host, clock, "1.0.0")
    before = generations(host, live)
    clock.t += 60
    outcome = engine(host, clock).deploy(proxied_spec("1.0.0"))
    assert outcome.outcome == "unchanged" and outcome.release == live == host.serving
    assert generations(host, live) == before


def test_moving_from_the_in_place_layout_stops_the_old_services_once(
    host: FakeHost, clock: Clock
) -> None:
    clock.t += 60
    legacy = make_engine(host, clock).deploy(spec("1.0.0")).release  # before the proxy
    assert set(host.containers) == {"mongo", "backend", "frontend"}
    new = deploy(host, clock, "1.1.0")
    assert host.serving == new == host.current and set(host.containers) == {"mongo"}
    steps = host.steps
    assert steps.index("http") < steps.index("stop-legacy") < steps.index("proxy-up")
    clock.t += 60
    with pytest.raises(DeployError, match=r"from before the proxy .* deploy its commit again"):
        engine(host, clock).rollback(legacy)
    assert host.serving == new


def _commands_of_an_upgrade() -> int:
    host, clock = _fresh()
    deploy(host, clock, "1.0.0")
    host.steps.clear()
    deploy(host, clock, "1.1.0")
    return len(host.steps)


def _fresh() -> tuple[FakeHost, Clock]:
    from tests.unit.engine_kit import fake_host

    return fake_host(), Clock()


@pytest.mark.parametrize("at", range(_commands_of_an_upgrade()))
def test_a_deploy_dying_at_any_command_leaves_traffic_on_a_verified_release(at: int) -> None:
    host, clock = _fresh()
    old = deploy(host, clock, "1.0.0")
    host.steps.clear()
    host.served_log.clear()
    host.fail("any", drop=True, skip=at)
    with pytest.raises(DeployError):
        deploy(host, clock, "1.1.0")
    if host.serving != old:  # it switched before dying: only after verifying the new one
        first = host.served_log.index(host.serving) if host.serving in host.served_log else at
        assert "http" in host.steps[:first] and "db-url" in host.steps[:first]
    served_only(host, {old, host.serving})  # traffic only on the old or that verified one
    host.reconnect()
    holder = HostLock(host, clock=clock.wall).status()
    if holder is not None:  # died holding the lock: it goes stale, then is broken
        with pytest.raises(LockHeldError):
            deploy(host, clock, "1.1.0")
        clock.t = holder.until - clock.epoch + 1
        assert engine(host, clock).break_lock() is not None
    final = deploy(host, clock, "1.1.0")
    assert host.serving == final == host.current and set(host.projects) == {project(final)}


def test_upstreams_name_the_release_containers_or_nothing() -> None:
    site = Site(PROJECT, APP_DIR, proxied=True)
    routes = [Route("backend", 3001), Route("frontend", 3000)]
    text = upstreams(site, "20270115T080100Z-abc", routes)
    assert 'map $host $smoker_release { default "20270115T080100Z-abc"; }' in text
    assert (
        "upstream smoker_backend { server smart-smoker-dev-20270115t080100z-abc-backend-1:3001; }"
        in text
    )
    assert "server 127.0.0.1:9;" in upstreams(site, None, routes)


def _with_outside(version: str) -> ReleaseSpec:
    base = proxied_spec(version)
    checks = Checks(
        base.checks.http,
        base.checks.mongo_user_env,
        outside=(HttpCheck("https://dev.tailnet.test/api/health", json={"status": "ok"}),),
    )
    return ReleaseSpec(base.compose, base.env_files, checks, base.routes)


def test_checks_from_outside_run_after_the_switch_and_switch_back_when_they_fail(
    host: FakeHost, clock: Clock
) -> None:
    """The Tailscale URLs reach whatever the proxy serves: asked before the switch they would
    verify the old release."""
    seen: list[str | None] = []
    healthy = {"yes": True}

    def get(url: str) -> tuple[int, str]:
        seen.append(host.serving)
        return (200, '{"status": "ok"}') if healthy["yes"] else (503, '{"status": "error"}')

    def outside_engine() -> Engine:
        clock.t += 60
        return Engine(
            host,
            Site(PROJECT, APP_DIR, proxied=True),
            "tester@ci via test",
            Policy(verify_timeout=30, **POLICY),
            auth=lambda *_: None,
            get=get,
            clock=clock.wall,
            monotonic=clock.monotonic,
            sleep=clock.sleep,
        )

    first = outside_engine().deploy(_with_outside("1.0.0")).release
    assert seen and set(seen) == {first}
    seen.clear()
    healthy["yes"] = False
    with pytest.raises(DeployError, match=r"(?i)from outside: .*answered 503"):
        outside_engine().deploy(_with_outside("1.1.0"))
    assert seen and seen[0] != first  # the new release was asked once it served
    assert host.serving == first == host.current and set(host.projects) == {project(first)}


def test_status_names_the_release_the_proxy_serves_and_a_mismatch(
    host: FakeHost, clock: Clock
) -> None:
    first = deploy(host, clock, "1.0.0")
    status = engine(host, clock).status()
    assert status["proxy"] == first == status["release"] and status["findings"] == []
    host.fail("commit", drop=True)  # dies between the switch and the commit
    with pytest.raises(DeployError):
        deploy(host, clock, "1.1.0")
    host.reconnect()
    found = engine(host, clock).status()["findings"]
    assert any(f"current names {first}" in f and "pulumi up" in f for f in found), found


def test_a_first_release_whose_commit_fails_leaves_the_proxy_on_no_release(
    host: FakeHost, clock: Clock
) -> None:
    host.fail("commit")
    with pytest.raises(DeployError):
        deploy(host, clock, "1.0.0")
    assert host.serving == "none" and host.projects == {} and host.current is None


def test_a_failed_commit_after_the_move_keeps_the_verified_new_release_serving(
    host: FakeHost, clock: Clock
) -> None:
    """The in-place release's services were stopped to free the ports: it cannot come back."""
    clock.t += 60
    legacy = make_engine(host, clock).deploy(spec("1.0.0")).release
    host.fail("commit")
    with pytest.raises(DeployError, match="from before the proxy and cannot take traffic back"):
        deploy(host, clock, "1.1.0")
    assert host.serving not in (None, legacy) and host.serving is not None
    assert set(host.projects) == {project(host.serving)}  # not removed: it serves
