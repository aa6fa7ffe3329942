"""A tiny stdlib WebSocket client (RFC 6455) for the tier-3 tests and the bench.

Usage::

    from testbed.wsclient import connect, ConnectionLostError, OP_TEXT, OP_CLOSE

    ws = connect("169.254.80.2", 80, "/socket.io/?EIO=4&transport=websocket")
    frame = ws.recv_frame()          # Frame(opcode=OP_TEXT, payload=b'0{"sid":...}')
    ws.send_text("2")                # Engine.IO ping
    assert ws.recv_text() == "3"     # pong
    frame = ws.recv_frame(timeout=30)
    if frame.opcode == OP_CLOSE:     # a clean close: the peer sent a close frame
        print(frame.close_code)      # e.g. 1001 (going away)
    ws.close()

How a connection can end, told apart:

* the peer sends a close frame: ``recv_frame`` returns it (``opcode == OP_CLOSE``,
  ``close_code``/``close_reason`` set), the client answers with a close frame and closes the
  socket (RFC 6455 5.5.1); ``closed_cleanly`` is then True and the next ``recv_frame`` raises
  ``ClosedError``;
* the TCP connection ends without a close frame: ``recv_frame`` raises ``ConnectionLostError`` with
  ``reset=True`` for a TCP reset (ECONNRESET/EPIPE) and ``reset=False`` for a plain EOF (FIN);
* nothing arrives in time: ``recv_frame`` raises ``TimeoutError`` (the connection stays usable).

The handshake failing (no ``101``, or a wrong ``Sec-WebSocket-Accept``) raises
``HandshakeError`` with the HTTP status and the response head. Frames the client sends are masked;
fragmented messages are reassembled; pings are answered automatically and not returned unless
``recv_frame(control=True)``. No TLS, no extensions (no permessage-deflate).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
import time
from typing import NamedTuple

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "ClosedError",
    "ConnectionLostError",
    "Frame",
    "HandshakeError",
    "WebSocket",
    "WebSocketError",
    "accept_key",
    "connect",
]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocketError(Exception):
    """Base class of this module's errors."""


