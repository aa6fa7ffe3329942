"""A one-user SSH server on loopback (paramiko) that runs each exec request with `sh -c` on this
machine: a publisher guest for a provider running in another process. Public-key login only
(one key), an Ed25519 host key the client pins; each command gets its stdin until the client
closes it, and its stdout, stderr and exit status back."""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import threading
from types import TracebackType

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

COMMAND_TIMEOUT = 60.0


def ed25519_pair() -> tuple[str, str]:
    """(OpenSSH private key text, `ssh-ed25519 AAAA...`)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, public


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: SshServer) -> None:
        self.server = server

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == self.server.user and key.asbytes() == self.server.client_key.asbytes()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(
            target=self.server.execute, args=(channel, command.decode()), daemon=True
        ).start()
        return True


class SshServer:
    """Use as a context manager; `client_private_key` logs in as `user`, `host_key` is pinned."""

    def __init__(self, user: str = "root") -> None:
        self.user = user
        host_private, self.host_key = ed25519_pair()
        self._host_pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(host_private))
        self.client_private_key, _ = ed25519_pair()
        self.client_key = paramiko.Ed25519Key.from_private_key(io.StringIO(self.client_private_key))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.commands: list[str] = []
        self.logins = 0
        self._stop = threading.Event()
        self._transports: list[paramiko.Transport] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> SshServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for transport in self._transports:
            transport.close()
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self._host_pkey)
            self._transports.append(transport)
            with contextlib.suppress(paramiko.SSHException, EOFError):
                transport.start_server(server=_Interface(self))
                self.logins += 1

    def execute(self, channel: paramiko.Channel, command: str) -> None:
        self.commands.append(command)
        stdin = b""
        while True:  # until the client shuts its side down
            data = channel.recv(65536)
            if not data:
                break
            stdin += data
        try:
            done = subprocess.run(
                ["sh", "-c", command], input=stdin, capture_output=True, timeout=COMMAND_TIMEOUT
            )
            out, err, code = done.stdout, done.stderr, done.returncode
        except subprocess.TimeoutExpired:
            out, err, code = b"", b"timed out", 124
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            channel.sendall(out)
            channel.sendall_stderr(err)
            channel.send_exit_status(code)
            channel.close()
