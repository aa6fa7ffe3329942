"""Tier 3: the STAND-IN service images run as the project's Compose project on a test guest.

The images (testbed/standins) are loaded into the guest's nested Docker engine; the compose file,
the env files and the mongodump/mongorestore calls are the project's own (rendering/app.py,
the backup script's ``in_mongo`` shape), driven over real SSH. What is checked: all three
services become healthy with ``up -d --wait``; /api/ready follows the MongoDB app user (503
before it exists, 200 after, 503 again after a password rotation until the backend gets the new
env); a dump/restore round trip inside the mongo container; data surviving a restart; the broken
backend variant; and that no secret shows up in any container log.

The reverse proxy (testbed/proxy: the real nginx 1.22.1 from Debian bookworm) runs on the harness
engine itself, in front of backend stand-in containers on a user-defined network, reached from
this process by container IP: it reports 1.22.1 and runs its workers as ``nginx``; a rewritten
upstreams file plus ``nginx -s reload`` switches backends without a failed request; WebSockets
(handshake, Engine.IO open packet, ping/pong) pass through it, and a ``docker stop`` of the
backend reaches the client as a close frame 1001, not a reset; a slow request in flight during
that stop completes with 200; the frontend stand-in drains its in-flight requests too.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shlex
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from config import GuestSpec, HealthcheckSettings, StackConfig
from rendering.app import (
    MONGO_ADMIN_USER,
    backend_env,
    compose_file,
    mongo_env,
    mongo_tools_config,
)
from testbed import wsclient
from testbed.harness import Engine, Guest
from testbed.harness.engine import LABEL
from testbed.proxy import NGINX_VERSION, build_proxy, package_version
from testbed.standins import StandinImages, build_standins
from tests.configs import evolve, parse, stack_raw
from tools.bench_cutover import in_place_compose

pytestmark = pytest.mark.tier3

VERSION = "1.0.0"
ENV_DIR = "/opt/smart-smoker-dev"  # a release keeps its env files next to compose.yaml
#: Test-only secrets: a fresh set per run, with characters that need quoting and URL-encoding.
ROOT_PW = f"root/{secrets.token_urlsafe(12)}@%:"
APP_PW = f"app+{secrets.token_urlsafe(12)}/?#"
VAPID_PRIVATE = f"vapid-{secrets.token_urlsafe(16)}"

CREATE_APP_USER = """
import sys
from mongo_standin.client import root_client
password = sys.stdin.read()
admin = root_client().admin
if admin.command("usersInfo", "smartsmoker")["users"]:
    admin.command("updateUser", "smartsmoker", pwd=password)
else:
    admin.command("createUser", "smartsmoker", pwd=password,
                  roles=[{"role": "readWrite", "db": "smartsmoker"}])
