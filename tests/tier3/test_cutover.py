"""Tier 3: zero-downtime cutover behind the guest's nginx proxy (issue 14), on a real guest.

The guest runs the REAL proxy software (nginx 1.22.1, `testbed.proxy`), pulled by digest from the
registry stand-in as production pulls the official image; releases N, N+1 and N+2 (broken) are
deployed through the Release provider class while a bounded probe loop runs INSIDE the guest
against the loopback ports Tailscale serve targets (`tests/tier3/probe.py`). The scenarios run in
order on one guest, each starting from the state the previous one left.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from components.mongo_users import MongoUsersProvider
from components.release import release_engine
from deploy.engine import DeployError
from deploy.lock import LockHeldError
from rendering import app
from rendering.files import app_files_plan
from testbed.harness import Guest
from testbed.harness.engine import poll_until
from tests.configs import evolve
from tests.tier3.app_env import SECRETS, user_props
from tests.tier3.baseline_env import Baselined, apply_plan, guest_stack_config, plan, served_crun
from tests.tier3.probe import BACKEND, FRONTEND, Traffic, probing, traffic
from tests.tier3.release_env import (
    N1,
    N2,
    N,
    Releases,
    deploy,
    prepare_guest,
    release_config,
    release_props,
)

pytestmark = pytest.mark.tier3

PROJECT = "smart-smoker-dev"
PROXY_PROJECT = f"{PROJECT}-proxy"
APP_DIR = "/opt/smart-smoker-dev"
LEDGER = "/var/log/smart-smoker/deployments.jsonl"
DRAIN_SECONDS = 3
FAILING_WINDOW = 5
VERIFY_TIMEOUT = 90  # release_config's
LEASE = 5  # the kill tests' lock lease (seconds)
ROOT = Path(__file__).resolve().parents[2]
NUMBERS: dict[str, Any] = {}  # measured, printed at the end (-s) for the report and the bench


@dataclass
class Cut:
    env: Baselined
    releases: Releases
    proxy_image: str
    state: dict[str, Any] = field(default_factory=dict)  # the Release state Pulumi keeps
    ids: dict[str, str] = field(default_factory=dict)  # version -> release id

    @property
    def guest(self) -> Guest:
        return self.env.guest

    def cfg(self, version: str) -> Any:
        cfg = release_config(self.env.cfg, self.releases, version)
        deploy_ = evolve(
            cfg.app.deploy, drain_seconds=DRAIN_SECONDS, failing_window_seconds=FAILING_WINDOW
        )
        proxy = evolve(cfg.app.proxy, image=self.proxy_image)
        return evolve(cfg, app=evolve(cfg.app, deploy=deploy_, proxy=proxy))

    def props(self, version: str, **overrides: Any) -> dict[str, Any]:
        return release_props(self.env, self.cfg(version), SECRETS, **overrides)

    def run(self, cmd: str, **kwargs: Any) -> Any:
        return self.guest.run(cmd, **kwargs)

    def current(self) -> str:
        return self.run(f"readlink {APP_DIR}/current").stdout.strip().rsplit("/", 1)[-1]

    def served(self) -> str:
        return self.run("curl -s -m 2 http://127.0.0.1:3099/release", check=False).stdout.strip()

    def containers(self) -> list[dict[str, str]]:
        """Every Compose container on the guest: project, service, id, state, start time."""
        out = self.run(
            "docker ps -aq --filter label=com.docker.compose.project | xargs -r docker inspect -f "
            '\'{{index .Config.Labels "com.docker.compose.project"}} '
            '{{index .Config.Labels "com.docker.compose.service"}} '
            "{{.Id}} {{.State.Status}} {{.State.StartedAt}} "
            '{{with index .State "Health"}}{{.Status}}{{else}}none{{end}}\''
        ).stdout
        keys = ("project", "service", "id", "state", "started", "health")
        return [dict(zip(keys, line.split(), strict=False)) for line in out.splitlines() if line]

    def release_projects(self) -> set[str]:
        return {
            c["project"] for c in self.containers() if c["project"] not in (PROJECT, PROXY_PROJECT)
        }

    def project_of(self, release_id: str) -> str:
        return f"{PROJECT}-{release_id.lower()}"

    def app_containers(self, release_id: str) -> dict[str, tuple[str, str]]:
        """service -> (id, StartedAt) of a release's containers."""
        project = self.project_of(release_id)
        return {
            c["service"]: (c["id"], c["started"])
            for c in self.containers()
            if c["project"] == project
        }

    def mongo(self) -> tuple[str, str]:
        [row] = [c for c in self.containers() if c["project"] == PROJECT]
        assert row["service"] == "mongo", row
        return row["id"], row["started"]

    def ledger(self) -> list[dict[str, Any]]:
        out = self.run(f"cat {LEDGER}").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def cut(guest_factory: Callable[..., Guest], releases: Releases) -> Iterator[Cut]:
    guest = guest_factory(hostname="cutover-guest")
    with served_crun() as crun:
        cfg, spec = guest_stack_config(guest, crun)
        env = Baselined(guest, cfg, spec, apply_plan(guest, plan(cfg, spec)))
    prepare_guest(env, releases)
    site = Cut(env, releases, releases.proxy_image())
    apply_plan(guest, app_files_plan(site.cfg(N), spec, SECRETS))
    MongoUsersProvider().create(user_props(env, SECRETS))
    yield site
    print("\ncutover numbers:", json.dumps(NUMBERS, indent=1))


