"""Traffic INSIDE a test guest while it deploys: bounded probe loops, slow requests, WebSockets.

The loopback ports Tailscale serve targets (127.0.0.1:3001 and :80, the proxy's) exist only on
the guest, so the traffic runs there: a small python3 script (stdlib only, plus
`testbed/wsclient.py` copied next to it) started over SSH in the background. It stops when told
to, after `max_seconds`, or after `max_count` probes per target, whichever comes first, and writes
a JSON summary. Shared by the tier-3 cutover tests and `make bench`.

    with traffic(guest, probes=[BACKEND, FRONTEND]) as t:
        deploy(...)
    summary = t.summary   # {"targets": {url: {"ok", "failed", "first_failures", ...}}, ...}
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from testbed.harness import Guest

BACKEND = "http://127.0.0.1:3001/api/health"
FRONTEND = "http://127.0.0.1:80/"
STATUS = "http://127.0.0.1:3099/release"
WS_PATH = "/socket.io/?EIO=4&transport=websocket"
REMOTE_DIR = "/root/tier3-traffic"
WSCLIENT = Path(__file__).resolve().parents[2] / "testbed" / "wsclient.py"

SCRIPT = r'''
import http.client, json, os, sys, threading, time
from urllib.parse import urlsplit
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

spec = json.loads(sys.argv[1])
out, stop_file = spec["out"], spec["stop_file"]
t0 = time.time()
deadline = time.monotonic() + spec["max_seconds"]
stop = threading.Event()
lock = threading.Lock()


def now():
    return round(time.time() - t0, 3)


def get(url, timeout):
    """(status, body, error) of one GET on a fresh connection (like a new client)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", parts.path + (("?" + parts.query) if parts.query else ""))
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace"), ""
    except Exception as exc:
        return 0, "", f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def label(body):
    """The version (JSON `version`) or the body's first line: what answered."""
    try:
        return str(json.loads(body).get("version"))
    except Exception:
        return body.strip().splitlines()[0][:40] if body.strip() else ""


def probe(url, result):
    count = 0
    while not stop.is_set() and count < spec["max_count"] and time.monotonic() < deadline:
        started = time.perf_counter()
        status, body, error = get(url, spec["timeout"])
        elapsed = time.perf_counter() - started
        count += 1
        with lock:
            if status == 200:
                result["ok"] += 1
                result["latencies_ms"].append(round(elapsed * 1000, 3))
                seen = label(body)
                if not result["answers"] or result["answers"][-1][1] != seen:
                    result["answers"].append([now(), seen])
            else:
                result["failed"] += 1
                if len(result["first_failures"]) < 10:
                    result["first_failures"].append([now(), status, error or body[:200]])
        time.sleep(max(0.0, spec["interval"] - elapsed))


def slow(conf, results):
    """A slow request every `every` s, each in its own thread: [start, end, status, version]."""
    threads = []
    while not stop.is_set() and time.monotonic() < deadline and len(threads) < 400:
        def one():
            start = now()
            status, body, error = get(conf["url"], conf["timeout"])
            with lock:
                results.append([start, now(), status, label(body) if status == 200 else error])
        t = threading.Thread(target=one, daemon=True)
        t.start()
        threads.append(t)
        stop.wait(conf["every"])
    for t in threads:
        t.join(conf["timeout"] + 1)


def websocket(conf, result):
    """One WebSocket open from the start: every frame it gets until it closes; then a new one."""
    import wsclient

    def hello(ws):
        ws.recv_frame(timeout=5)  # the Engine.IO open packet
        ws.send_text("hello")
        return ws.recv_text(timeout=5).split(":")[1]  # 4echo:<version>:hello

    try:
        ws = wsclient.connect(conf["host"], conf["port"], conf["path"])
        result["first_version"] = hello(ws)
    except Exception as exc:
        result["error"] = f"connect: {type(exc).__name__}: {exc}"
        return
    result["connected_at"] = now()
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            frame = ws.recv_frame(timeout=0.5)
        except TimeoutError:
            continue
        except wsclient.ConnectionLostError as exc:
            result["lost"] = {"at": now(), "reset": exc.reset, "error": str(exc)}
            break
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
            break
        code = frame.close_code if frame.opcode == 8 else None
        result["frames"].append([now(), frame.opcode, code])
        if frame.opcode == 8:
            result["closed_cleanly"] = ws.closed_cleanly
            try:
                ws.recv_frame(timeout=1)
                result["after_close"] = "a frame"
            except wsclient.ClosedError:
                result["after_close"] = "closed"
            except Exception as exc:
                result["after_close"] = type(exc).__name__
            try:  # reconnect at once, as socket.io clients do
                again = wsclient.connect(conf["host"], conf["port"], conf["path"])
                result["reconnected_version"] = hello(again)
                again.close()
            except Exception as exc:
                result["reconnect_error"] = f"{type(exc).__name__}: {exc}"
            return
    ws.close(timeout=1)