"""
SEED_READINGS = """
import sys
from mongo_standin.client import connect
app = connect("smartsmoker", sys.stdin.read())
app.smartsmoker.readings.delete_many({})
app.smartsmoker.readings.insert_many([{"i": i, "temp": 100 + i} for i in range(120)])
print(app.smartsmoker.readings.count_documents({}))
"""
COUNT = """
import sys
from mongo_standin.client import root_client
db, coll = sys.argv[1:3]
print(root_client()[db][coll].count_documents({}))
"""


def _poll(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.2
    while not probe():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


@dataclass
class Deployed:
    """The compose project running on the guest, and how to reach it."""

    guest: Guest
    cfg: StackConfig
    spec: GuestSpec
    images: StandinImages
    compose_path: str

    def compose(self, args: str, **kw: object):
        return self.guest.run(f"docker compose -f {self.compose_path} {args}", **kw)  # type: ignore[arg-type]

    def container(self, service: str) -> str:
        return self.compose(f"ps -q {service}").stdout.strip()

    def py_in_mongo(self, code: str, stdin: str = "", *args: str) -> str:
        """Run Python inside the mongo container (secrets only ever on stdin)."""
        argv = " ".join(shlex.quote(a) for a in args)
        cmd = f"docker exec -i {self.container('mongo')} python3 -c {shlex.quote(code)} {argv}"
        return self.guest.run(cmd, input=stdin.encode()).stdout.strip()

    def in_mongo(self, tool_args: str, tools_config: str, stdin_file: str | None = None,
                 stdout_file: str | None = None, check: bool = True):  # fmt: skip
        """The backup script's ``in_mongo``: config copied into the container's /tmp, removed."""
        cid = self.container("mongo")
        redirect = (f" < {stdin_file}" if stdin_file else "") + (
            f" > {stdout_file}" if stdout_file else ""
        )
        script = (
            f"docker exec -i {cid} sh -c 'umask 077; cat > /tmp/.smoker-tools.yaml' && "
            f"{{ docker exec -i {cid} {tool_args} --config=/tmp/.smoker-tools.yaml "
            f"--username={MONGO_ADMIN_USER} --authenticationDatabase=admin{redirect}; rc=$?; }}; "
            f"docker exec {cid} rm -f /tmp/.smoker-tools.yaml; exit $rc"
        )
        return self.guest.run(script, input=tools_config.encode(), check=check, timeout=120)

    def http(self, url: str) -> tuple[int, str]:
        out = self.guest.run(
            f"curl -sS -m 10 -o /tmp/.body -w '%{{http_code}}' {shlex.quote(url)}; cat /tmp/.body",
            check=False,
        ).stdout
        return int(out[:3] or 0), out[3:]

    def health(self, service: str) -> str:
        return self.guest.run(
            f"docker inspect -f '{{{{.State.Health.Status}}}}' {self.container(service)}",
            check=False,
        ).stdout.strip()


def _stack() -> tuple[StackConfig, GuestSpec]:
    """The dev stack's dev-cloud, with health checks fast enough for a test (shape unchanged)."""
    cfg = parse(stack_raw("dev"), "dev")
    fast = HealthcheckSettings(
        interval_seconds=2, timeout_seconds=10, retries=3, start_period_seconds=60
    )
    cfg = evolve(cfg, app=evolve(cfg.app, healthcheck=fast))
    return cfg, cfg.guest("dev-cloud")


@pytest.fixture(scope="module")
def standins(engine: Engine, request: pytest.FixtureRequest) -> StandinImages:
    capman = request.config.pluginmanager.getplugin("capturemanager")
    ctx = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
    with ctx:
        return build_standins(engine, versions=(VERSION,), broken_versions=(VERSION,))


@pytest.fixture(scope="module")
def deployed(guest_factory: Callable[..., Guest], standins: StandinImages) -> Iterator[Deployed]:
    guest = guest_factory(hostname="standins-guest")
    for ref in standins.refs():
        guest.load_image(ref)
    cfg, spec = _stack()
    app_dir = cfg.baseline.app_dir
    d = Deployed(guest, cfg, spec, standins, f"{app_dir}/compose.yaml")
    # the services in one project with their own ports (the stand-ins, not the cutover, on test)
    compose = in_place_compose(compose_file(cfg, spec, standins.app_images(VERSION)))
    guest.run(f"install -d -m 0755 {app_dir} && cat > {d.compose_path}", input=compose.encode())
    for name, text in (
        ("mongo.env", mongo_env(ROOT_PW)),
        ("backend.env", backend_env(cfg.app, APP_PW, VAPID_PRIVATE)),
    ):
        guest.run(
            f"install -d -m 0700 {ENV_DIR} && umask 077 && cat > {ENV_DIR}/{name}",
            input=text.encode(),
        )
    d.compose("config -q")
    d.compose("up -d --wait --wait-timeout 180", timeout=300)
    yield d
    d.compose("down -t 5", check=False, timeout=120)


@pytest.fixture(scope="module")
def app_user(deployed: Deployed) -> Deployed:
    deployed.py_in_mongo(CREATE_APP_USER, APP_PW)
    return deployed


def test_all_services_are_healthy_and_named_stand_ins(deployed: Deployed) -> None:
    rows = [json.loads(line) for line in deployed.compose("ps --format json").stdout.splitlines()]
    rows = [r for row in rows for r in (row if isinstance(row, list) else [row])]
    assert {r["Service"]: r["Health"] for r in rows} == {
        "mongo": "healthy",
        "backend": "healthy",
        "frontend": "healthy",
    }
    cid = deployed.container("mongo")
    version = deployed.guest.run(f"docker exec {cid} mongod --version").stdout
    assert version.splitlines()[0] == "db version v7.0.14-standin"
    ping = deployed.guest.run(
        f"docker exec {cid} mongosh --quiet --eval \"db.adminCommand('ping').ok\""
    )
    assert ping.stdout == "1\n"
    assert deployed.guest.run(
        f"docker exec {cid} mongosh --quiet --eval 'db.version()'"
    ).stdout == ("7.0.14\n")