def no_failures(t: Traffic, minimum: int = 20) -> None:
    assert t.failed() == {BACKEND: 0, FRONTEND: 0}, t.counts()
    assert min(t.ok().values()) >= minimum, t.counts()


def record(name: str, t: Traffic, **extra: Any) -> None:
    NUMBERS[name] = {
        "probes": {
            url: f"{r['ok']} ok / {r['failed']} failed" for url, r in t.summary["targets"].items()
        },
        "answers": {url: r["answers"] for url, r in t.summary["targets"].items()},
        **extra,
    }


def test_1_first_release_behind_the_proxy_and_a_bounded_probe_loop(cut: Cut) -> None:
    cut.state = deploy(cut.props(N))
    cut.ids[N] = cut.state["releaseId"]
    assert cut.current() == cut.ids[N] == cut.served()
    assert cut.release_projects() == {cut.project_of(cut.ids[N])}
    proxy = cut.run(
        f"docker inspect -f '{{{{.Config.Image}}}}' {PROXY_PROJECT}-proxy-1"
    ).stdout.strip()
    assert proxy == cut.proxy_image  # pulled by digest from the registry, as in production
    assert cut.run(f"docker exec {PROXY_PROJECT}-proxy-1 nginx -v 2>&1").stdout.strip() == (
        "nginx version: nginx/1.22.1"
    )
    # count-limited: stops by itself after 20 probes per target
    counted = traffic(cut.guest, "counted", max_count=20).start().wait(timeout=20)
    assert [r["ok"] for r in counted["targets"].values()] == [20, 20], counted
    # time-limited: stops by itself after 1 s (about 20 probes at 50 ms)
    started = time.monotonic()
    timed = traffic(cut.guest, "timed", max_seconds=1).start().wait(timeout=20)
    assert time.monotonic() - started < 10
    for result in timed["targets"].values():
        assert result["failed"] == 0 and 5 <= result["ok"] <= 21, timed
    assert timed["targets"][BACKEND]["answers"][0][1] == N


def test_2_upgrade_n_to_n1_without_a_failed_request(cut: Cut) -> None:
    mongo = cut.mongo()
    with probing(cut.guest, "upgrade") as t:
        cut.state = deploy(cut.props(N1), cut.state)
    cut.ids[N1] = cut.state["releaseId"]
    record("upgrade N->N1", t, timings=cut.ledger()[-1]["timings"])
    no_failures(t)
    answers = [v for _, v in t.summary["targets"][BACKEND]["answers"]]
    assert answers == [N, N1], answers  # one switch, never back
    assert cut.current() == cut.ids[N1] == cut.served()
    assert cut.release_projects() == {cut.project_of(cut.ids[N1])}
    assert cut.mongo() == mongo  # MongoDB neither recreated nor restarted
    assert cut.ledger()[-1]["outcome"] == "deployed"