def waiter():
    while not stop.is_set():
        if os.path.exists(stop_file) or time.monotonic() >= deadline:
            stop.set()
        time.sleep(0.05)


summary = {"targets": {}, "slow": [], "ws": None, "started": t0}
threads = [threading.Thread(target=waiter, daemon=True)]
for url in spec["probes"]:
    result = {"ok": 0, "failed": 0, "first_failures": [], "answers": [], "latencies_ms": []}
    summary["targets"][url] = result
    threads.append(threading.Thread(target=probe, args=(url, result)))
if spec.get("slow"):
    threads.append(threading.Thread(target=slow, args=(spec["slow"], summary["slow"])))
if spec.get("ws"):
    summary["ws"] = {"frames": []}
    threads.append(threading.Thread(target=websocket, args=(spec["ws"], summary["ws"])))
for t in threads:
    t.start()
open(spec["ready_file"], "w").close()
for t in threads[1:]:
    t.join()
stop.set()
summary["seconds"] = now()
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(summary, f)
os.replace(tmp, out)
'''


class Traffic:
    """Traffic started on a guest (see the module doc); `stop()` returns its summary."""

    def __init__(self, guest: Guest, name: str, spec: dict[str, Any]) -> None:
        self.guest, self.name, self.spec = guest, name, spec
        self.summary: dict[str, Any] = {}

    def start(self) -> Traffic:
        g, spec = self.guest, self.spec
        g.run(
            f"mkdir -p {REMOTE_DIR} && rm -f {spec['out']} {spec['stop_file']} {spec['ready_file']}"
        )
        g.run(f"cat > {REMOTE_DIR}/traffic.py", input=SCRIPT.encode())
        g.run(f"cat > {REMOTE_DIR}/wsclient.py", input=WSCLIENT.read_bytes())
        arg = shlex.quote(json.dumps(spec))
        log = f"{REMOTE_DIR}/{self.name}.log"
        g.run(f"nohup python3 {REMOTE_DIR}/traffic.py {arg} >{log} 2>&1 </dev/null &")
        self._wait(f"test -e {spec['ready_file']}", 15, "the traffic to start")
        return self

    def stop(self, timeout: float = 30) -> dict[str, Any]:
        self.guest.run(f"touch {self.spec['stop_file']}")
        return self.wait(timeout)

    def wait(self, timeout: float) -> dict[str, Any]:
        """The summary, once the script has written it (it stopped by itself or was told to)."""
        self._wait(f"test -e {self.spec['out']}", timeout, "the traffic's summary")
        self.summary = json.loads(self.guest.run(f"cat {self.spec['out']}").stdout)
        return self.summary

    def _wait(self, test: str, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while self.guest.run(test, check=False).returncode != 0:
            if time.monotonic() > deadline:
                log = self.guest.run(f"cat {REMOTE_DIR}/{self.name}.log", check=False).stdout
                raise TimeoutError(f"{what}: nothing after {timeout:g} s; log: {log[-2000:]}")
            time.sleep(0.1)

    # -- what the summary says ------------------------------------------------------------------

    def failed(self) -> dict[str, int]:
        return {url: r["failed"] for url, r in self.summary["targets"].items()}

    def ok(self) -> dict[str, int]:
        return {url: r["ok"] for url, r in self.summary["targets"].items()}

    def counts(self) -> str:
        """For messages and the report: `url ok/failed` per target."""
        return ", ".join(
            f"{url} {r['ok']} ok/{r['failed']} failed {r['first_failures'][:3]}"
            for url, r in self.summary["targets"].items()
        )


def traffic(
    guest: Guest,
    name: str = "probe",
    probes: tuple[str, ...] = (BACKEND, FRONTEND),
    *,
    interval: float = 0.05,
    max_seconds: float = 300,
    max_count: int = 20000,
    timeout: float = 2.0,
    slow: dict[str, Any] | None = None,
    ws: bool = False,
) -> Traffic:
    """A Traffic (not started): probes every `interval` s, bounded by time and count."""
    spec: dict[str, Any] = {
        "probes": list(probes),
        "interval": interval,
        "max_seconds": max_seconds,
        "max_count": max_count,
        "timeout": timeout,
        "out": f"{REMOTE_DIR}/{name}.json",
        "stop_file": f"{REMOTE_DIR}/{name}.stop",
        "ready_file": f"{REMOTE_DIR}/{name}.ready",
    }
    if slow:
        spec["slow"] = slow
    if ws:
        spec["ws"] = {"host": "127.0.0.1", "port": 3001, "path": WS_PATH}
    return Traffic(guest, name, spec)


@contextmanager
def probing(guest: Guest, name: str = "probe", **options: Any) -> Iterator[Traffic]:
    """Traffic for the length of the block; its summary is in `.summary` afterwards."""
    t = traffic(guest, name, **options).start()
    try:
        yield t
    finally:
        t.stop()