def test_frontend_serves_the_version_and_proxies_the_api(deployed: Deployed) -> None:
    status, body = deployed.http("http://127.0.0.1:80/")
    assert status == 200 and VERSION in body
    status, body = deployed.http("http://127.0.0.1:80/api/health")
    assert status == 200 and json.loads(body) == {"status": "ok", "version": VERSION}
    status, body = deployed.http("http://127.0.0.1:3001/api/health")
    assert status == 200
    status, body = deployed.http("http://127.0.0.1:80/socket.io/?EIO=4&transport=polling")
    assert status == 200 and body.startswith("0{")


def test_ready_follows_the_application_user(deployed: Deployed) -> None:
    exists = deployed.py_in_mongo(
        "from mongo_standin.client import root_client; "
        "print(len(root_client().admin.command('usersInfo', 'smartsmoker')['users']))"
    )
    if exists == "0":
        status, body = deployed.http("http://127.0.0.1:80/api/ready")
        assert status == 503 and json.loads(body)["reason"] == "AuthenticationFailed"
    deployed.py_in_mongo(CREATE_APP_USER, APP_PW)
    _poll(
        lambda: deployed.http("http://127.0.0.1:80/api/ready")[0] == 200,
        60,
        "/api/ready to answer 200 through the frontend",
    )


def test_dump_and_restore_inside_the_mongo_container(app_user: Deployed) -> None:
    d = app_user
    assert d.py_in_mongo(SEED_READINGS, APP_PW) == "120"
    tools = mongo_tools_config(ROOT_PW)
    archive = "/root/standin-backup.archive.gz"
    dump = d.in_mongo("mongodump --archive --gzip", tools, stdout_file=archive)
    assert "done dumping smartsmoker.readings (120 documents)" in dump.stderr
    assert "done dumping admin.system.users (2 documents)" in dump.stderr
    d.guest.run(f"test -s {archive} && gzip -t {archive}")
    dry = d.in_mongo("mongorestore --archive --gzip --dryRun", tools, stdin_file=archive)
    assert "dry run completed" in dry.stderr

    restore = d.in_mongo(
        "mongorestore --archive --gzip --drop --nsInclude='smartsmoker.*' "
        "--nsFrom='smartsmoker.*' --nsTo='drill.*'",
        tools,
        stdin_file=archive,
    )
    assert "120 document(s) restored successfully" in restore.stderr
    assert d.py_in_mongo(COUNT, "", "drill", "readings") == "120"

    truncated = "/root/standin-truncated.archive.gz"
    d.guest.run(f"head -c $(( $(stat -c %s {archive}) / 2 )) {archive} > {truncated}")
    bad = d.in_mongo(
        "mongorestore --archive --gzip --dryRun", tools, stdin_file=truncated, check=False
    )
    assert bad.returncode != 0 and "Failed:" in bad.stderr

    wrong = d.in_mongo(
        "mongodump --archive --gzip",
        mongo_tools_config("not-the-password"),
        stdout_file="/dev/null",
        check=False,
    )
    assert wrong.returncode != 0 and "AuthenticationFailed" in wrong.stderr
    assert d.guest.run(f"docker exec {d.container('mongo')} ls -A /tmp").stdout == ""


def test_mongo_data_survives_a_restart(app_user: Deployed) -> None:
    d = app_user
    d.py_in_mongo(SEED_READINGS, APP_PW)
    data_dir = f"{d.cfg.baseline.app_dir}/data/mongo"
    files = d.guest.run(f"ls {data_dir}").stdout.split()
    assert {"admin.json", "smartsmoker.json"} <= set(files)
    assert ROOT_PW not in d.guest.run(f"cat {data_dir}/admin.json").stdout
    d.compose("restart mongo", timeout=120)
    _poll(lambda: d.health("mongo") == "healthy", 90, "mongo to be healthy after a restart")
    assert d.py_in_mongo(COUNT, "", "smartsmoker", "readings") == "120"
    _poll(lambda: d.http("http://127.0.0.1:80/api/ready")[0] == 200, 60, "ready after restart")


