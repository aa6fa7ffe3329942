"""A systemd "guest" container reached over real SSH, plus a second client.

The guest stands in for an LXC guest: systemd as PID 1, sshd with a per-run
test-only ed25519 key for root, ufw, fail2ban, a nested Docker engine with the
Compose plugin, and a recording Tailscale stand-in. It sits on the harness
engine's link-local bridge (169.254.77.0/24) and has no route to anywhere else.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .engine import Engine, HarnessError, log, poll_until, remove_tree, tail
from .images import ImageSet

#: `docker run` flags a systemd guest needs on this machine (--privileged fails here).
SYSTEMD_FLAGS = (
    "--cap-add", "ALL",
    "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined",
    "--cgroupns=host",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--sysctl", "net.ipv4.ip_forward=1",
    "--tmpfs", "/run",
    "--tmpfs", "/run/lock",
    "--tmpfs", "/tmp:exec,mode=1777",  # a real guest can run scripts from /tmp
)  # fmt: skip
#: Where the client container keeps the test key (not a default identity path,
#: so a plain `ssh root@GUEST` from the client fails: handy for fail2ban tests).
CLIENT_KEY = "/root/.ssh/test_key"
CLIENT_KNOWN_HOSTS = "/root/.ssh/known_hosts"


class GuestCommandError(subprocess.CalledProcessError):
    """A command on the guest exited non-zero."""

    def __str__(self) -> str:
        err = (
            self.stderr.decode(errors="replace")
            if isinstance(self.stderr, bytes)
            else (self.stderr or "")
        )
        out = (
            self.stdout.decode(errors="replace")
            if isinstance(self.stdout, bytes)
            else (self.stdout or "")
        )
        return (
            f"guest command {self.cmd!r} exited {self.returncode}\n"
            f"--- stdout (tail) ---\n{tail(out, 20)}\n--- stderr (tail) ---\n{tail(err, 20)}"
        )


#: ssh stderr of failures that happen before authentication (the command never ran).
_DIAL_FAILURES = (
    re.compile(rb"^ssh: connect to host .*: (Connection refused|Connection timed out)", re.M),
    re.compile(rb"^kex_exchange_identification: ", re.M),
    re.compile(rb"^Connection (closed|reset) by .* port \d+\r?$", re.M),
)


def _dial_failed(result: subprocess.CompletedProcess[bytes]) -> bool:
    return result.returncode == 255 and any(p.search(result.stderr or b"") for p in _DIAL_FAILURES)


def _first_line(data: bytes | None) -> str:
    return (data or b"").decode(errors="replace").strip().split("\n", 1)[0]


def _decode(
    result: subprocess.CompletedProcess[bytes], text: bool
) -> subprocess.CompletedProcess[str] | subprocess.CompletedProcess[bytes]:
    if not text:
        return result
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        (result.stdout or b"").decode(errors="replace"),
        (result.stderr or b"").decode(errors="replace"),
    )


class Client:
    """A second, tiny container on the same bridge: another network source."""

    def __init__(self, engine: Engine, container_id: str, ip: str) -> None:
        self.engine = engine
        self.id = container_id
        self.ip = ip

    def run(
        self, cmd: str, *, input: bytes | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside the client container (docker exec)."""
        result = self.engine.docker(
            "exec",
            "-i",
            self.id,
            "sh",
            "-c",
            cmd,
            input=input if input is not None else b"",
            check=False,
            timeout=timeout,
        )
        decoded = _decode(result, text=True)
        if check and result.returncode != 0:
            raise GuestCommandError(
                result.returncode, f"[client] {cmd}", decoded.stdout, decoded.stderr
            )
        return decoded  # type: ignore[return-value]

    def remove(self) -> None:
        """Remove the client container by ID."""
        self.engine.docker("rm", "-f", self.id, check=False, timeout=60)


