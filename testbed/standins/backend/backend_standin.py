#!/usr/bin/python3
"""smoker-infra tier-3 STAND-IN for benjr70/smart-smoker-backend (NOT the real application).

HTTP on 0.0.0.0:3001 (``PORT`` overrides):
  GET /api/health -> 200 {"status": "ok", "version": V}; 503 forever in the HEALTHY=false variant
  GET /api/ready  -> 200 when it can authenticate to MongoDB with ``DB_URL`` (and list the
                     collections of its database); 503 otherwise (short timeouts, fresh client
                     per request so a rotated password is noticed at once)
  GET /api/version, GET /socket.io/?EIO=4&transport=polling (a minimal Engine.IO open packet)
Reads NODE_ENV, DB_URL, VAPID_PUBLIC_KEY, VAPID_PRIVATE_KEY; never prints DB_URL or a key.
The version comes from ``BUILD_VERSION`` in the environment, else from the build
(/etc/smoker-standin/build.json, written from the image's build args).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

BUILD_FILE = Path("/etc/smoker-standin/build.json")


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
        elif path.startswith("/socket.io"):
            sid = secrets.token_urlsafe(15)
            body = "0" + json.dumps(
                {"sid": sid, "upgrades": [], "pingInterval": 25000, "pingTimeout": 20000}
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

    def log_message(self, format: str, *args: Any) -> None:
        path = self.path.split("?", 1)[0]
        sys.stdout.write(f"{self.log_date_time_string()} {self.command} {path} {args[1]}\n")
        sys.stdout.flush()


def main() -> int:
    """Serve until SIGTERM."""
    info = build_info()
    Handler.info = info
    port = int(os.environ.get("PORT", "3001"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

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
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
        print(f"backend stand-in stopping after {time.monotonic() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