def test_password_rotation_needs_the_new_env(app_user: Deployed) -> None:
    d = app_user
    rotated = f"rotated-{secrets.token_urlsafe(10)}"
    d.py_in_mongo(CREATE_APP_USER, rotated)  # updateUser: the old password stops working
    _poll(lambda: d.http("http://127.0.0.1:3001/api/ready")[0] == 503, 30, "ready to fail")
    d.guest.run(
        f"umask 077 && cat > {ENV_DIR}/backend.env",
        input=backend_env(d.cfg.app, rotated, VAPID_PRIVATE).encode(),
    )
    d.compose("up -d --wait --wait-timeout 120", timeout=200)
    _poll(lambda: d.http("http://127.0.0.1:80/api/ready")[0] == 200, 60, "ready with new env")
    d.py_in_mongo(CREATE_APP_USER, APP_PW)  # back to the fixture's password
    d.guest.run(
        f"umask 077 && cat > {ENV_DIR}/backend.env",
        input=backend_env(d.cfg.app, APP_PW, VAPID_PRIVATE).encode(),
    )
    d.compose("up -d --wait --wait-timeout 120", timeout=200)


def test_broken_backend_variant_fails_its_health_check(deployed: Deployed) -> None:
    good = deployed.images.backend[VERSION]
    broken = deployed.images.backend_broken[VERSION]
    ids = deployed.guest.run(f"docker image inspect -f '{{{{.Id}}}}' {good} {broken}").stdout
    assert len(set(ids.split())) == 2
    name = f"broken-{secrets.token_hex(4)}"
    deployed.guest.run(f"docker run -d --name {name} -p 127.0.0.1:3901:3001 {broken}")
    try:
        _poll(lambda: deployed.http("http://127.0.0.1:3901/api/health")[0] != 0, 30, "broken")
        status, body = deployed.http("http://127.0.0.1:3901/api/health")
        assert status == 503 and json.loads(body)["version"] == VERSION
    finally:
        deployed.guest.run(f"docker rm -f {name}", check=False)


def test_no_secret_reaches_a_log(deployed: Deployed) -> None:
    logs = deployed.compose("logs --no-color", timeout=60)
    text = logs.stdout + logs.stderr
    assert text.strip()
    for secret in (ROOT_PW, APP_PW, VAPID_PRIVATE):
        assert secret not in text


# -- the reverse proxy (real nginx 1.22.1) in front of stand-in backends --------------------------

#: A minimal proxy configuration of the cutover's shape: the upstreams live in an included file
#: that a release rewrites before ``nginx -s reload``.
PROXY_CONF = """\
user nginx;
worker_processes 2;
error_log /var/log/nginx/error.log notice;
pid /var/run/nginx.pid;
events { worker_connections 256; }
http {
    access_log /var/log/nginx/access.log;
    map $http_upgrade $connection_upgrade { default upgrade; '' close; }
    include /etc/nginx/smoker/upstreams.conf;
    server {
        listen 80;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 60s;
        }
    }
}
"""
SOCKET_PATH = "/socket.io/?EIO=4&transport=websocket"


