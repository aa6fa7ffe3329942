"""An SFTP target for restic repositories that outlives the guests (a second test container).

A standalone container from the client image on the harness bridge (or on a fixed-address
network, see `ensure_network`), running sshd with per-container host keys, no password
authentication, and one user `restic` owning `/srv/restic`, authorized with an ed25519 key made
by this run. Guests reach it as production reaches its off-guest backup host: plain SSH + sftp.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from .engine import LABEL, Engine, HarnessError, log, poll_until, run_checked
from .images import ImageSet

USER = "restic"
ROOT = "/srv/restic"
SSHD_PID = "/run/sshd.pid"
SSHD_CONFIG = f"""\
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers {USER}
PidFile {SSHD_PID}
"""


def _new_key() -> tuple[str, str]:
    """A fresh ed25519 key pair: (private key in OpenSSH text, public key line)."""
    with tempfile.TemporaryDirectory(prefix="smoker-sftp-key-") as tmp:
        key = Path(tmp) / "id_ed25519"
        run_checked(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "smoker-sftp-test-only",
             "-f", str(key)],
            what="ssh-keygen",
            timeout=30,
        )  # fmt: skip
        return key.read_text(), key.with_suffix(".pub").read_text().strip()


@dataclass
class SftpTarget:
    """A running SFTP target: `repository(name)` is what restic's `-r` takes."""

    engine: Engine
    container_id: str
    address: str
    private_key: str
    known_hosts: str
    port: int = 22
    user: str = USER

    def path(self, name: str) -> str:
        """The repository directory `name` on the target."""
        return f"{ROOT}/{name}"

    def repository(self, name: str) -> str:
        """restic's repository string for `name` (`sftp:user@address:/srv/restic/name`)."""
        return f"sftp:{self.user}@{self.address}:{self.path(name)}"

    def ssh_config(self, alias: str, identity_file: str, known_hosts_file: str) -> str:
        """An ssh_config `Host alias` block reaching the target (for `ssh -F FILE alias`),
        with the key and known_hosts at the given paths on the client."""
        return (
            f"Host {alias}\n"
            f"  HostName {self.address}\n"
            f"  Port {self.port}\n"
            f"  User {self.user}\n"
            f"  IdentityFile {identity_file}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {known_hosts_file}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
            "  ConnectTimeout 10\n"
        )

    def exec(self, cmd: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """Run `cmd` (sh -c) in the target container as root."""
        return self.engine.docker("exec", self.container_id, "sh", "-c", cmd, check=check)

    def start_sshd(self) -> None:
        """Start sshd (daemonised, pid in /run/sshd.pid) and wait until it accepts connections."""
        self.exec("install -d -m 0755 /run/sshd && /usr/sbin/sshd -t && /usr/sbin/sshd")

        def listening() -> bool:
            probe = self.exec(f"nc -z -w 1 127.0.0.1 {self.port}", check=False)
            return probe.returncode == 0

        poll_until(listening, timeout=15, what=f"sshd on the SFTP target {self.address}")

    def stop_sshd(self) -> None:
        """Stop sshd by its pid (the repository becomes unreachable; connections refused)."""
        self.exec(
            f'pid=$(cat {SSHD_PID}) && kill "$pid"'
            f' && while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; rm -f {SSHD_PID}'
        )

    def files(self, name: str) -> list[str]:
        """Files under the repository directory `name`, relative and sorted ([] if absent)."""
        quoted = shlex.quote(self.path(name))
        out = self.exec(f"[ ! -d {quoted} ] || (cd {quoted} && find . -type f)").stdout
        return sorted(line.removeprefix("./") for line in out.decode().split() if line)

    def remove(self) -> None:
        """Remove the target container (and every repository in it)."""
        if self.container_id:
            self.engine.docker("rm", "-f", "-v", self.container_id, check=False, timeout=60)
            self.container_id = ""

    def __enter__(self) -> SftpTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def start_sftp_target(
    engine: Engine, images: ImageSet, *, network: str | None = None, ip: str | None = None
) -> SftpTarget:
    """Start an SFTP target container (on `network` at `ip` if given) with sshd running."""
    name = f"smoker-sftp-{uuid.uuid4().hex[:8]}"
    cid = engine.docker_text(
        "run", "-d", "--init", "--name", name, "--hostname", "smoker-sftp",
        "--label", f"{LABEL}={engine.ident}",
        *(("--network", network, "--ip", ip) if network and ip else ()),
        images.client,
    )  # fmt: skip
    target: SftpTarget | None = None
    try:
        address = engine.docker_text(
            "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", cid
        )
        if ip and address != ip:
            raise HarnessError(f"SFTP target got address {address!r}, not {ip}")
        private_key, public_key = _new_key()
        setup = (
            "rm -f /etc/ssh/ssh_host_* && ssh-keygen -q -t ed25519 -N '' -C ''"
            " -f /etc/ssh/ssh_host_ed25519_key"
            f" && useradd --create-home --shell /bin/sh {USER}"
            f" && install -d -o {USER} -g {USER} -m 0700 {ROOT} /home/{USER}/.ssh"
            f" && cat > /home/{USER}/.ssh/authorized_keys"
            f" && chown {USER}:{USER} /home/{USER}/.ssh/authorized_keys"
            f" && chmod 0600 /home/{USER}/.ssh/authorized_keys"
            f" && printf %s {shlex.quote(SSHD_CONFIG)} > /etc/ssh/sshd_config.d/restic-target.conf"
        )
        engine.docker("exec", "-i", cid, "sh", "-c", setup, input=public_key.encode() + b"\n")
        host_key = engine.docker_text("exec", cid, "cat", "/etc/ssh/ssh_host_ed25519_key.pub")
        kind, blob = host_key.split()[:2]
        target = SftpTarget(engine, cid, address, private_key, f"{address} {kind} {blob}\n")
        target.start_sshd()
        log(f"SFTP target {name} up at {target.user}@{address}:{ROOT}")
        return target
    except BaseException:
        engine.docker("rm", "-f", "-v", cid, check=False, timeout=60)
        raise
