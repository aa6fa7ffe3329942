#!/usr/bin/python3
"""smoker-infra tier-3 STAND-IN for benjr70/smart-smoker-frontend (nginx + React build; NOT it).

HTTP on 0.0.0.0:3000 (``PORT`` overrides): ``GET /`` (and any other non-API path, like the SPA's
``try_files``) -> 200 small HTML naming the version; ``/api/*`` and ``/socket.io/*`` are proxied
to ``BACKEND_URL`` (default ``http://backend:3001``, as the real nginx.conf), any method, with
body and headers; 502 when the backend cannot be reached, like nginx. Differences from nginx: the
backend name is resolved per request (nginx resolves it once at start), and WebSocket upgrades
are not proxied. SIGTERM stops it gracefully: the listening socket is closed, in-flight requests
finish (at most 10 s; responses then say ``Connection: close``), exit 0.
"""

from __future__ import annotations

import html
import http.client
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BUILD_FILE = Path("/etc/smoker-standin/build.json")
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
     "transfer-encoding", "upgrade", "host", "content-length"}
)  # fmt: skip
PROXIED = ("/api/", "/socket.io/")
DRAIN_SECONDS = 10.0


class InFlight:
    """Count of requests being handled, and whether a stop has begun."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.count = 0
        self.stopping = False

    def __enter__(self) -> None:
        with self.cond:
            self.count += 1

    def __exit__(self, *exc: object) -> None:
        with self.cond:
            self.count -= 1
            self.cond.notify_all()


IN_FLIGHT = InFlight()


def version() -> str:
    """BUILD_VERSION from the environment, else from the image's build args."""
    try:
        data = json.loads(BUILD_FILE.read_text())
    except (OSError, ValueError):
        data = {}
    return os.environ.get("BUILD_VERSION") or data.get("version") or "0.0.0-standin"


class Handler(BaseHTTPRequestHandler):
    """Static page plus a reverse proxy for the API paths."""

    server_version = "nginx-standin"
    protocol_version = "HTTP/1.1"
    backend = urlsplit("http://backend:3001")
    page = b""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = self.headers.get("Host", "")
        headers["X-Forwarded-For"] = self.client_address[0]
        headers["X-Forwarded-Proto"] = "http"
        conn = http.client.HTTPConnection(
            self.backend.hostname or "backend", self.backend.port or 80, timeout=15
        )
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as exc:
            page = f"<html><body><h1>502 Bad Gateway</h1><p>{html.escape(type(exc).__name__)}"
            self._send(502, (page + "</p></body></html>\n").encode(), "text/html")
            return
        finally:
            conn.close()
        self.send_response(resp.status, resp.reason)
        for key, value in resp.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def end_headers(self) -> None:
        if IN_FLIGHT.stopping:  # no more keep-alive once stopping
            self.send_header("Connection", "close")
        super().end_headers()

    def _handle(self) -> None:
        with IN_FLIGHT:
            self._route()

    def _route(self) -> None:
        if self.path.startswith(PROXIED) or self.path.split("?", 1)[0] in ("/api", "/socket.io"):
            self._proxy()
        elif self.command in ("GET", "HEAD"):
            self._send(200, self.page, "text/html; charset=utf-8")
        else:
            self._send(405, b"405 Not Allowed\n", "text/plain")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        path = self.path.split("?", 1)[0]
        sys.stdout.write(f"{self.log_date_time_string()} {self.command} {path} {args[1]}\n")
        sys.stdout.flush()


def shutdown(server: ThreadingHTTPServer) -> None:
    """After SIGTERM: refuse new connections, let in-flight requests finish (bounded)."""
    t0 = time.monotonic()
    server.socket.close()
    with IN_FLIGHT.cond:
        IN_FLIGHT.stopping = True
        before = IN_FLIGHT.count
        drained = IN_FLIGHT.cond.wait_for(lambda: IN_FLIGHT.count == 0, DRAIN_SECONDS)
        left = IN_FLIGHT.count
    print(f"shutdown: stopped accepting connections; {before - left} in-flight request(s) "
          f"finished, {left} abandoned ({'drained' if drained else 'timed out'} after "
          f"{time.monotonic() - t0:.1f}s)", flush=True)  # fmt: skip


def main() -> int:
    """Serve until SIGTERM, then stop gracefully."""
    ver = version()
    Handler.backend = urlsplit(os.environ.get("BACKEND_URL", "http://backend:3001"))
    Handler.page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Smart Smoker</title></head>"
        f"<body><h1>Smart Smoker (frontend STAND-IN)</h1><p id='version'>{html.escape(ver)}</p>"
        "</body></html>\n"
    ).encode()
    port = int(os.environ.get("PORT", "3000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: object) -> None:
        # serve_forever runs in this thread: shutdown() must come from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"smart-smoker frontend STAND-IN v{ver} on :{port}, proxying /api/ and /socket.io/ "
          f"to {Handler.backend.geturl()}", flush=True)  # fmt: skip
    try:
        server.serve_forever()
        shutdown(server)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("shutdown: exit 0", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