def _get(url: str, timeout: float = 10) -> tuple[int, str]:
    """(status, body) of a GET from this process; status 0 when there is no HTTP answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return 0, ""


@dataclass
class ProxyBed:
    """nginx and backend stand-ins on one network of the harness engine (cleaned up by ID)."""

    engine: Engine
    images: StandinImages
    proxy_image: str
    conf_dir: Path
    network: str = ""
    proxy: str = ""
    containers: list[str] = field(default_factory=list)

    def ip(self, container: str) -> str:
        fmt = f"{{{{(index .NetworkSettings.Networks {json.dumps(self.network)}).IPAddress}}}}"
        return self.engine.docker_text("inspect", "-f", fmt, container)

    def run(self, name: str, *argv: str) -> str:
        self.engine.docker(
            "run", "-d", "--name", name, "--network", self.network,
            "--label", f"{LABEL}={self.engine.ident}", *argv,
        )  # fmt: skip
        self.containers.append(name)
        return name

    def backend(self, version: str) -> str:
        """A backend stand-in answering as ``version`` (healthy, no database)."""
        name = f"be-{version.replace('.', '-')}-{secrets.token_hex(3)}"
        self.run(name, "-e", f"BUILD_VERSION={version}", self.images.backend[VERSION])
        url = f"http://{self.ip(name)}:3001/api/health"
        _poll(lambda: _get(url, 2)[0] == 200, 30, f"backend {name}")
        return name

    def route_to(self, backend: str) -> None:
        """Rewrite the included upstreams file (not yet reloaded)."""
        (self.conf_dir / "upstreams.conf").write_text(
            f"upstream backend {{ server {backend}:3001; }}\n"
        )

    def reload(self) -> None:
        self.engine.docker("exec", self.proxy, "nginx", "-s", "reload")

    @property
    def url(self) -> str:
        return f"http://{self.ip(self.proxy)}:80"

    def version(self) -> str:
        status, body = _get(f"{self.url}/api/version", 5)
        return str(json.loads(body)["version"]) if status == 200 else f"HTTP {status}"

    def stop(self, container: str, timeout: int = 20) -> threading.Thread:
        """``docker stop`` in the background (it blocks until the container exits)."""
        thread = threading.Thread(
            target=self.engine.docker, args=("stop", "-t", str(timeout), container),
            kwargs={"check": False, "timeout": timeout + 30},
        )  # fmt: skip
        thread.start()
        return thread

    def exit_code(self, container: str) -> int:
        return int(self.engine.docker_text("inspect", "-f", "{{.State.ExitCode}}", container))

    def logs(self, container: str) -> str:
        result = self.engine.docker("logs", container, check=False)
        return (result.stdout + result.stderr).decode(errors="replace")


@pytest.fixture(scope="module")
def proxy_image(engine: Engine, request: pytest.FixtureRequest) -> str:
    capman = request.config.pluginmanager.getplugin("capturemanager")
    ctx = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
    with ctx:
        return build_proxy(engine)


@pytest.fixture
def bed(
    engine: Engine, standins: StandinImages, proxy_image: str, tmp_path: Path
) -> Iterator[ProxyBed]:
    """nginx routing to a backend stand-in ``1.0.0`` (``bed.containers[0]``)."""
    conf_dir = tmp_path / "smoker"
    conf_dir.mkdir()
    (tmp_path / "nginx.conf").write_text(PROXY_CONF)
    b = ProxyBed(engine, standins, proxy_image, conf_dir)
    b.network = f"proxybed-{secrets.token_hex(4)}"
    engine.docker("network", "create", "--label", f"{LABEL}={engine.ident}", b.network)
    try:
        first = b.backend("1.0.0")
        b.route_to(first)
        b.proxy = b.run(
            f"proxy-{secrets.token_hex(3)}",
            "-v", f"{tmp_path / 'nginx.conf'}:/etc/nginx/nginx.conf:ro",
            "-v", f"{conf_dir}:/etc/nginx/smoker:ro",
            proxy_image,
        )  # fmt: skip
        _poll(lambda: b.version() == "1.0.0", 30, "nginx to proxy to the backend")
        yield b
    finally:
        for name in reversed(b.containers):
            engine.docker("rm", "-f", name, check=False)
        engine.docker("network", "rm", b.network, check=False)


def test_proxy_image_is_nginx_1_22_1_from_bookworm(engine: Engine, proxy_image: str) -> None:
    out = engine.docker("run", "--rm", "--network", "none", proxy_image, "nginx", "-v")
    assert out.stderr.decode().strip() == f"nginx version: nginx/{NGINX_VERSION}"
    assert package_version(engine, proxy_image).startswith("nginx 1.22.1-9+deb12u")
    fmt = "{{json .Config.StopSignal}} {{json .Config.Cmd}} {{json .Config.Entrypoint}}"
    assert engine.docker_text("image", "inspect", "-f", fmt, proxy_image) == (
        '"SIGQUIT" ["nginx","-g","daemon off;"] null'
    )
    listing = engine.docker_text(
        "run", "--rm", "--network", "none", proxy_image, "sh", "-c",
        "id nginx; ls -A /etc/nginx/conf.d /etc/nginx/sites-enabled; "
        "command -v curl wget python3 || true",
    )  # fmt: skip
    assert listing.splitlines() == [
        "uid=101(nginx) gid=101(nginx) groups=101(nginx)",
        "/etc/nginx/conf.d:",
        "",
        "/etc/nginx/sites-enabled:",
    ]


def test_proxy_runs_its_workers_as_nginx(bed: ProxyBed) -> None:
    procs = bed.engine.docker_text(
        "exec", bed.proxy, "sh", "-c",
        "for p in /proc/[0-9]*; do echo \"$(stat -c %U $p) $(tr '\\0' ' ' < $p/cmdline)\"; done",
    )  # fmt: skip
    lines = [line.strip() for line in procs.splitlines() if "nginx:" in line]
    assert sum(line.startswith("root nginx: master process") for line in lines) == 1
    assert sum(line == "nginx nginx: worker process" for line in lines) == 2


def test_reload_switches_the_upstream_without_a_failed_request(bed: ProxyBed) -> None:
    second = bed.backend("2.0.0")
    assert bed.version() == "1.0.0"
    failures: list[int] = []
    served = 0
    done = threading.Event()

    def hammer() -> None:
        nonlocal served
        while not done.is_set():
            status, _ = _get(f"{bed.url}/api/health", 5)
            if status != 200:
                failures.append(status)
            served += 1

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        # Counted in requests, not seconds: a slow machine serves fewer per second.
        _poll(lambda: served >= 10, 30, "the load to reach the proxy before the reload")
        bed.route_to(second)
        bed.reload()
        _poll(lambda: bed.version() == "2.0.0", 15, "the reload to route to the new backend")
        switched = served
        _poll(lambda: served >= switched + 10, 30, "the load to go on after the reload")
    finally:
        done.set()
        thread.join()
    assert failures == []
    assert all(bed.version() == "2.0.0" for _ in range(10))


def _open_socket(bed: ProxyBed) -> wsclient.WebSocket:
    ws = wsclient.connect(bed.ip(bed.proxy), 80, SOCKET_PATH)
    opened = ws.recv_frame()
    assert opened.opcode == wsclient.OP_TEXT and opened.text.startswith("0{")
    packet = json.loads(opened.text[1:])
    assert packet["upgrades"] == [] and packet["pingInterval"] == 25000 and packet["sid"]
    return ws


def test_websocket_through_the_proxy_closes_with_1001_on_stop(bed: ProxyBed) -> None:
    backend = bed.containers[0]
    ws = _open_socket(bed)
    ws.send_text("2")
    assert ws.recv_text() == "3"
    ws.send_text("hello")
    assert ws.recv_text() == "4echo:1.0.0:hello"
    other = _open_socket(bed)
    assert other.close() == wsclient.Frame(wsclient.OP_CLOSE, b"\x03\xe8")  # client-initiated

    stopping = bed.stop(backend)
    frame = ws.recv_frame(timeout=20)
    stopping.join()
    assert frame.opcode == wsclient.OP_CLOSE and frame.close_code == 1001
    assert ws.closed_cleanly
    with pytest.raises(wsclient.ClosedError):
        ws.recv_frame()
    assert bed.exit_code(backend) == 0
    logs = bed.logs(backend)
    assert "shutdown: sent close 1001 to 1 websocket(s), 1 closed cleanly" in logs
    assert "shutdown: exit 0" in logs


def test_slow_request_in_flight_during_a_stop_completes(bed: ProxyBed) -> None:
    backend = bed.containers[0]
    result: list[tuple[int, str]] = []
    request = threading.Thread(
        target=lambda: result.append(_get(f"{bed.url}/api/slow?ms=3000", 30))
    )
    request.start()
    time.sleep(0.7)
    t0 = time.monotonic()
    bed.stop(backend).join()
    request.join()
    assert result and result[0][0] == 200, result
    assert json.loads(result[0][1]) == {"slept_ms": 3000, "version": "1.0.0"}
    assert time.monotonic() - t0 < 10  # drained, not killed after the stop timeout
    assert bed.exit_code(backend) == 0
    assert "1 in-flight request(s) finished, 0 abandoned" in bed.logs(backend)
    # (A request now would hang until proxy_connect_timeout: the stopped container's address
    # drops packets, nothing refuses them. The cutover switches upstreams BEFORE stopping.)


def test_frontend_drains_in_flight_requests_on_stop(bed: ProxyBed) -> None:
    backend = bed.containers[0]
    frontend = bed.run(
        f"fe-{secrets.token_hex(3)}", "-e", f"BACKEND_URL=http://{backend}:3001",
        bed.images.frontend[VERSION],
    )  # fmt: skip
    url = f"http://{bed.ip(frontend)}:3000"
    _poll(lambda: _get(f"{url}/api/health", 2)[0] == 200, 30, "the frontend stand-in")
    result: list[tuple[int, str]] = []
    request = threading.Thread(target=lambda: result.append(_get(f"{url}/api/slow?ms=2000", 30)))
    request.start()
    time.sleep(0.5)
    bed.stop(frontend).join()
    request.join()
    assert result and result[0][0] == 200, result
    assert bed.exit_code(frontend) == 0
    assert "1 in-flight request(s) finished, 0 abandoned" in bed.logs(frontend)