def test_3_broken_n2_never_takes_traffic(cut: Cut) -> None:
    old = cut.app_containers(cut.ids[N1])
    assert set(old) == {"backend", "frontend"}
    with probing(cut.guest, "broken") as t, pytest.raises(DeployError) as raised:
        deploy(cut.props(N2), cut.state)
    record("broken N2", t, timings=cut.ledger()[-1]["timings"])
    no_failures(t)
    assert "unhealthy" in str(raised.value) or "not verified" in str(raised.value)
    assert cut.app_containers(cut.ids[N1]) == old  # never restarted: same ids, same StartedAt
    assert cut.release_projects() == {cut.project_of(cut.ids[N1])}  # N2's removed
    assert cut.current() == cut.ids[N1] == cut.served()
    last = cut.ledger()[-1]
    assert last["outcome"] == "rolled-back" and last["rollback"]["outcome"] == "verified"


def test_4_up_and_failing_fails_within_the_failing_window(cut: Cut) -> None:
    props = cut.props(N1, revision="wrong-db-password")
    env = props["envFiles"][app.BACKEND_ENV_FILE]
    password = quote(SECRETS.mongo_app_password, safe="")
    assert password in env
    props["envFiles"] = {
        **props["envFiles"],
        app.BACKEND_ENV_FILE: env.replace(password, "wrong-password"),
    }
    old = cut.app_containers(cut.ids[N1])
    with probing(cut.guest, "failing") as t, pytest.raises(DeployError) as raised:
        deploy(props, cut.state)
    last = cut.ledger()[-1]
    verify = last["timings"]["verify"]
    record("up-and-failing", t, timings=last["timings"])
    no_failures(t)
    assert f"kept failing for {FAILING_WINDOW} s" in str(raised.value), raised.value
    assert FAILING_WINDOW <= verify < FAILING_WINDOW + 10 < VERIFY_TIMEOUT / 3, last["timings"]
    assert cut.app_containers(cut.ids[N1]) == old
    assert cut.release_projects() == {cut.project_of(cut.ids[N1])}
    assert cut.current() == cut.ids[N1] == cut.served()


def test_5_rollback_n1_to_n_without_a_failed_request(cut: Cut) -> None:
    with probing(cut.guest, "rollback") as t, release_engine(cut.state, "tier3") as eng:
        outcome = eng.rollback()
    record("rollback N1->N", t, timings=outcome.timings)
    no_failures(t)
    assert outcome.release == cut.ids[N] == cut.current() == cut.served()
    assert cut.release_projects() == {cut.project_of(cut.ids[N])}
    answers = [v for _, v in t.summary["targets"][BACKEND]["answers"]]
    assert answers == [N1, N], answers


def test_6_websocket_closes_once_cleanly_and_slow_requests_finish(cut: Cut) -> None:
    # the live release is N (test 5); deploying N1 again is an upgrade with a new release id
    slow = {"url": "http://127.0.0.1:3001/api/slow?ms=2000", "every": 0.25, "timeout": 15}
    with probing(cut.guest, "ws", ws=True, slow=slow) as t:
        cut.state = deploy(cut.props(N1, revision="ws"), cut.state)
        switched = cut.served()
        # a new WebSocket right after the deploy lands on the new release
        fresh = cut.run(
            "cd /root/tier3-traffic && python3 -c 'import wsclient; "
            'ws = wsclient.connect("127.0.0.1", 3001, "/socket.io/?EIO=4&transport=websocket"); '
            'ws.recv_frame(timeout=5); ws.send_text("hi"); print(ws.recv_text(timeout=5)); '
            "ws.close()'"
        ).stdout.strip()
        time.sleep(1)  # the reconnect of the closed socket
    assert switched == cut.state["releaseId"] == cut.current()
    no_failures(t)
    assert fresh == f"4echo:{N1}:hi"
    ws = t.summary["ws"]
    NUMBERS["websocket"] = ws
    assert ws.get("first_version") == N, ws
    closes = [f for f in ws["frames"] if f[1] == 8]
    assert [f[2] for f in closes] == [1001], ws  # exactly one close frame, going away
    assert "lost" not in ws and ws.get("closed_cleanly") is True, ws  # no reset
    assert ws.get("reconnected_version") == N1, ws
    requests = t.summary["slow"]
    assert requests and all(r[2] == 200 for r in requests), requests
    switch_at = next(at for at, v in t.summary["targets"][BACKEND]["answers"] if v == N1)
    across = [r for r in requests if r[3] == N and r[0] < switch_at < r[1]]
    NUMBERS["slow requests"] = {"total": len(requests), "across the switch": len(across)}
    assert across, (switch_at, requests)  # started on N before the switch, finished after: 200


