"""STAND-IN for the GitHub REST API a self-hosted runner guest talks to (tier-3 tests only).

It serves, over plain HTTP on the harness bridge: registration-token minting with a personal
access token (`POST /{scope}/actions/runners/registration-token`), the runner list by name and
runner deletion (`GET /{scope}/actions/runners?name=`, `DELETE /{scope}/actions/runners/{id}`),
the registration the stand-in config.sh makes with a registration token, the stand-in run.sh's
heartbeats, and release files (`GET /downloads/<name>`). `scope` is `repos/OWNER/REPO` or
`orgs/ORG`; only the configured one answers.

What it cannot prove: that GitHub answers the same way (its JSON beyond the fields used here,
pagination, rate limits, fine-grained PAT permissions, registration tokens expiring after an
hour); the real runner's registration protocol (config.sh talks to GitHub's runner-registration
endpoint and the Actions service and writes .runner and .credentials in its own format); TLS.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class Runner:
    id: int
    name: str
    labels: tuple[str, ...]
    credential: str
    heartbeats: int = 0


@dataclass
class Registration:
    """What one registration by config.sh carried (the test checks it; never a token)."""

    name: str
    labels: tuple[str, ...]
    url: str
    token_kind: str  # "minted" (from the PAT) or "one-time" (given to the guest)


@dataclass
class State:
    scope: str
    pats: set[str]
    one_time_tokens: set[str] = field(default_factory=set)
    minted: set[str] = field(default_factory=set)
    runners: dict[int, Runner] = field(default_factory=dict)
    registrations: list[Registration] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    next_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)


class GitHubStandin:
    """The API stand-in on `host` (a free port), in a thread: a context manager."""

    def __init__(self, host: str, scope: str, pats: set[str]) -> None:
        self.state = State(scope=scope, pats=set(pats))
        self._server = ThreadingHTTPServer((host, 0), _handler(self.state))
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> GitHubStandin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def serve_file(self, name: str, data: bytes) -> str:
        with self.state.lock:
            self.state.files[name] = data
        return f"{self.url}/downloads/{name}"

    def add_one_time_token(self, token: str) -> None:
        with self.state.lock:
            self.state.one_time_tokens.add(token)

    def runners(self) -> list[Runner]:
        with self.state.lock:
            return list(self.state.runners.values())

    def registrations(self) -> list[Registration]:
        with self.state.lock:
            return list(self.state.registrations)

    def delete_runner(self, name: str) -> None:
        """What deleting the runner in GitHub's settings does."""
        with self.state.lock:
            for runner in [r for r in self.state.runners.values() if r.name == name]:
                del self.state.runners[runner.id]


def _handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def _answer(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _pat_ok(self) -> bool:
            auth = self.headers.get("Authorization", "")
            if auth.removeprefix("Bearer ") in state.pats and auth.startswith("Bearer "):
                return True
            self._answer(401, {"message": "Bad credentials"})
            return False

        def _runners_path(self) -> str | None:
            """The path below `{scope}/actions/runners`, or None for another scope or path."""
            path = urlparse(self.path).path.lstrip("/")
            prefix = f"{state.scope}/actions/runners"
            if path == prefix or path.startswith(prefix + "/"):
                return path[len(prefix) :]
            self._answer(404, {"message": "Not Found"})
            return None

        def do_GET(self) -> None:
            if self.path.startswith("/downloads/"):
                data = state.files.get(self.path.removeprefix("/downloads/"))
                if data is None:
                    self._answer(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            rest = self._runners_path()
            if rest is None or not self._pat_ok():
                return
            if rest:
                self._answer(404, {"message": "Not Found"})
                return
            name = parse_qs(urlparse(self.path).query).get("name", [None])[0]
            with state.lock:
                found = [r for r in state.runners.values() if name in (None, r.name)]
            listed = [
                {
                    "id": r.id,
                    "name": r.name,
                    "os": "linux",
                    "status": "online" if r.heartbeats else "offline",
                    "labels": [{"name": label} for label in r.labels],
                }
                for r in found
            ]
            self._answer(200, {"total_count": len(listed), "runners": listed})

        def do_DELETE(self) -> None:
            rest = self._runners_path()
            if rest is None or not self._pat_ok():
                return
            match = re.fullmatch(r"/(\d+)", rest)
            with state.lock:
                gone = match is not None and state.runners.pop(int(match[1]), None) is not None
            self._answer(204 if gone else 404, None if gone else {"message": "Not Found"})

        def do_POST(self) -> None:
            path = urlparse(self.path).path
            if path == "/standin/register":
                self._register()
            elif path == "/standin/heartbeat":
                self._heartbeat()
            else:
                rest = self._runners_path()
                if rest is None or not self._pat_ok():
                    return
                if rest != "/registration-token":
                    self._answer(404, {"message": "Not Found"})
                    return
                token = "STANDIN" + secrets.token_hex(16).upper()
                with state.lock:
                    state.minted.add(token)
                self._answer(201, {"token": token, "expires_at": "2099-01-01T00:00:00Z"})

        def _register(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            token, name = body.get("token", ""), body.get("name", "")
            with state.lock:
                if token in state.minted:
                    kind = "minted"
                elif token in state.one_time_tokens:
                    kind = "one-time"
                else:
                    self._answer(401, {"message": "invalid registration token"})
                    return
                taken = [r.id for r in state.runners.values() if r.name == name]
                if taken and not body.get("replace"):
                    self._answer(409, {"message": f"a runner named {name} exists"})
                    return
                (state.minted if kind == "minted" else state.one_time_tokens).discard(token)
                for runner_id in taken:
                    del state.runners[runner_id]
                labels = tuple(label for label in body.get("labels", "").split(",") if label)
                runner = Runner(state.next_id, name, labels, secrets.token_hex(16))
                state.next_id += 1
                state.runners[runner.id] = runner
                state.registrations.append(Registration(name, labels, body.get("url", ""), kind))
            self._answer(201, {"id": runner.id, "credential": runner.credential})

        def _heartbeat(self) -> None:
            credential = self.headers.get("Authorization", "").removeprefix("RunnerCredential ")
            with state.lock:
                runner = next(
                    (r for r in state.runners.values() if r.credential == credential), None
                )
                if runner is not None:
                    runner.heartbeats += 1
            self._answer(404 if runner is None else 200, {})

    return Handler
