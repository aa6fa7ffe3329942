#!/usr/bin/python3
"""smoker-infra tier-3 STAND-IN for benjr70/smart-smoker-backend (NOT the real application).

HTTP on 0.0.0.0:3001 (``PORT`` overrides):
  GET /api/health -> 200 {"status": "ok", "version": V}; 503 forever in the HEALTHY=false variant
  GET /api/ready  -> 200 when it can authenticate to MongoDB with ``DB_URL`` (and list the
                     collections of its database); 503 otherwise (short timeouts, fresh client
                     per request so a rotated password is noticed at once)
  GET /api/version
  GET /api/slow?ms=N -> 200 {"slept_ms": N, "version": V} after N ms (0 <= N <= 30000; else 400),
                     for drain tests: a request in flight across a cutover or a stop completes
  GET /socket.io/?EIO=4&transport=polling -> a minimal Engine.IO open packet
  GET /socket.io/?EIO=4&transport=websocket with ``Upgrade: websocket`` -> RFC 6455 handshake,
      then text frames: the server sends the Engine.IO open packet
      ``0{"sid":...,"upgrades":[],"pingInterval":25000,"pingTimeout":20000}``; it answers the
      Engine.IO ping ``2<x>`` with ``3<x>`` (so ``2`` -> ``3``, ``2probe`` -> ``3probe``),
      any other text ``T`` with ``4echo:<version>:T`` (an Engine.IO message naming the
      version that answered), a WebSocket ping with a pong, and a close frame with a close
      frame (same code). No Socket.IO layer, no binary messages (ignored).
SIGTERM, like a NestJS app with shutdown hooks: stop accepting connections (the listening
socket is closed), let in-flight HTTP requests finish (at most 10 s), send every open WebSocket
a close frame 1001 "going away" and close it, exit 0; one log line per phase (counts only).
Reads NODE_ENV, DB_URL, VAPID_PUBLIC_KEY, VAPID_PRIVATE_KEY; never prints DB_URL or a key.
The version comes from ``BUILD_VERSION`` in the environment, else from the build
(/etc/smoker-standin/build.json, written from the image's build args).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

BUILD_FILE = Path("/etc/smoker-standin/build.json")
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DRAIN_SECONDS = 10.0  # in-flight HTTP requests get this long after SIGTERM
WS_CLOSE_WAIT = 2.0  # how long to wait for the clients' close frames
SLOW_MAX_MS = 30000


def build_info() -> dict[str, Any]:
    """The build args baked into the image (version, healthy)."""
    try:
        data = json.loads(BUILD_FILE.read_text())
    except (OSError, ValueError):
        data = {}
    version = os.environ.get("BUILD_VERSION") or data.get("version") or "0.0.0-standin"
    healthy = str(data.get("healthy", "true")).lower() not in ("false", "0", "no")
    return {"version": version, "healthy": healthy}


def check_database(db_url: str | None, timeout_ms: int = 2000) -> tuple[bool, str]:
    """(ready, reason): authenticate with DB_URL and list the app database's collections."""
    if not db_url:
        return False, "DB_URL is not set"
    try:
        from pymongo import MongoClient
        from pymongo.errors import OperationFailure, PyMongoError
    except ImportError:
        return False, "pymongo is not installed"
    try:
        client: Any = MongoClient(
            db_url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms,
            appname="backend-standin",
        )
    except PyMongoError as exc:
        return False, f"invalid DB_URL ({type(exc).__name__})"
    try:
        db = client.get_default_database()
        db.command("ping")
        db.list_collection_names()
        return True, "ok"
    except OperationFailure as exc:  # e.g. 18 AuthenticationFailed, 13 Unauthorized
        return False, str((exc.details or {}).get("codeName", "OperationFailure"))
    except PyMongoError as exc:
        return False, type(exc).__name__
    finally:
        client.close()