DEPLOY_PROGRAM = """
import json, sys
from tests.tier3.release_env import deploy
props, olds = json.load(open(sys.argv[1]))
deploy(props, olds)
"""


def start_deploy(cut: Cut, props: dict[str, Any], tmp: Path) -> subprocess.Popen[bytes]:
    path = tmp / "props.json"
    path.write_text(json.dumps([props, cut.state]))
    path.chmod(0o600)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", DEPLOY_PROGRAM, str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def kill_and_recover(
    cut: Cut, props: dict[str, Any], tmp: Path, when: Callable[[], bool], what: str
) -> None:
    before = cut.served()
    with probing(cut.guest, "kill-" + what.replace(" ", "-"), ws=True) as t:
        proc = start_deploy(cut, props, tmp)
        try:
            poll_until(lambda: proc.poll() is not None or when(), timeout=120, what=what)
            assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
            proc.kill()  # SIGKILL: no finalizer, no lock release
        finally:
            proc.wait()
        served = cut.served()
        # the proxy names a verified release: the live one, or the new one once it switched
        assert served == before or (served == _newest_release(cut) and "switch" in what), served
        with pytest.raises(LockHeldError) as raised:
            deploy(props, cut.state)
        message = str(raised.value)
        stale = re.search(r"stale at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)", message)
        assert stale, message
        stale_at = time.mktime(time.strptime(stale[1], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        wait = stale_at - time.time()
        assert 0 < wait <= LEASE + 2, (message, wait)
        time.sleep(max(0.0, wait) + 1.2)
        with release_engine(props, "tier3") as eng:
            broken = eng.break_lock()
        assert broken is not None
        cut.state = deploy(props, cut.state)
    NUMBERS[f"kill {what}"] = {"served after the kill": served, "before": before}
    no_failures(t)
    assert cut.served() == cut.state["releaseId"] == cut.current()
    assert cut.release_projects() == {cut.project_of(cut.state["releaseId"])}
    assert cut.ledger()[-1]["outcome"] in ("deployed", "unchanged")


def _newest_release(cut: Cut) -> str:
    return cut.run(f"ls {APP_DIR}/releases | tail -1").stdout.strip()


def test_7a_kill_while_the_new_release_starts(cut: Cut, tmp_path: Path) -> None:
    live = cut.state["releaseId"]
    props = cut.props(N, revision="kill-a", lockLeaseSeconds=LEASE)

    def new_containers_healthy() -> bool:
        rows = [
            c
            for c in cut.containers()
            if c["project"] not in (PROJECT, PROXY_PROJECT, cut.project_of(live))
        ]
        return len(rows) == 2 and all(c.get("health") == "healthy" for c in rows)

    kill_and_recover(cut, props, tmp_path, new_containers_healthy, "while starting")


def test_7b_kill_after_the_switch_before_the_drain_ends(cut: Cut, tmp_path: Path) -> None:
    live = cut.state["releaseId"]
    props = cut.props(N1, revision="kill-b", lockLeaseSeconds=LEASE)

    def switched() -> bool:
        now = cut.served()
        return bool(now) and now not in (live, "none")

    kill_and_recover(cut, props, tmp_path, switched, "after the switch")
