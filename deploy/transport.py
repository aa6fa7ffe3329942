"""Reaching a guest: SSH (paramiko) with a pinned host key, and TCP tunnels to its loopback."""

from __future__ import annotations

import base64
import contextlib
import io
import select
import shlex
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import paramiko

from errors import SmokerError


class TransportError(SmokerError):
    """The guest could not be reached, or the connection to it was lost."""


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str
    private_key: str = field(repr=False)
    port: int = 22
    host_key: str = ""  # "ssh-ed25519 AAAA...": always pinned, never "accept anything"
    connect_timeout: float = 15.0


def _load_key(text: str) -> paramiko.PKey:
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        with contextlib.suppress(paramiko.SSHException, ValueError):
            return cls.from_private_key(io.StringIO(text))
    raise TransportError("the SSH private key could not be read (ed25519, ecdsa or rsa)")


def parse_host_key(text: str) -> tuple[str, bytes]:
    """`ssh-ed25519 AAAA...` -> (key type, key blob); a `TransportError` naming the fix."""
    words = text.split()
    try:
        if len(words) < 2 or not words[0].startswith(("ssh-", "ecdsa-")):
            raise ValueError("not `type base64`")
        blob = base64.b64decode(words[1], validate=True)
        if paramiko.PKey.from_type_string(words[0], blob).get_name() != words[0]:
            raise ValueError("the type does not match the key")
    except (ValueError, paramiko.SSHException) as exc:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise TransportError(
            f"the pinned host key {shown!r} is not a valid public key ({exc}): use the guest's "
            "`ssh-keyscan -t ed25519 HOST | cut -d' ' -f2-` output"
        ) from None
    return words[0], blob


class _PinnedHostKey(paramiko.MissingHostKeyPolicy):
    """Accept exactly the configured host key; anything else is refused."""

    def __init__(self, expected: str) -> None:
        self.kind, self.blob = parse_host_key(expected)

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if key.get_name() != self.kind or key.asbytes() != self.blob:
            raise TransportError(
                f"host key of {hostname} does not match the pinned {self.kind} key: refusing"
            )


@contextlib.contextmanager
def ssh_client(target: SshTarget) -> Iterator[paramiko.SSHClient]:
    if not target.host_key:
        raise TransportError(
            f"no pinned host key for {target.host}: set guests.<name>.sshHostKey "
            "(or let the guest's readiness step record it)"
        )
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(_PinnedHostKey(target.host_key))
    try:
        client.connect(
            target.host,
            port=target.port,
            username=target.user,
            pkey=_load_key(target.private_key),
            timeout=target.connect_timeout,
            banner_timeout=target.connect_timeout,
            auth_timeout=target.connect_timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise TransportError(
            f"SSH to {target.user}@{target.host}:{target.port} failed: {exc or type(exc).__name__}"
        ) from exc
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def tunnel(
    client: paramiko.SSHClient, remote_port: int, remote_host: str = "127.0.0.1"
) -> Iterator[int]:
    """Forward a local loopback port to `remote_host:remote_port` as seen from the guest."""
    transport = client.get_transport()
    if transport is None:
        raise TransportError("the SSH connection is closed")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def pump(local: socket.socket) -> None:
        try:
            channel = transport.open_channel(
                "direct-tcpip", (remote_host, remote_port), local.getpeername()
            )
        except paramiko.SSHException:
            local.close()
            return
        with contextlib.closing(local), contextlib.closing(channel):
            while not stop.is_set():
                ready, _, _ = select.select([local, channel], [], [], 0.2)
                if local in ready:
                    data = local.recv(65536)
                    if not data:
                        return
                    channel.sendall(data)
                if channel in ready:
                    data = channel.recv(65536)
                    if not data:
                        return
                    local.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                local, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=pump, args=(local,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        acceptor.join(timeout=2)


# ---------------------------------------------------------------------------------------------
# Running commands on a host: the interface the deploy engine is written against


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Transport(Protocol):
    """Runs a shell command on the target host as root, with optional stdin, and reaches the
    host's loopback ports (`forward` yields a local port that leads to `port` on the host)."""

    def run(self, command: str, stdin: bytes = b"", timeout: float = 120) -> CommandResult: ...

    def forward(self, port: int) -> contextlib.AbstractContextManager[int]: ...


class LocalTransport:
    """This machine (operator tooling on the host itself, and tests)."""

    def run(self, command: str, stdin: bytes = b"", timeout: float = 120) -> CommandResult:
        try:
            done = subprocess.run(
                ["sh", "-c", command], input=stdin, capture_output=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise TransportError(f"command timed out after {timeout:.0f} s") from exc
        return CommandResult(
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )

    def forward(self, port: int) -> contextlib.AbstractContextManager[int]:
        return contextlib.nullcontext(port)


class SshTransport:
    """A guest over one SSH connection with a pinned host key (see `ssh_client`)."""

    def __init__(self, client: paramiko.SSHClient, sudo: bool = False) -> None:
        self._client, self._sudo = client, sudo

    def run(self, command: str, stdin: bytes = b"", timeout: float = 120) -> CommandResult:
        if self._sudo:  # a non-root login (the device VM): root through passwordless sudo
            command = f"sudo -n sh -c {shlex.quote(command)}"
        connection = self._client.get_transport()
        if connection is None or not connection.is_active():
            raise TransportError("SSH command failed: the connection is closed")
        try:
            channel_in, channel_out, channel_err = self._client.exec_command(
                command, timeout=timeout
            )
            if stdin:
                channel_in.write(stdin)
            channel_in.channel.shutdown_write()
            out = channel_out.read().decode(errors="replace")
            err = channel_err.read().decode(errors="replace")
            code = channel_out.channel.recv_exit_status()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise TransportError(f"SSH command failed: {exc or type(exc).__name__}") from exc
        return CommandResult(code, out, err)

    def forward(self, port: int) -> contextlib.AbstractContextManager[int]:
        return tunnel(self._client, port)


@contextlib.contextmanager
def connect(target: SshTarget) -> Iterator[SshTransport]:
    """One SSH connection to the target (host key pinned), as a Transport."""
    with ssh_client(target) as client:
        yield SshTransport(client, sudo=target.user != "root")