class Tracker:
    """In-flight HTTP requests and open WebSockets, for the graceful shutdown."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.requests = 0
        self.sockets: set[WebSocketSession] = set()

    def begin(self) -> None:
        with self.cond:
            self.requests += 1

    def end(self) -> None:
        with self.cond:
            self.requests -= 1
            self.cond.notify_all()

    def add(self, ws: WebSocketSession) -> None:
        with self.cond:
            self.sockets.add(ws)

    def remove(self, ws: WebSocketSession) -> None:
        with self.cond:
            self.sockets.discard(ws)
            self.cond.notify_all()

    def wait(self, idle: Any, timeout: float) -> bool:
        """Wait until ``idle(self)`` holds (or ``timeout``); returns whether it does."""
        with self.cond:
            return bool(self.cond.wait_for(lambda: idle(self), timeout))


TRACKER = Tracker()


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked (server) frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


class WebSocketSession:
    """One upgraded connection: Engine.IO-ish text frames (see the module doc)."""

    def __init__(self, sock: socket.socket, rfile: Any, version: str) -> None:
        self.sock = sock
        self.rfile = rfile
        self.version = version
        self.lock = threading.Lock()
        self.sent_close = False

    def send(self, opcode: int, payload: bytes) -> None:
        with self.lock:
            if self.sent_close:
                return
            if opcode == 0x8:
                self.sent_close = True
            self.sock.sendall(ws_frame(opcode, payload))

    def _read(self, n: int) -> bytes:
        data = self.rfile.read(n) if n else b""
        if len(data) < n:
            raise ConnectionError("EOF")
        return data

    def read_frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        key = self._read(4) if b1 & 0x80 else b""
        payload = self._read(n)
        if key:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def go_away(self) -> None:
        """Shutdown: close frame 1001, then the client's close frame ends ``run``."""
        with contextlib.suppress(OSError):
            self.send(0x8, struct.pack("!H", 1001) + b"server shutting down")

    def run(self) -> None:
        sid = secrets.token_urlsafe(15)
        open_packet = {"sid": sid, "upgrades": [], "pingInterval": 25000, "pingTimeout": 20000}
        self.send(0x1, ("0" + json.dumps(open_packet, separators=(",", ":"))).encode())
        message: list[bytes] = []
        while True:
            fin, opcode, payload = self.read_frame()
            if opcode == 0x8:  # close: answer with the same code (unless we started it)
                self.send(0x8, payload[:2])
                return
            if opcode == 0x9:
                self.send(0xA, payload)
                continue
            if opcode in (0x1, 0x0):
                message.append(payload)
                if not fin:
                    continue
                text = b"".join(message).decode(errors="replace")
                message = []
                if text.startswith("2"):
                    self.send(0x1, ("3" + text[1:]).encode())
                else:
                    self.send(0x1, f"4echo:{self.version}:{text}".encode())


