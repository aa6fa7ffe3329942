"""The backend and frontend STAND-INs run as subprocesses on 127.0.0.1, driven by testbed.wsclient.

What the tier-3 cutover tests rely on: the Engine.IO WebSocket (open packet, ping/pong, echo
naming the version, close handshake), ``/api/slow``, and the graceful SIGTERM (new connections
refused, in-flight requests finished, WebSockets closed with 1001, exit 0); and the client telling
a close frame, an EOF and a reset apart.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import wsclient

STANDINS = Path(__file__).resolve().parents[1] / "standins"
SOCKET_PATH = "/socket.io/?EIO=4&transport=websocket"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Server:
    def __init__(self, script: str, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(STANDINS / script)],
            env={"PORT": str(self.port), "PATH": "/usr/bin:/bin", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"{script} did not start") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def terminate(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=20)
        return self.proc.returncode, out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def backend() -> Iterator[Server]:
    server = Server("backend/backend_standin.py", {"BUILD_VERSION": "7.1.0"})
    yield server
    server.kill()


def test_websocket_open_ping_echo_and_client_close(backend: Server) -> None:
    ws = wsclient.connect("127.0.0.1", backend.port, SOCKET_PATH)
    opened = ws.recv_frame()
    assert opened.opcode == wsclient.OP_TEXT and opened.text.startswith('0{"sid":"')
    packet = json.loads(opened.text[1:])
    assert packet["upgrades"] == [] and packet["pingTimeout"] == 20000
    ws.send_text("2")
    assert ws.recv_text() == "3"
    ws.send_text("2probe")
    assert ws.recv_text() == "3probe"
    ws.send_text("x" * 70000)  # a 64-bit length
    assert ws.recv_text() == "4echo:7.1.0:" + "x" * 70000
    ws.ping(b"p")
    assert ws.recv_frame(control=True) == wsclient.Frame(wsclient.OP_PONG, b"p")
    closed = ws.close(1000, "bye")
    assert closed is not None and closed.close_code == 1000
    with pytest.raises(wsclient.ClosedError):
        ws.recv_frame()


def test_websocket_handshake_errors(backend: Server) -> None:
    with pytest.raises(wsclient.HandshakeError) as err:
        wsclient.connect("127.0.0.1", backend.port, "/api/health")
    assert err.value.status == 200
    assert _get(f"{backend.url}/socket.io/?EIO=4&transport=polling")[1].startswith('0{"sid":')


def test_slow_request_bounds(backend: Server) -> None:
    t0 = time.monotonic()
    assert _get(f"{backend.url}/api/slow?ms=300") == (
        200,
        json.dumps({"slept_ms": 300, "version": "7.1.0"}),
    )
    assert time.monotonic() - t0 >= 0.3
    assert _get(f"{backend.url}/api/slow?ms=30001")[0] == 400
    assert _get(f"{backend.url}/api/slow?ms=-1")[0] == 400


def test_sigterm_drains_requests_then_closes_websockets_with_1001(backend: Server) -> None:
    ws = wsclient.connect("127.0.0.1", backend.port, SOCKET_PATH)
    ws.recv_frame()
    result: list[tuple[int, str]] = []
    slow = threading.Thread(target=lambda: result.append(_get(f"{backend.url}/api/slow?ms=1500")))
    slow.start()
    time.sleep(0.3)
    backend.proc.send_signal(signal.SIGTERM)
    time.sleep(0.8)  # serve_forever notices within 0.5 s
    with pytest.raises(OSError):
        _get(f"{backend.url}/api/health", timeout=2)  # no longer accepting
    ws.send_text("still there?")  # WebSockets keep working while requests drain
    assert ws.recv_text() == "4echo:7.1.0:still there?"
    frame = ws.recv_frame(timeout=10)
    assert (frame.opcode, frame.close_code, frame.close_reason) == (
        wsclient.OP_CLOSE,
        1001,
        "server shutting down",
    )
    assert ws.closed_cleanly
    slow.join()
    assert result[0][0] == 200
    out = backend.proc.communicate(timeout=10)[0]
    assert backend.proc.returncode == 0
    assert "1 in-flight request(s) finished, 0 abandoned" in out
    assert "sent close 1001 to 1 websocket(s), 1 closed cleanly" in out
    assert out.rstrip().endswith("shutdown: exit 0")


def test_frontend_sigterm_finishes_the_proxied_request(backend: Server) -> None:
    frontend = Server("frontend/frontend_standin.py", {"BACKEND_URL": backend.url})
    try:
        result: list[tuple[int, str]] = []
        slow = threading.Thread(
            target=lambda: result.append(_get(f"{frontend.url}/api/slow?ms=1000"))
        )
        slow.start()
        time.sleep(0.3)
        code, out = frontend.terminate()
        slow.join()
        assert result[0][0] == 200 and code == 0
        assert "1 in-flight request(s) finished, 0 abandoned" in out
    finally:
        frontend.kill()


def _one_shot_server(behaviour: str) -> int:
    """A server that does the handshake, then ends the connection with a FIN or a RST."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = int(listener.getsockname()[1])

    def serve() -> None:
        conn, _ = listener.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.decode().split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {wsclient.accept_key(key)}\r\n\r\n".encode()
            + wsclient.encode_frame(wsclient.OP_TEXT, b"hi", mask=False)
        )
        if behaviour == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return port


@pytest.mark.parametrize("behaviour", ["eof", "reset"])
def test_client_tells_a_reset_from_an_eof(behaviour: str) -> None:
    ws = wsclient.connect("127.0.0.1", _one_shot_server(behaviour), "/")
    assert ws.recv_text() == "hi"
    with pytest.raises(wsclient.ConnectionLostError) as err:
        ws.recv_frame(timeout=5)
    assert err.value.reset is (behaviour == "reset")
    assert not ws.closed_cleanly


def test_client_timeout_leaves_the_socket_usable(backend: Server) -> None:
    ws = wsclient.connect("127.0.0.1", backend.port, SOCKET_PATH)
    ws.recv_frame()
    with pytest.raises(TimeoutError):
        ws.recv_frame(timeout=0.2)
    ws.send_text("2")
    assert ws.recv_text() == "3"
    ws.close()
