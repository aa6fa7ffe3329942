"""Tier 3: the physical smoker's update agent (issue 16) on a test guest playing the Pi.

One systemd test guest stands in for the Raspberry Pi (`kind: host` guest `smoker` of the prod
stack). The agent is installed by its real install plan (`rendering.agent.agent_plan`), run by
its real units (`smart-smoker-agent.service` and `.timer`), and converges the device's Compose
project (`rendering.app.device_compose`) with the deploy engine over `LocalTransport`: release N
by one run, N+1 published while the guest is stopped and applied at boot by the timer alone, a
broken N+2 rolled back locally and not retried, two runs at once, the serial device passed
through to the device service, the production `https://` source (the publisher's tailnet name)
and the push by `DesiredRelease` (the provider class) with the guest as publisher and device.

Stand-ins, and what they change:

- The agent's `--source` is a **file path on the guest** in tests 1-6 and 8: the same path the
  publisher holds the document at (`layout.published_release`), written by the test (over SSH,
  or with `docker cp` into the stopped guest) or by `DesiredRelease`. Test 7 uses the production
  `https://` URL instead: the tailnet name resolves (guest's `/etc/hosts`) to a TLS file server
  on the test host with a certificate from a test CA the guest trusts, standing in for the
  cloud guest's `tailscale serve` (whose configuration is tested elsewhere: the recording
  stand-in serves no file).
- The documents are signed with a throwaway Ed25519 key made by the test; its public half is
  what the install plan puts in `/etc/smart-smoker/release.pub`.
- The device service is the backend STAND-IN listening on 3003 (`PORT`), the smoker UI the
  frontend STAND-IN on 8080; the broken N+2's device service answers 503 on `/api/health`.
  They come from the registry STAND-IN and are pulled by digest.
- The guest is x86-64: the rendered compose file's `platform: linux/arm/v7` (the Pi's) is
  replaced by `linux/amd64`, nothing else of it is changed.
- The serial device is docs/application.md's stand-in node, `/dev/smoker-serial` (`mknod ... c 1
  3`), configured as `guests.smoker.device.serialDevice`; a unit of the test recreates it at
  every boot of the guest, before Docker (nodes under /dev go away at a reboot).
- The health checks are quick (1 s interval, 15 s start period) instead of production's 30 s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import io
import json
import shlex
import ssl
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import layout
from components.device_release import DesiredReleaseProvider, spec_of
from config import GuestSpec, HostSpec, StackConfig
from deploy import desired
from rendering import app
from rendering.agent import AgentSettings, agent_arguments, agent_plan
from rendering.baseline import baseline_plan
from rendering.tailscale import release_source_url
from testbed.harness import Engine, Guest
from testbed.harness.engine import BRIDGE_IP, poll_until
from testbed.registry import Registry
from testbed.registry.push import trust_registry
from tests.configs import parse, set_path, stack_raw
from tests.tier3.baseline_env import apply_plan, docker_versions
from tests.tier3.release_env import DEVICE_SERVICE, SMOKER_UI, host_key, publish_device_images

pytestmark = pytest.mark.tier3

N, N1, N2 = "1.0.0", "1.1.0", "1.2.0"  # N+2 is broken: its device service never gets healthy
DEVICE = "smoker"
SERIAL = "/dev/smoker-serial"  # docs/application.md: a test machine's stand-in node
SOURCE = layout.published_release(DEVICE)  # a file path on the guest (see the docstring)
STATE_DIR = layout.AGENT_STATE_DIR
REPORT = layout.agent_report()
LEDGER = "/var/log/smart-smoker/deployments.jsonl"
SERVICE = layout.AGENT_SERVICE
TIMER = layout.AGENT_TIMER
SERIAL_UNIT = "smoker-test-serial-standin.service"
SERIAL_UNIT_TEXT = f"""\
# smoker-infra tier-3 test only: the serial device's stand-in node, made again at every boot
[Unit]
Description=Stand-in serial node {SERIAL} (tier-3 test)
DefaultDependencies=no
Before=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c '[ -c {SERIAL} ] || mknod -m 0660 {SERIAL} c 1 3'