class Handler(BaseHTTPRequestHandler):
    """The backend's HTTP surface (JSON everywhere)."""

    server_version = "smart-smoker-backend-standin"
    info: ClassVar[dict[str, Any]] = {"version": "?", "healthy": True}

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self) -> None:
        TRACKER.begin()
        try:
            if self._is_websocket():
                TRACKER.end()  # a WebSocket is tracked as such, not as a request
                try:
                    self._websocket()
                finally:
                    TRACKER.begin()
                return
            self._get()
        finally:
            TRACKER.end()

    def _is_websocket(self) -> bool:
        url = urlsplit(self.path)
        return (
            url.path.startswith("/socket.io")
            and parse_qs(url.query).get("transport") == ["websocket"]
            and self.headers.get("Upgrade", "").lower() == "websocket"
        )

    def _websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "")
        if not key or self.headers.get("Sec-WebSocket-Version") != "13":
            self._json(400, {"code": 3, "message": "Bad request"})
            return
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.wfile.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        self.close_connection = True
        ws = WebSocketSession(self.connection, self.rfile, self.info["version"])
        TRACKER.add(ws)
        self._log("GET", "/socket.io/ 101 (websocket)")
        try:
            ws.run()
        except (OSError, ValueError):
            pass  # reset or EOF: the client went away
        finally:
            TRACKER.remove(ws)
            self._log("GET", "/socket.io/ websocket closed")

    def _get(self) -> None:
        path = self.path.split("?", 1)[0]
        version = self.info["version"]
        if path == "/api/health":
            if self.info["healthy"]:
                self._json(200, {"status": "ok", "version": version})
            else:
                self._json(503, {"status": "error", "version": version, "reason": "broken build"})
        elif path == "/api/ready":
            ready, reason = check_database(os.environ.get("DB_URL"))
            status = {"status": "ready" if ready else "unavailable", "version": version}
            if not ready:
                status["reason"] = reason
            self._json(200 if ready else 503, status)
        elif path == "/api/version":
            self._json(200, {"version": version, "standin": True})
        elif path == "/api/slow":
            raw = parse_qs(urlsplit(self.path).query).get("ms", ["0"])[0]
            if not raw.isdigit() or int(raw) > SLOW_MAX_MS:
                self._json(400, {"statusCode": 400, "message": f"ms must be 0..{SLOW_MAX_MS}"})
                return
            time.sleep(int(raw) / 1000)
            self._json(200, {"slept_ms": int(raw), "version": version})
        elif path.startswith("/socket.io"):
            sid = secrets.token_urlsafe(15)
            body = "0" + json.dumps(
                {"sid": sid, "upgrades": [], "pingInterval": 25000, "pingTimeout": 20000},
                separators=(",", ":"),
            )
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self._json(404, {"statusCode": 404, "message": f"Cannot GET {path}"})

    do_HEAD = do_GET  # noqa: N815

    def _log(self, command: str, rest: str) -> None:
        sys.stdout.write(f"{self.log_date_time_string()} {command} {rest}\n")
        sys.stdout.flush()

    def log_message(self, format: str, *args: Any) -> None:
        path = self.path.split("?", 1)[0] if hasattr(self, "path") else "-"
        detail = args[1] if len(args) > 1 else (args[0] if args else "")
        self._log(getattr(self, "command", "-") or "-", f"{path} {detail}")


def shutdown(server: ThreadingHTTPServer) -> None:
    """The graceful stop (see the module doc); called in the main thread after SIGTERM."""
    t0 = time.monotonic()
    server.socket.close()  # new connections are refused from now on
    with TRACKER.cond:
        requests, sockets = TRACKER.requests, len(TRACKER.sockets)
    print(f"shutdown: stopped accepting connections; {requests} request(s) in flight, "
          f"{sockets} websocket(s) open", flush=True)  # fmt: skip
    drained = TRACKER.wait(lambda t: t.requests == 0, DRAIN_SECONDS)
    with TRACKER.cond:
        left = TRACKER.requests
        open_sockets = list(TRACKER.sockets)
    print(f"shutdown: {requests - left} in-flight request(s) finished, {left} abandoned "
          f"({'drained' if drained else 'timed out'} after {time.monotonic() - t0:.1f}s)",
          flush=True)  # fmt: skip
    for ws in open_sockets:
        ws.go_away()
    closed = TRACKER.wait(lambda t: not t.sockets, WS_CLOSE_WAIT)
    with TRACKER.cond:
        stuck = list(TRACKER.sockets)
    for ws in stuck:
        with contextlib.suppress(OSError):
            ws.sock.shutdown(socket.SHUT_RDWR)
    print(f"shutdown: sent close 1001 to {len(open_sockets)} websocket(s), "
          f"{len(open_sockets) - len(stuck)} closed cleanly"
          f"{'' if closed else f', {len(stuck)} cut off'}", flush=True)  # fmt: skip


def main() -> int:
    """Serve until SIGTERM, then stop gracefully."""
    info = build_info()
    Handler.info = info
    port = int(os.environ.get("PORT", "3001"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: object) -> None:
        # serve_forever runs in this thread: shutdown() must come from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    present = {k: ("set" if os.environ.get(k) else "unset") for k in
               ("DB_URL", "VAPID_PUBLIC_KEY", "VAPID_PRIVATE_KEY")}  # fmt: skip
    print(
        f"smart-smoker backend STAND-IN v{info['version']} (healthy={info['healthy']}) on :{port}; "
        f"NODE_ENV={os.environ.get('NODE_ENV', '')} {present}",
        flush=True,
    )
    started = time.monotonic()
    try:
        server.serve_forever()
        print(f"backend stand-in: SIGTERM after {time.monotonic() - started:.0f}s", flush=True)
        shutdown(server)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("shutdown: exit 0", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