class Guest:
    """A running systemd guest container.

    Attributes: ``host`` (its 169.254.77.x address), ``port`` (sshd port),
    ``user`` ('root'), ``key_path`` / ``known_hosts_path`` (test-only SSH
    material, mode 0700 dir under the cache), ``id`` / ``name`` (the container),
    ``client`` (a second network source, or None).
    """

    def __init__(
        self,
        engine: Engine,
        images: ImageSet,
        *,
        name: str,
        hostname: str,
        container_id: str,
        volume_dir: Path,
        ssh_dir: Path,
    ) -> None:
        self.engine = engine
        self.images = images
        self.name = name
        self.hostname = hostname
        self.id = container_id
        self.volume_dir = volume_dir
        self.ssh_dir = ssh_dir
        self.key_path = ssh_dir / "id_ed25519"
        self.known_hosts_path = ssh_dir / "known_hosts"
        self.user = "root"
        self.port = 22
        self.host = ""
        self.client: Client | None = None
        #: a fixed address on a harness network (see `ensure_network`), or None (the bridge)
        self.fixed_ip: str | None = None

    # -- SSH ----------------------------------------------------------------------

    @property
    def destination(self) -> str:
        """``user@host`` for ssh."""
        return f"{self.user}@{self.host}"

    def ssh_args(self) -> list[str]:
        """The ``ssh`` argv prefix (everything but the destination and command)."""
        return [
            "ssh",
            "-F", "/dev/null",
            "-i", str(self.key_path),
            "-p", str(self.port),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts_path}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def ssh_command(self) -> str:
        """A copy-pasteable interactive ssh command line."""
        return shlex.join([*self.ssh_args(), self.destination])

    def private_key(self) -> str:
        """The test-only private key (OpenSSH format), e.g. for pulumi-command."""
        return self.key_path.read_text()

    def run(
        self,
        cmd: str,
        input: bytes | None = None,
        check: bool = True,
        timeout: float = 120,
        text: bool = True,
        dial_retry_seconds: float = 10,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` on the guest over real SSH (as production does).

        ``input`` goes to the remote command's stdin (stdin is empty otherwise).
        Returns decoded output unless ``text=False``. A connection that fails
        before authentication (e.g. refused while sshd re-execs after a reload)
        is retried for ``dial_retry_seconds``, as pulumi-command retries its
        dials; the command itself never runs twice.
        """
        argv = [*self.ssh_args(), self.destination, cmd]
        deadline = time.monotonic() + dial_retry_seconds
        delay = 0.1
        while True:
            try:
                result = subprocess.run(
                    argv,
                    input=input if input is not None else b"",
                    capture_output=True,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise HarnessError(f"ssh command {cmd!r} timed out after {timeout:.0f}s") from exc
            if not (_dial_failed(result) and time.monotonic() < deadline):
                break
            log(f"ssh to {self.host} failed before login ({_first_line(result.stderr)}); retrying")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        decoded = _decode(result, text)
        if check and result.returncode != 0:
            raise GuestCommandError(result.returncode, cmd, decoded.stdout, decoded.stderr)
        return decoded  # type: ignore[return-value]

    # -- harness-internal access (docker exec) ------------------------------------

    def exec(
        self,
        cmd: str | Sequence[str],
        input: bytes | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in the guest via ``docker exec`` (works even if sshd is broken).

        A string runs under ``sh -c``; a sequence is an argv.
        """
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        result = self.engine.docker(
            "exec",
            "-i",
            self.id,
            *argv,
            input=input if input is not None else b"",
            check=False,
            timeout=timeout,
        )
        decoded = _decode(result, text=True)
        if check and result.returncode != 0:
            raise GuestCommandError(
                result.returncode, f"[exec] {cmd}", decoded.stdout, decoded.stderr
            )
        return decoded  # type: ignore[return-value]

    def from_client(
        self, cmd: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in the client container (a different source address).

        ``$GUEST`` in the command is the guest's IP; the client has the test key
        at /root/.ssh/test_key and the guest's host keys in known_hosts.
        """
        if self.client is None:
            raise HarnessError("this guest was started without a client container")
        return self.client.run(
            f"GUEST={shlex.quote(self.host)}; {cmd}", check=check, timeout=timeout
        )

    def write_file(self, path: str, content: bytes, mode: int = 0o644) -> None:
        """Write a file in the guest (docker exec; parent dirs created)."""
        quoted = shlex.quote(path)
        self.exec(
            f'mkdir -p "$(dirname {quoted})" && cat > {quoted} && chmod {mode:o} {quoted}',
            input=content,
        )

    def load_image(self, ref: str, timeout: float = 600) -> None:
        """Copy image ``ref`` from the harness engine into the guest's nested engine."""
        save = subprocess.Popen(
            [*self.engine.docker_argv(), "save", ref],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.engine.env(),
        )
        assert save.stdout is not None
        loaded = subprocess.run(
            [*self.engine.docker_argv(), "exec", "-i", self.id, "docker", "load", "-q"],
            stdin=save.stdout,
            capture_output=True,
            env=self.engine.env(),
            timeout=timeout,
            check=False,
        )
        save.stdout.close()
        save_rc = save.wait(timeout=60)
        if save_rc != 0 or loaded.returncode != 0:
            err = (save.stderr.read() if save.stderr else b"") + loaded.stderr
            raise HarnessError(
                f"loading {ref} into the guest failed:\n{tail(err.decode(errors='replace'))}"
            )

    def diagnostics(self) -> str:
        """systemd state, failed units and the journal tail (for error messages)."""
        parts: list[str] = []
        state = self.engine.docker_text(
            "inspect", "-f", "{{.State.Status}} exit={{.State.ExitCode}}", self.id, check=False
        )
        parts.append(f"--- container {self.name}: {state} ---")
        if state.startswith("running"):
            for what, cmd in (
                ("systemctl is-system-running", "systemctl is-system-running"),
                ("systemctl --failed", "systemctl --failed --no-pager --no-legend"),
                ("journalctl (tail)", "journalctl -b --no-pager -n 80"),
            ):
                result = self.exec(cmd, check=False, timeout=30)
                parts.append(f"--- {what} ---\n{result.stdout.strip()}{result.stderr.strip()}")
        else:
            logs = self.engine.docker("logs", "--tail", "60", self.id, check=False)
            parts.append((logs.stdout + logs.stderr).decode(errors="replace"))
        return "\n".join(parts)

    def failed_units(self) -> list[str]:
        """Names of failed systemd units."""
        out = self.exec("systemctl --failed --no-legend --plain --no-pager", check=False).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    # -- lifecycle ------------------------------------------------------------------

    def _container_state(self) -> str:
        return self.engine.docker_text("inspect", "-f", "{{.State.Status}}", self.id, check=False)

    def _systemd_state(self) -> str | None:
        status = self._container_state()
        if status not in ("running", "created", "restarting"):
            raise HarnessError(
                f"guest container {self.name} is {status or 'gone'}\n{self.diagnostics()}"
            )
        result = self.engine.docker(
            "exec", self.id, "systemctl", "is-system-running", check=False, timeout=30
        )
        state = result.stdout.decode(errors="replace").strip()
        return state if state in ("running", "degraded") else None

    def wait_ready(self, timeout: float = 180) -> None:
        """Wait until systemd is up (running/degraded) and sshd accepts our key."""
        t0 = time.monotonic()
        state = poll_until(
            self._systemd_state,
            timeout=timeout,
            what=f"systemd in guest {self.name} to reach running/degraded",
            diagnostics=self.diagnostics,
        )
        if state == "degraded":
            failed = ", ".join(self.failed_units()) or "?"
            log(f"guest {self.name} is degraded; failed units: {failed}")
        self.refresh_known_hosts()

        def ssh_ok() -> bool:
            return self.run("true", check=False, timeout=15, dial_retry_seconds=0).returncode == 0

        remaining = max(10.0, timeout - (time.monotonic() - t0))
        poll_until(
            ssh_ok,
            timeout=remaining,
            what=f"sshd on {self.host}:{self.port} to accept the test key",
            diagnostics=lambda: self._ssh_diagnostics(),
        )
        log(f"guest {self.name} ready at {self.destination} in {time.monotonic() - t0:.1f}s")

    def _ssh_diagnostics(self) -> str:
        probe = self.run("true", check=False, timeout=15, dial_retry_seconds=0)
        return f"--- last ssh attempt ---\n{probe.stderr.strip()}\n{self.diagnostics()}"

    def refresh_known_hosts(self) -> None:
        """Re-read the guest IP and host keys; rewrite known_hosts (and the client's).

        Call after changing ``port`` or the guest's host keys.
        """
        self.host = self.engine.docker_text(
            "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", self.id
        )
        if self.fixed_ip is not None and self.host != self.fixed_ip:
            raise HarnessError(f"guest got address {self.host!r}, not its fixed {self.fixed_ip}")
        if self.fixed_ip is None and not self.host.startswith("169.254.77."):
            raise HarnessError(
                f"guest got unexpected address {self.host!r} (expected 169.254.77.0/24)"
            )
        keys = self.exec("cat /etc/ssh/ssh_host_*_key.pub").stdout
        host_field = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        lines = []
        for line in keys.splitlines():
            fields = line.split()
            if len(fields) >= 2:
                lines.append(f"{host_field} {fields[0]} {fields[1]}\n")
        if not lines:
            raise HarnessError(f"guest {self.name} has no SSH host keys\n{self.diagnostics()}")
        self.known_hosts_path.write_text("".join(lines))
        self.known_hosts_path.chmod(0o600)
        if self.client is not None:
            self._setup_client_ssh()

    def _setup_client_ssh(self) -> None:
        assert self.client is not None
        self.client.run(
            f"cat > {CLIENT_KEY} && chmod 600 {CLIENT_KEY}",
            input=self.key_path.read_bytes(),
        )
        self.client.run(f"cat > {CLIENT_KNOWN_HOSTS}", input=self.known_hosts_path.read_bytes())

    def _nested_container_ids(self) -> list[str]:
        if self._container_state() != "running":
            return []
        ps = self.engine.docker(
            "exec", self.id, "docker", "ps", "-aq", "--no-trunc", check=False, timeout=30
        )
        return ps.stdout.decode(errors="replace").split() if ps.returncode == 0 else []

    def restart(self, timeout: float = 180) -> None:
        """``docker restart`` the guest (a reboot) and wait until it is ready again."""
        log(f"restarting guest {self.name}")
        self.engine.docker("restart", "-t", "30", self.id, timeout=120)
        self.wait_ready(timeout=timeout)

    def stop(self) -> None:
        """Remove the guest (and client) containers by ID and delete their data."""
        if self.client is not None:
            self.client.remove()
            self.client = None
        if self.id:
            nested = self._nested_container_ids()
            log(f"removing guest {self.name} ({self.id[:12]})")
            self.engine.docker("rm", "-f", "-v", self.id, check=False, timeout=120)
            self.id = ""
            _remove_nested_cgroups(nested)
        remove_tree(self.volume_dir.parent)

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _remove_nested_cgroups(container_ids: list[str]) -> None:
    """rmdir the (empty) host cgroups of nested containers killed with the guest.

    With --cgroupns=host the nested dockerd (cgroupfs driver) puts its containers
    at /docker/<id> of the host hierarchies; nobody removes them when the whole
    guest is killed. rmdir only ever removes empty cgroups.
    """
    for cid in container_ids:
        if not re.fullmatch(r"[0-9a-f]{64}", cid):
            continue
        for path in glob.glob(f"/sys/fs/cgroup/docker/{cid}") + glob.glob(
            f"/sys/fs/cgroup/*/docker/{cid}"
        ):
            with contextlib.suppress(OSError):
                os.rmdir(path)