[Install]
WantedBy=multi-user.target
"""


def device_config() -> tuple[StackConfig, HostSpec]:
    """The prod stack with its `smoker` pointed at the stand-in serial node, quick checks."""
    raw = stack_raw("prod")
    raw = set_path(raw, "guests.smoker.device.serialDevice", SERIAL)
    raw = set_path(
        raw,
        "app.healthcheck",
        {"intervalSeconds": 1, "timeoutSeconds": 5, "retries": 3, "startPeriodSeconds": 15},
    )
    cfg = parse(raw, "prod")
    spec = cfg.guest(DEVICE)
    assert isinstance(spec, HostSpec)
    return cfg, spec


@dataclass
class Device:
    engine: Engine
    guest: Guest
    registry: Registry
    cfg: StackConfig
    spec: HostSpec
    key: Ed25519PrivateKey
    settings: AgentSettings
    releases: dict[str, str] = field(default_factory=dict)  # version -> engine release name

    def run(self, cmd: str, **kwargs: Any) -> Any:
        return self.guest.run(cmd, **kwargs)

    def images(self, version: str) -> dict[str, str]:
        """What release `version` runs: `repo:tag@sha256:` as the stack plans it."""
        reg = self.registry
        return {
            "deviceService": f"{reg.address}/{DEVICE_SERVICE}:{version}@"
            f"{reg.resolve(DEVICE_SERVICE, version)}",
            "smokerUi": f"{reg.address}/{SMOKER_UI}:{N}@{reg.resolve(SMOKER_UI, N)}",
        }

    def pinned(self, version: str) -> dict[str, str]:
        """service -> `repo@sha256:` the engine runs (the agent pulls by digest)."""
        reg = self.registry
        return {
            "device-service": f"{reg.address}/{DEVICE_SERVICE}@"
            f"{reg.resolve(DEVICE_SERVICE, version)}",
            "smoker-ui": f"{reg.address}/{SMOKER_UI}@{reg.resolve(SMOKER_UI, N)}",
        }

    def compose(self, version: str) -> str:
        text = app.compose_file(self.cfg, self.spec, self.images(version))
        assert text.count(f"platform: {self.spec.platform}\n") == 2, text
        return text.replace(f"platform: {self.spec.platform}\n", "platform: linux/amd64\n")

    def document(self, version: str, sequence: int) -> bytes:
        props = {
            "compose": self.compose(version),
            "envFiles": app.release_env_files(self.cfg, self.spec, None),
            "checks": app.release_checks(self.cfg, self.spec),
        }
        return desired.publish(
            spec_of(props), stack=self.cfg.stack, guest=DEVICE, sequence=sequence,
            private_key=self.key,
        )  # fmt: skip

    def publish(self, version: str, sequence: int) -> None:
        """Write the signed document at the agent's source, atomically (as DesiredRelease)."""
        directory = str(Path(SOURCE).parent)
        self.run(
            f"install -d -m 0755 {directory} && cat > {SOURCE}.tmp && chmod 0644 {SOURCE}.tmp "
            f"&& mv {SOURCE}.tmp {SOURCE}",
            input=self.document(version, sequence),
        )

    def publish_while_stopped(self, version: str, sequence: int) -> None:
        """`docker cp` into the stopped guest's filesystem (nothing in it runs)."""
        data = self.document(version, sequence)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(Path(SOURCE).name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        target = f"{self.guest.id}:{Path(SOURCE).parent}"
        self.engine.docker("cp", "-", target, input=buffer.getvalue())

    def start_agent(self) -> int:
        """One run of the agent's unit, as the push path starts it."""
        out = self.run(f"timeout 600 systemctl start --wait {SERVICE}", check=False, timeout=700)
        return int(out.returncode)

    def agent_cli(self) -> Any:
        """The agent's command line, run by hand (not through its unit)."""
        command = shlex.join(["/usr/bin/python3", "-m", "deploy.agent", *agent_arguments(
            self.settings
        )])  # fmt: skip
        return self.run(
            f"cd {layout.AGENT_HOME} && PYTHONPATH={layout.AGENT_HOME} {command}", check=False
        )

    def report(self) -> dict[str, Any]:
        out = self.run(f"cat {REPORT}", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def ledger(self) -> list[dict[str, Any]]:
        out = self.run(f"cat {LEDGER} 2>/dev/null || true").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def live(self) -> str:
        return str(
            self.run(f"readlink {self.cfg.baseline.app_dir}/current").stdout.strip().rsplit("/")[-1]
        )

    def containers(self) -> dict[str, tuple[str, str, str]]:
        """service -> (container id, image, health) of the device's Compose project."""
        project = app.project_name(self.cfg, self.spec)
        out = self.run(
            f"docker ps -q --filter label=com.docker.compose.project={project} | xargs -r "
            'docker inspect -f \'{{index .Config.Labels "com.docker.compose.service"}} {{.Id}} '
            "{{.Config.Image}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}'"
        ).stdout
        rows = [line.split() for line in out.splitlines() if line.strip()]
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def live_images(self) -> dict[str, str]:
        return {service: image for service, (_, image, _) in self.containers().items()}

    def assert_live_and_verified(self, version: str) -> None:
        containers = self.containers()
        assert {s: c[1] for s, c in containers.items()} == self.pinned(version), containers
        assert {c[2] for c in containers.values()} == {"healthy"}, containers
        health = json.loads(self.run("curl -fsS http://127.0.0.1:3003/api/health").stdout)
        assert health["version"] == version
        self.run("curl -fsS -o /dev/null http://127.0.0.1:8080/")


@pytest.fixture(scope="module")
def device(
    engine: Engine, guest_factory: Callable[..., Guest], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Device]:
    root = tmp_path_factory.mktemp("device-registry")
    with Registry(root, BRIDGE_IP.split("/")[0], loopback=True) as registry:
        publish_device_images(engine, registry, (N, N1), broken=(N2,))
        guest = guest_factory(hostname="smoker-device")
        trust_registry(guest, registry.address)
        guest.run(
            f"cat > /etc/systemd/system/{SERIAL_UNIT} && systemctl daemon-reload && "
            f"systemctl enable --now {SERIAL_UNIT}",
            input=SERIAL_UNIT_TEXT.encode(),
        )
        cfg, spec = device_config()
        settings = AgentSettings(
            stack=cfg.stack,
            guest=DEVICE,
            project=app.project_name(cfg, spec),
            app_dir=cfg.baseline.app_dir,
            source=SOURCE,
            boot_delay_seconds=10,  # the minimum: the timer's OnBootSec
            randomized_delay_seconds=0,
        )
        key = Ed25519PrivateKey.generate()
        yield Device(engine, guest, registry, cfg, spec, key, settings)


def baseline_config(device: Device) -> tuple[StackConfig, HostSpec]:
    """The Pi's stack config for this guest: what config can say (the guest's Docker versions,
    its harness key as the authorized key, link-local Docker networks), nothing else changed."""
    engine_version, compose_version = docker_versions(device.guest)
    public_key = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(device.guest.key_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    raw = stack_raw("prod")
    raw = set_path(raw, "guests.smoker.device.serialDevice", SERIAL)
    raw = set_path(raw, "sshAuthorizedKeys", [public_key])
    raw = set_path(raw, "baseline.docker.engineVersion", engine_version)
    raw = set_path(raw, "baseline.docker.composeVersion", compose_version)
    raw = set_path(raw, "baseline.docker.bridgeIp", "169.254.90.1/24")
    raw = set_path(raw, "baseline.docker.addressPools", [{"base": "169.254.96.0/20", "size": 24}])
    cfg = parse(raw, "prod")
    spec = cfg.guest(DEVICE)
    assert isinstance(spec, HostSpec)
    return cfg, spec


def test_0_the_pis_baseline_applies_after_its_machine_check(device: Device) -> None:
    """The Pi's whole baseline (`kind: host`: no LXC or VM step), run as the program runs it.
    The guest is amd64: the machine check refuses it by name, and passes with the architecture
    answered as the Pi's (a STAND-IN for that one command, in that one step)."""
    cfg, spec = baseline_config(device)
    steps = baseline_plan(cfg, spec)
    assert steps[0].name == "machine-check"
    assert not {"apt-sandbox", "swapfile", "arm-emulation"} & {s.name for s in steps}
    refused = device.run(steps[0].command("root"), check=False)
    assert refused.returncode == 1
    assert (
        "guests.smoker.arch = armhf, but the machine is amd64. Fix: set guests.smoker.arch"
        in refused.stderr
    )
    as_the_pi = dataclasses.replace(steps[0], script="dpkg() { echo armhf; }\n" + steps[0].script)
    first = apply_plan(device.guest, [as_the_pi, *steps[1:]])
    # converged: a second apply changes nothing
    again = apply_plan(device.guest, [as_the_pi, *steps[1:]])
    assert [r.step.name for r in again if r.changed] == []
    trust_registry(device.guest, device.registry.address)  # daemon.json is the baseline's now
    outputs = {r.step.name: r.stdout.strip() for r in first}
    assert outputs["machine-check"] == f"unchanged machine: armhf, serial device {SERIAL}"
    assert outputs["docker-engine"].startswith("unchanged docker")  # the image's, as configured
    status = device.run("ufw status").stdout
    assert "Status: active" in status
    for port in ("22/tcp", "3003/tcp", "8080/tcp"):
        assert port in status, status
    assert device.run("systemctl is-active fail2ban docker ssh").returncode == 0
    sshd = device.run("sshd -T").stdout
    assert "passwordauthentication no" in sshd
    assert "permitrootlogin without-password" in sshd or "prohibit-password" in sshd
    assert "sshd-users" in device.run("id -nG smoker").stdout.split()  # may log in over SSH


def test_1_the_install_plan_applies_and_its_timer_runs_the_agent(device: Device) -> None:
    steps = agent_plan(device.settings, desired.public_pem(device.key))
    first = apply_plan(device.guest, steps)
    outputs = {r.step.name: r.stdout for r in first}
    # the guest image has Debian's packages (no network here): the step finds them installed
    assert "unchanged agent packages" in outputs["agent-packages"]
    assert outputs["agent-prune"].strip() == "unchanged agent code"  # nothing stale here
    assert all(r.changed for r in first if r.step.name not in ("agent-packages", "agent-prune"))
    units = f"/etc/systemd/system/{SERVICE} /etc/systemd/system/{TIMER}"
    verified = device.run(f"systemd-analyze verify {units}", check=False)
    assert verified.returncode == 0, verified.stderr
    assert layout.AGENT_NAME not in verified.stderr, verified.stderr  # no warning about ours
    assert device.run(f"systemctl is-enabled {TIMER}").stdout.strip() == "enabled"
    assert device.run(f"systemctl is-active {TIMER}").stdout.strip() == "active"
    pem = device.run(f"cat {layout.AGENT_PUBLIC_KEY}").stdout
    assert pem == desired.public_pem(device.key).strip() + "\n"
    # a second apply changes nothing
    assert not [r.step.name for r in apply_plan(device.guest, steps) if r.changed]
    # OnBootSec is already past: the timer runs the agent once right away. Nothing is published
    # yet: unreachable (exit 69), a success of the unit, the report written
    report = poll_until(
        lambda: device.report() or None, timeout=60, what="the timer's first agent run"
    )
    assert report["outcome"] == "unreachable", report
    assert "staying on no release" in report["message"]
    poll_until(
        lambda: (
            device.run(f"systemctl show -p ActiveState --value {SERVICE}").stdout.strip()
            == "inactive"
        ),
        timeout=60,
        what="the agent's first run to end",
    )
    assert device.run(f"systemctl show -p Result --value {SERVICE}").stdout.strip() == "success"


def test_2_release_n_is_deployed_by_one_run(device: Device) -> None:
    device.publish(N, 1)
    assert device.start_agent() == 0
    report = device.report()
    assert report["outcome"] == "deployed", report
    assert report["desired"]["sequence"] == 1
    device.releases[N] = device.live()
    assert report["liveRelease"] == device.releases[N]
    device.assert_live_and_verified(N)
    record = device.ledger()[-1]
    assert (record["outcome"], record["release"]) == ("deployed", device.releases[N])
    assert record["who"].endswith(" via agent"), record


def test_3_the_serial_device_is_passed_to_the_device_service(device: Device) -> None:
    compose = device.run(f"cat {device.cfg.baseline.app_dir}/current/compose.yaml").stdout
    assert f"- {SERIAL}:{app.DEVICE_SERIAL}" in compose  # never a dropped mapping
    cid = device.containers()["device-service"][0]
    devices = json.loads(
        device.run(f"docker inspect -f '{{{{json .HostConfig.Devices}}}}' {cid}").stdout
    )
    assert [(d["PathOnHost"], d["PathInContainer"]) for d in devices] == [
        (SERIAL, app.DEVICE_SERIAL)
    ]
    node = device.run(f"docker exec {cid} stat -c '%F %t:%T' {app.DEVICE_SERIAL}").stdout
    assert node.strip() == "character special file 1:3"  # the stand-in node, in the container


def test_4_n1_published_while_the_device_is_off_is_applied_at_boot_by_the_timer(
    device: Device,
) -> None:
    device.engine.docker("stop", "-t", "30", device.guest.id, timeout=120)
    device.publish_while_stopped(N1, 2)
    started = time.time()
    device.engine.docker("start", device.guest.id, timeout=120)
    device.guest.wait_ready()

    def converged() -> dict[str, Any] | None:
        report = device.report()
        done = report.get("desired", {}).get("sequence") == 2 and report["outcome"] != "busy"
        return report if done else None

    report = poll_until(converged, timeout=240, what="the agent to converge to N+1 after boot")
    assert report["outcome"] == "deployed", report
    boot_runs = device.run(f"journalctl -b -u {SERVICE} -o cat --no-pager").stdout
    assert "deployed" in boot_runs  # this boot's run, which nothing but the timer started
    device.releases[N1] = device.live()
    assert report["liveRelease"] == device.releases[N1] != device.releases[N]
    device.assert_live_and_verified(N1)
    assert device.ledger()[-1]["outcome"] == "deployed"
    assert time.time() - started < 240


def test_5_a_broken_n2_is_rolled_back_to_n1_and_not_retried(device: Device) -> None:
    device.publish(N2, 3)
    assert device.start_agent() != 0  # rolled-back is exit 1: a failure of the unit
    report = device.report()
    assert report["outcome"] == "rolled-back", report
    assert report["desired"]["sequence"] == 3
    assert report["liveRelease"] == device.releases[N1] == device.live()
    device.assert_live_and_verified(N1)
    record = device.ledger()[-1]
    assert record["outcome"] == "rolled-back" and record["previous"] == device.releases[N1]
    assert record["rollback"] == {"to": device.releases[N1], "outcome": "verified"}
    # the next run does not try N+2 again
    before = (device.containers(), len(device.ledger()))
    assert device.start_agent() != 0
    again = device.report()
    assert again["outcome"] == "rolled-back" and "is not retried" in again["message"], again
    assert (device.containers(), len(device.ledger())) == before


def test_6_two_runs_at_once_one_applies_the_other_is_busy(device: Device) -> None:
    device.publish(N, 4)  # back to N's content, a newer sequence
    records = len(device.ledger())
    lock = f"{STATE_DIR}/agent.lock"
    device.run(f"systemctl start --no-block {SERVICE}")

    def holding() -> str | None:
        pid = device.run(f"systemctl show -p MainPID --value {SERVICE}").stdout.strip()
        held = device.run(f"cat {lock}", check=False).stdout.strip()
        return pid if pid not in ("", "0") and held == pid else None

    holder = poll_until(
        holding, timeout=30, interval=0.05, what="the unit's run to hold the agent lock"
    )
    files = f"{STATE_DIR}/{layout.AGENT_STATE_FILE} {REPORT} {LEDGER} {lock}"
    snapshot = f"sha256sum {files}; readlink {device.cfg.baseline.app_dir}/current"
    # the holder is paused while it holds the lock, so the second run surely overlaps it
    device.run(f"kill -STOP {holder}")
    try:
        before = device.run(snapshot).stdout
        t0 = time.monotonic()
        busy = device.agent_cli()
        seconds = time.monotonic() - t0
        after = device.run(snapshot).stdout
    finally:
        device.run(f"kill -CONT {holder}")
    assert busy.returncode == layout.AGENT_BUSY_EXIT, (busy.stdout, busy.stderr)
    assert busy.stdout.startswith(f"busy: another apply is running (pid {holder})"), busy.stdout
    assert seconds < 10  # at once, not after waiting for the other run
    assert after == before  # no report, state, ledger or lock written; the same live release
    poll_until(
        lambda: (
            device.run(f"systemctl show -p ActiveState --value {SERVICE}").stdout.strip()
            in ("inactive", "failed")
        ),
        timeout=300,
        what="the applying run to end",
    )
    report = device.report()
    assert report["outcome"] == "deployed" and report["desired"]["sequence"] == 4, report
    assert report["liveRelease"] == device.live()
    assert len(device.ledger()) == records + 1  # one deploy, not two
    device.assert_live_and_verified(N)


@dataclass(frozen=True)
class Publisher:
    """A TLS file server standing in for the cloud guest's `tailscale serve` of its directory of
    documents: the certificate is for the publisher's tailnet name, from a test CA."""

    ca_pem: str
    directory: Path
    requests: list[str]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@contextlib.contextmanager
def tailnet_publisher(name: str, address: str, port: int, mount: str) -> Iterator[Publisher]:
    """Serve a directory at `https://name:port<mount>/` from `address` (the test host)."""
    with tempfile.TemporaryDirectory(prefix="smoker-tailnet-ca-") as tmp:
        work = Path(tmp)
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "2", "-subj", "/CN=tier-3 test CA (stands in for the tailnet's certificates)",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=work,
        )  # fmt: skip
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", f"/CN={name}", "-keyout", "node.key", "-out", "node.csr", cwd=work,
        )  # fmt: skip
        (work / "ext").write_text(
            f"subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        )
        _openssl(
            "x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "ext", "-out", "node.pem", cwd=work,
        )  # fmt: skip
        served = work / "served"
        served.mkdir()
        requests: list[str] = []
        prefix = mount.rstrip("/") + "/"

        class Files(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                path = served / self.path.removeprefix(prefix)
                if not self.path.startswith(prefix) or "/" in self.path.removeprefix(prefix):
                    path = served / "missing"
                body = path.read_bytes() if path.is_file() else b""
                self.send_response(200 if path.is_file() else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(work / "node.pem", work / "node.key")
        server = http.server.ThreadingHTTPServer((address, port), Files)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Publisher((work / "ca.pem").read_text(), served, requests)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


def test_7_the_agent_fetches_from_the_publishers_tailnet_url_over_https(device: Device) -> None:
    """The production `--source` (the prod cloud guest's tailnet name, port 9443,
    /device-releases/smoker.json), resolved in the guest to the test host, which serves the
    directory over TLS with a certificate for that name from a test CA the guest trusts (what
    Tailscale's certificate is to a real device)."""
    cfg = device.cfg
    publisher = next(g for g in cfg.guests if g.kind == "lxc")  # prod-cloud
    assert isinstance(publisher, GuestSpec)
    assert cfg.tailnet is not None
    url = release_source_url(cfg.stack, publisher, cfg.tailnet, DEVICE)
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    gateway = BRIDGE_IP.split("/")[0]
    mount = parts.path.rsplit("/", 1)[0]
    with tailnet_publisher(parts.hostname, gateway, parts.port, mount) as served:
        device.run(
            f"echo '{gateway} {parts.hostname}' >> /etc/hosts && "
            "cat > /usr/local/share/ca-certificates/smoker-tier3-tailnet.crt && "
            "update-ca-certificates >/dev/null",
            input=served.ca_pem.encode(),
        )
        settings = dataclasses.replace(device.settings, source=url)
        changed = apply_plan(device.guest, agent_plan(settings, desired.public_pem(device.key)))
        assert [r.step.name for r in changed if r.changed] == [f"unit-{SERVICE}".replace(".", "-")]
        unit = device.run(f"systemctl cat {SERVICE}").stdout
        assert f"--source {url} " in unit
        (served.directory / f"{DEVICE}.json").write_bytes(device.document(N1, 5))
        assert device.start_agent() == 0
        report = device.report()
        assert report["outcome"] == "deployed" and report["desired"]["sequence"] == 5, report
        assert served.requests == [parts.path]
        device.assert_live_and_verified(N1)
        live = device.live()
    # the publisher is gone (down, or the device off the tailnet): unreachable, a success of
    # the unit, and the device stays on its release
    assert device.start_agent() == 0
    report = device.report()
    assert report["outcome"] == "unreachable", report
    assert f"staying on release {live}" in report["message"]
    assert device.live() == live
    device.assert_live_and_verified(N1)


def test_8_the_push_publishes_on_the_guest_and_runs_its_agent(device: Device) -> None:
    """`DesiredRelease` (the provider class, called as Pulumi calls it) with the guest as both the
    publisher and the device, the agent's `--source` the file the provider writes."""
    guest = device.guest
    apply_plan(guest, agent_plan(device.settings, desired.public_pem(device.key)))
    assert f"--source {SOURCE} " in device.run(f"systemctl cat {SERVICE}").stdout
    device.publish(N1, 5)  # what the publisher served in test 7: the sequence lives there
    ssh = {"host": guest.host, "user": "root", "port": 22, "key": guest.private_key()}
    signing = device.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()

    def props(version: str, device_host: str) -> dict[str, Any]:
        return {
            "stack": device.cfg.stack,
            "guest": DEVICE,
            "compose": device.compose(version),
            "envFiles": {},
            "checks": app.release_checks(device.cfg, device.spec),
            "signingKey": signing,
            "publisherHost": ssh["host"],
            "publisherUser": ssh["user"],
            "publisherPort": ssh["port"],
            "publisherHostKey": host_key(guest),
            "publisherPrivateKey": ssh["key"],
            "path": SOURCE,
            "deviceHost": device_host,
            "deviceUser": ssh["user"],
            "devicePort": ssh["port"],
            "deviceHostKey": host_key(guest),
            "devicePrivateKey": ssh["key"],
            "pushConnectTimeoutSeconds": 3,
        }

    provider = DesiredReleaseProvider()
    created = dict(provider.create(props(N, guest.host)).outs or {})
    assert created["sequence"] == 6  # past what the publisher holds
    assert (created["delivery"], created["agentOutcome"]) == ("pushed", "deployed"), created
    assert created["agentReport"]["desired"]["sequence"] == 6
    assert device.report()["outcome"] == "deployed"
    assert device.run(f"cat {SOURCE}").stdout == created["document"]
    assert device.run(f"cat {layout.AGENT_DOCUMENT}").stdout == created["document"]
    device.assert_live_and_verified(N)
    # the device does not answer (an address nothing listens on): published, to be pulled
    silent = props(N1, "169.254.77.254")
    updated = dict(provider.update("release", created, silent).outs or {})
    assert updated["sequence"] == 7 and updated["delivery"] == "pull", updated
    assert "converge by pull" in updated["note"]
    assert json.loads(device.run(f"cat {SOURCE}").stdout)["document"]["sequence"] == 7
    device.assert_live_and_verified(N)  # nothing reached the device ...
    assert device.start_agent() == 0  # ... until its agent's next run (the timer's)
    report = device.report()
    assert report["outcome"] == "deployed" and report["desired"]["sequence"] == 7, report
    device.assert_live_and_verified(N1)