class HandshakeError(WebSocketError):
    """The server did not switch protocols (``status`` is its HTTP status, 0 if none)."""

    def __init__(self, message: str, status: int = 0, head: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.head = head


class ConnectionLostError(WebSocketError):
    """The TCP connection ended WITHOUT a close frame: ``reset`` tells a reset from an EOF."""

    def __init__(self, message: str, reset: bool) -> None:
        super().__init__(message)
        self.reset = reset


class ClosedError(WebSocketError):
    """The WebSocket was already closed (cleanly, or by ``close()``)."""


class Frame(NamedTuple):
    """One received message or control frame: ``(opcode, payload)``."""

    opcode: int
    payload: bytes

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.payload.decode()

    @property
    def close_code(self) -> int | None:
        """The status code of a close frame (None: not a close frame, or no code in it)."""
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return int(struct.unpack("!H", self.payload[:2])[0])

    @property
    def close_reason(self) -> str:
        """The reason text of a close frame ("" if none)."""
        return self.payload[2:].decode(errors="replace") if self.opcode == OP_CLOSE else ""


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``Sec-WebSocket-Key: key``."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def encode_frame(opcode: int, payload: bytes, mask: bool = True) -> bytes:
    """One final frame (masked, as a client must send it, unless ``mask=False``)."""
    head = bytearray([0x80 | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(bit | n)
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    return bytes(head) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class WebSocket:
    """An open client WebSocket (made by ``connect``)."""

    def __init__(self, sock: socket.socket, buffered: bytes, response_head: str) -> None:
        self.sock = sock
        #: The server's handshake response (status line and headers).
        self.response_head = response_head
        #: True once a close frame was both received and sent.
        self.closed_cleanly = False
        #: The close frame the server sent, if any.
        self.close_frame: Frame | None = None
        self._buf = bytearray(buffered)
        self._sent_close = False
        self._closed = False

    # -- receiving ------------------------------------------------------------------

    def _fill(self, n: int, deadline: float | None) -> None:
        while len(self._buf) < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no complete frame in time")
                self.sock.settimeout(left)
            else:
                self.sock.settimeout(None)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError as exc:
                raise TimeoutError("no complete frame in time") from exc
            except (ConnectionResetError, BrokenPipeError) as exc:
                self._abort()
                raise ConnectionLostError(f"connection reset ({exc})", reset=True) from exc
            if not chunk:
                self._abort()
                raise ConnectionLostError(
                    "connection closed (EOF) without a close frame", reset=False
                )
            self._buf += chunk

    def _read_frame(self, deadline: float | None) -> tuple[bool, int, bytes]:
        # Parse from the buffer without consuming until the whole frame is there, so a
        # timeout leaves the connection usable.
        self._fill(2, deadline)
        fin, opcode = bool(self._buf[0] & 0x80), self._buf[0] & 0x0F
        masked, n = bool(self._buf[1] & 0x80), self._buf[1] & 0x7F
        pos = 2
        if n == 126:
            self._fill(4, deadline)
            n = struct.unpack("!H", self._buf[2:4])[0]
            pos = 4
        elif n == 127:
            self._fill(10, deadline)
            n = struct.unpack("!Q", self._buf[2:10])[0]
            pos = 10
        key = b""
        if masked:
            self._fill(pos + 4, deadline)
            key = bytes(self._buf[pos : pos + 4])
            pos += 4
        self._fill(pos + n, deadline)
        payload = bytes(self._buf[pos : pos + n])
        del self._buf[: pos + n]
        if masked:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return fin, opcode, payload

    def recv_frame(self, timeout: float | None = 10.0, control: bool = False) -> Frame:
        """The next message (fragments joined) or close frame; pings and pongs too when
        ``control``. ``timeout`` None waits forever. See the module doc for how it ends."""
        if self._closed:
            raise ClosedError("the WebSocket is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        parts: list[bytes] = []
        first_opcode = 0
        while True:
            fin, opcode, payload = self._read_frame(deadline)
            if opcode == OP_PING:
                self._send(OP_PONG, payload)
                if control:
                    return Frame(opcode, payload)
                continue
            if opcode == OP_PONG:
                if control:
                    return Frame(opcode, payload)
                continue
            if opcode == OP_CLOSE:
                frame = Frame(opcode, payload)
                self.close_frame = frame
                if not self._sent_close:
                    code = payload[:2] if len(payload) >= 2 else b""
                    self._send(OP_CLOSE, code)
                self.closed_cleanly = True
                self._abort()
                return frame
            if opcode != OP_CONTINUATION:
                first_opcode = opcode
            parts.append(payload)
            if fin:
                return Frame(first_opcode, b"".join(parts))

    def recv_text(self, timeout: float | None = 10.0) -> str:
        """The next text message; raises WebSocketError if something else comes."""
        frame = self.recv_frame(timeout)
        if frame.opcode != OP_TEXT:
            raise WebSocketError(f"expected a text frame, got {frame}")
        return frame.text

    # -- sending --------------------------------------------------------------------

    def _send(self, opcode: int, payload: bytes) -> None:
        try:
            self.sock.sendall(encode_frame(opcode, payload))
        except (ConnectionResetError, BrokenPipeError) as exc:
            self._abort()
            raise ConnectionLostError(
                f"connection reset while sending ({exc})", reset=True
            ) from exc
        if opcode == OP_CLOSE:
            self._sent_close = True

    def send_text(self, text: str) -> None:
        """Send one text message."""
        if self._closed or self._sent_close:
            raise ClosedError("the WebSocket is closed")
        self._send(OP_TEXT, text.encode())

    def send_binary(self, data: bytes) -> None:
        """Send one binary message."""
        if self._closed or self._sent_close:
            raise ClosedError("the WebSocket is closed")
        self._send(OP_BINARY, data)

    def ping(self, data: bytes = b"") -> None:
        """Send a WebSocket-level ping (the pong shows only with ``recv_frame(control=True)``)."""
        self._send(OP_PING, data)

    def close(self, code: int = 1000, reason: str = "", timeout: float = 5.0) -> Frame | None:
        """Close cleanly: send a close frame, wait (up to ``timeout``) for the server's, close
        the socket. Returns the server's close frame (None if it never came). Idempotent."""
        if self._closed:
            return self.close_frame
        try:
            if not self._sent_close:
                self._send(OP_CLOSE, struct.pack("!H", code) + reason.encode())
            deadline = time.monotonic() + timeout
            while self.close_frame is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.recv_frame(left)
        except (WebSocketError, TimeoutError, OSError):
            pass
        self._abort()
        return self.close_frame

    def _abort(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(timeout=1.0)


def connect(
    host: str,
    port: int,
    path: str = "/",
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> WebSocket:
    """Open a TCP connection and do the client handshake (``GET path`` with
    ``Upgrade: websocket``); returns the open WebSocket or raises HandshakeError/OSError."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in data:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(4096)
            if not chunk:
                raise HandshakeError(f"connection closed during the handshake: {data!r}")
            data += chunk
            if len(data) > 65536:
                raise HandshakeError("handshake response head too large")
        head, rest = data.split(b"\r\n\r\n", 1)
        text = head.decode("latin-1")
        status_line, *header_lines = text.split("\r\n")
        parts = status_line.split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status != 101:
            raise HandshakeError(f"no protocol switch: {status_line!r}", status, text)
        got = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            got[name.strip().lower()] = value.strip()
        if got.get("sec-websocket-accept") != accept_key(key):
            raise HandshakeError("wrong Sec-WebSocket-Accept", status, text)
        if got.get("upgrade", "").lower() != "websocket":
            raise HandshakeError("no 'Upgrade: websocket' in the response", status, text)
    except BaseException:
        sock.close()
        raise
    return WebSocket(sock, rest, text)
