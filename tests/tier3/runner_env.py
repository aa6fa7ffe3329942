"""The runner guest's tier-3 setting: its config against the GitHub stand-in, an argv sampler,
and a TLS server with a test "PVE" CA (for the CA and node-name steps)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import GuestSpec
from config.fields import STACK_FILE
from config.runner import RunnerSettings
from rendering.plan import Step
from rendering.runner import runner_plan
from testbed.harness import Guest
from testbed.standins.github import GitHubStandin, pulumi_tarball, runner_tarball
from tests.configs import evolve, parse, stack_raw
from tests.tier3.baseline_env import BRIDGE_GATEWAY

REPOSITORY = "https://github.com/smart-smoker/smart-smoker-v2"
SCOPE = "repos/smart-smoker/smart-smoker-v2"
PAT = "ghp_TIER3standinPersonalAccessToken0123456"  # fakes: only the stand-in knows them
ONE_TIME_TOKEN = "AATIER3ONETIMEREGISTRATIONTOKEN0123456789"
RUNNER_VERSION, PULUMI_VERSION = "2.321.0", "3.142.0"


@dataclass
class RunnerEnv:
    guest: Guest
    github: GitHubStandin
    settings: RunnerSettings
    spec: GuestSpec

    def plan(self, token: str = PAT, node_name: str | None = None, **changes: Any) -> list[Step]:
        """The runner plan without its packages step: the test guest has no network, and git,
        make and python3-venv/pip are not in its image (the step is the baseline's, proven
        there; its package list is checked in unit)."""
        settings = evolve(self.settings, **changes)
        steps = runner_plan(settings, self.spec, token, BRIDGE_GATEWAY, node_name)
        return [s for s in steps if s.name != "runner-packages"]

    def step(self, name: str, **changes: Any) -> Step:
        return next(s for s in self.plan(node_name="pve", **changes) if s.name == name)

    def serve_runner(self, version: str) -> dict[str, str]:
        """A stand-in runner tarball of `version`, served: the settings that point at it."""
        data = runner_tarball(self.github.url, version)
        url = self.github.serve_file(f"actions-runner-linux-x64-{version}.tar.gz", data)
        return {"version": version, "download_url": url, "sha256": sha256(data)}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def runner_env(guest: Guest) -> Iterator[RunnerEnv]:
    spec = evolve(parse(stack_raw("dev"), "dev").guest("dev-cloud"), hostname="github-runner")
    with GitHubStandin(BRIDGE_GATEWAY, SCOPE, {PAT}) as github:
        pulumi = pulumi_tarball(PULUMI_VERSION)
        validated = RunnerSettings.model_validate(
            {
                "url": REPOSITORY,
                "version": RUNNER_VERSION,
                "sha256": "0" * 64,
                "pulumi": {"version": PULUMI_VERSION, "sha256": sha256(pulumi)},
            },
            context={STACK_FILE: True},
        )
        env = RunnerEnv(guest, github, validated, spec)
        # plain http on the link-local test bridge (the settings require https in production)
        pulumi_url = github.serve_file(f"pulumi-v{PULUMI_VERSION}-linux-x64.tar.gz", pulumi)
        env.settings = evolve(
            validated,
            api_url=github.url,
            pulumi=evolve(validated.pulumi, download_url=pulumi_url),
            **env.serve_runner(RUNNER_VERSION),
        )
        yield env


@contextlib.contextmanager
def argv_sampler(guest: Guest) -> Iterator[Callable[[], str]]:
    """Samples every process's command line on the guest, as fast as it can, until the block
    ends; yields a function that returns the samples taken (after the block)."""
    loop = (
        "while :; do for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < \"$f\"; echo; done; "
        "done >> /run/argv-samples 2>/dev/null"
    )
    guest.run("rm -f /run/argv-samples")
    guest.run(f"systemd-run --quiet --unit=smoker-test-argv-sampler sh -c {quote(loop)}")
    samples: list[str] = []
    try:
        yield lambda: samples[0]
    finally:
        guest.run("systemctl stop smoker-test-argv-sampler", check=False)
        samples.append(guest.run("cat /run/argv-samples; rm -f /run/argv-samples").stdout)


def quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


@dataclass(frozen=True)
class TlsNode:
    """A TLS server standing in for the Proxmox API: its certificate is for DNS name `pve`,
    issued by a test "PVE" CA."""

    ca_pem: str
    port: int


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@contextlib.contextmanager
def tls_node() -> Iterator[TlsNode]:
    with tempfile.TemporaryDirectory(prefix="smoker-pve-ca-") as tmp:
        work = Path(tmp)
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=Proxmox Virtual Environment (tier-3 test CA)",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=work,
        )  # fmt: skip
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=pve",
            "-keyout", "node.key", "-out", "node.csr", cwd=work,
        )  # fmt: skip
        (work / "ext").write_text(
            "subjectAltName=DNS:pve\nbasicConstraints=CA:FALSE\n"
            "authorityKeyIdentifier=keyid\nextendedKeyUsage=serverAuth\n"
        )
        _openssl(
            "x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "ext", "-out", "node.pem", cwd=work,
        )  # fmt: skip
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(work / "node.pem", work / "node.key")

        class Hello(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"pve stand-in: verified\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer((BRIDGE_GATEWAY, 0), Hello)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield TlsNode((work / "ca.pem").read_text(), server.server_address[1])
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
