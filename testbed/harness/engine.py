"""An isolated Docker engine owned by one test run.

The engine never touches the machine's own Docker socket, network or firewall:
it runs with ``--iptables=false --ip-forward=false --ip-masq=false`` on a
link-local bridge (169.254.77.0/24), keeps its data root in a persistent cache
directory (so built images survive between runs) and its exec root and socket
under a short path in /run (unix socket paths are limited to 108 bytes).

Only one harness engine may run on the machine at a time (they would share the
``docker0`` bridge address): the owner holds an ``flock`` on
/run/smoker-harness.lock. A dockerd left behind by a killed run is recognised by
its command line (``dockerd`` with our ``--data-root``) and stopped by PID.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
DEFAULT_CACHE_DIR = "/var/tmp/smoker-infra-harness"
BRIDGE_IP = "169.254.77.1/24"
ADDRESS_POOL = "base=169.254.80.0/20,size=24"
#: Held (flock) by the one process that owns the harness engine; holds "PID CACHE_DIR".
LOCK_PATH = Path("/run/smoker-harness.lock")
#: Label put on every container the harness creates (value: engine id).
LABEL = "smoker-test.harness"

_T = TypeVar("_T")
_START = time.monotonic()


class HarnessError(RuntimeError):
    """The test harness could not do what was asked (with diagnostics)."""


def log(message: str) -> None:
    """Progress line on stderr, with seconds since the harness was imported."""
    print(f"[harness {time.monotonic() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


def tail(text: str, lines: int = 40) -> str:
    """Last ``lines`` lines of ``text``."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def poll_until(
    probe: Callable[[], _T | None],
    *,
    timeout: float,
    what: str,
    diagnostics: Callable[[], str] | None = None,
    interval: float = 0.1,
    max_interval: float = 1.0,
) -> _T:
    """Call ``probe`` until it returns something other than None/False.

    Raises HarnessError naming ``what`` and the diagnostics on timeout. The
    probe may raise HarnessError itself to abort early (e.g. process died).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            detail = ""
            if diagnostics is not None:
                try:
                    detail = "\n" + diagnostics()
                except Exception as exc:  # diagnostics are best effort
                    detail = f"\n(could not collect diagnostics: {exc})"
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, max_interval)


def remove_tree(path: Path) -> None:
    """``rm -rf`` that first unmounts anything mounted below ``path`` and never
    crosses into another file system (e.g. a leftover /proc in a rootfs)."""
    if not path.exists():
        return
    prefix = str(path).rstrip("/") + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == str(path) or point.startswith(prefix):
            mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False, capture_output=True)


def cache_dir() -> Path:
    """The persistent harness directory (env ``SMOKER_HARNESS_DIR`` overrides)."""
    return Path(os.environ.get("SMOKER_HARNESS_DIR") or DEFAULT_CACHE_DIR).resolve()


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Field 3 is the state; a zombie has exited already.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child
    """Child: get SIGTERM if the harness process dies, and leave our session."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


class Engine:
    """A dockerd started and stopped by the harness, reached only via its own socket."""

    def __init__(self, directory: Path | None = None) -> None:
        self.cache_dir = (directory or cache_dir()).resolve()
        self.data_root = self.cache_dir / "docker-data"
        self.log_path = self.cache_dir / "dockerd.log"
        self.config_dir = self.cache_dir / "docker-config"
        ident = hashlib.sha256(str(self.cache_dir).encode()).hexdigest()[:8]
        #: Short id for this cache dir; also the value of the container label.
        self.ident = ident
        self.run_dir = Path(f"/run/smoker-harness-{ident}")
        self.exec_root = self.run_dir / "x"
        self.socket_path = self.run_dir / "d.sock"
        self.pidfile = self.run_dir / "dockerd.pid"
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None

    # -- client side -------------------------------------------------------------

    @property
    def host(self) -> str:
        """The DOCKER_HOST value of this engine."""
        return f"unix://{self.socket_path}"

    def env(self) -> dict[str, str]:
        """Environment for a docker CLI talking to this engine (and nothing else)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.config_dir)
        env["DOCKER_BUILDKIT"] = "0"
        return env

    def docker_argv(self) -> list[str]:
        """argv prefix of the docker CLI bound to this engine."""
        return [DOCKER, "-H", self.host]

    def docker(
        self,
        *args: str,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = 300,
        capture: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``docker ARGS`` against this engine.

        With ``capture=False`` output goes to our stderr (for long builds).
        """
        argv = [*self.docker_argv(), *args]
        try:
            result = subprocess.run(
                argv,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else 2,
                stderr=subprocess.PIPE if capture else 2,
                env=self.env(),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"docker {' '.join(args[:3])} timed out after {timeout}s") from exc
        if check and result.returncode != 0:
            err = (result.stderr or b"").decode(errors="replace")
            raise HarnessError(
                f"docker {' '.join(args)} failed (exit {result.returncode}):\n{tail(err)}"
            )
        return result

    def docker_text(self, *args: str, check: bool = True, timeout: float | None = 300) -> str:
        """Run ``docker ARGS`` and return its stripped stdout."""
        out = self.docker(*args, check=check, timeout=timeout).stdout
        return out.decode(errors="replace").strip()

    def image_exists(self, ref: str) -> bool:
        """Whether the engine has image ``ref``."""
        return self.docker("image", "inspect", ref, check=False).returncode == 0

    def ping(self) -> bool:
        """True if the engine answers ``GET /_ping`` on its socket."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(str(self.socket_path))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
        except OSError:
            return False
        return data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0]

    def log_tail(self, lines: int = 40) -> str:
        """Tail of the dockerd log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no dockerd log)"
        return f"--- dockerd log ({self.log_path}) ---\n{tail(text, lines)}"

    # -- lifecycle ---------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether our dockerd process is alive."""
        return self.pid is not None and pid_alive(self.pid)

    def _acquire_lock(self) -> None:
        # Machine-wide: every harness engine uses docker0 with the same bridge
        # address, so two engines at once (even with different cache dirs) would clash.
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 512, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise HarnessError(
                f"another harness process owns the test engine ({LOCK_PATH}: {owner}); "
                "wait for it or stop it with `python -m testbed.harness down`"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.cache_dir}\n".encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _is_our_dockerd(self, pid: int) -> bool:
        argv = cmdline(pid)
        if not argv or Path(argv[0]).name != "dockerd":
            return False
        for i, arg in enumerate(argv):
            if arg == "--data-root" and i + 1 < len(argv):
                return Path(argv[i + 1]) == self.data_root
            if arg.startswith("--data-root="):
                return Path(arg.split("=", 1)[1]) == self.data_root
        return False

    def leftover_pids(self) -> list[int]:
        """PIDs of dockerd processes running with our data root (pidfile first)."""
        pids: list[int] = []
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pidfile.read_text().strip())
            if pid_alive(pid) and self._is_our_dockerd(pid):
                pids.append(pid)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                pid = int(entry.name)
                if (
                    pid not in pids
                    and pid != self.pid
                    and pid_alive(pid)
                    and self._is_our_dockerd(pid)
                ):
                    pids.append(pid)
        return pids

    def _kill_leftovers(self) -> None:
        for pid in self.leftover_pids():
            log(f"stopping leftover dockerd pid {pid} from a previous run")
            self._terminate(pid, timeout=60)
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()

    def _terminate(self, pid: int, timeout: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        try:
            poll_until(
                lambda: not pid_alive(pid), timeout=timeout, what=f"dockerd pid {pid} to exit"
            )
        except HarnessError:
            log(f"dockerd pid {pid} ignored SIGTERM for {timeout:.0f}s; sending SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            poll_until(lambda: not pid_alive(pid), timeout=15, what=f"dockerd pid {pid} to die")

    def start(self, timeout: float = 90) -> None:
        """Take the machine lock, clear leftovers, start dockerd and wait until it answers."""
        if self.running:
            return
        for binary in (DOCKER, DOCKERD):
            if not os.access(binary, os.X_OK):
                raise HarnessError(
                    f"{binary} not found: run testbed/harness/install-deps.sh (Debian docker.io)"
                )
        t0 = time.monotonic()
        self._acquire_lock()
        try:
            self._kill_leftovers()
            for path in (self.data_root, self.config_dir):
                path.mkdir(parents=True, exist_ok=True)
            self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            argv = [
                DOCKERD,
                "--data-root", str(self.data_root),
                "--exec-root", str(self.exec_root),
                "-H", self.host,
                "--pidfile", str(self.pidfile),
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bip", BRIDGE_IP,
                "--default-address-pool", ADDRESS_POOL,
            ]  # fmt: skip
            log(f"starting dockerd (data root {self.data_root}, socket {self.socket_path})")
            with open(self.log_path, "wb") as log_file:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C in the terminal is ours to handle
                    preexec_fn=_set_pdeathsig,  # dies with the harness
                )
            self.pid = self._proc.pid

            def ready() -> bool:
                if self._proc is not None and self._proc.poll() is not None:
                    raise HarnessError(
                        f"dockerd exited with status {self._proc.returncode} while starting\n"
                        + self.log_tail()
                    )
                return self.ping()

            poll_until(
                ready,
                timeout=timeout,
                what=f"dockerd to answer on {self.socket_path}",
                diagnostics=self.log_tail,
            )
            log(f"dockerd ready (pid {self.pid}) in {time.monotonic() - t0:.1f}s")
            self.remove_leftover_containers()
        except BaseException:
            self.stop()
            raise

    def remove_leftover_containers(self) -> None:
        """Remove containers of earlier runs (all carry our label)."""
        ids = self.docker_text("ps", "-aq", "--filter", f"label={LABEL}").split()
        if ids:
            log(f"removing {len(ids)} leftover harness container(s)")
            self.docker("rm", "-f", "-v", *ids, check=False, timeout=120)

    def stop(self, timeout: float = 60) -> None:
        """Stop our dockerd by PID (SIGTERM, then SIGKILL) and release the lock."""
        try:
            if self.pid is not None and pid_alive(self.pid):
                log(f"stopping dockerd pid {self.pid}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGTERM)
                if self._proc is not None:
                    try:
                        self._proc.wait(timeout=timeout)
                    except subprocess.TimeoutExpired:
                        log(f"dockerd pid {self.pid} still running after {timeout:.0f}s; SIGKILL")
                        self._proc.kill()
                        self._proc.wait(timeout=15)
                else:
                    self._terminate(self.pid, timeout)
            elif self._proc is not None:
                self._proc.poll()
        finally:
            self.pid = None
            self._proc = None
            if self._lock_fd is not None:
                self._cleanup_host()
            self._release_lock()

    def _cleanup_host(self) -> None:
        """Remove what the stopped engine leaves on the host: its run dir and bridge."""
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()
        remove_tree(self.run_dir)  # dockerd leaves its netns/default bind mount behind
        show = ["ip", "-4", "-o", "addr", "show", "dev", "docker0"]
        addr = subprocess.run(show, check=False, capture_output=True)
        if f" {BRIDGE_IP} ".encode() in addr.stdout:
            subprocess.run(["ip", "link", "delete", "docker0"], check=False, capture_output=True)

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_engine(directory: Path | None = None) -> Iterator[Engine]:
    """Context manager: a started engine, stopped on exit whatever happens."""
    engine = Engine(directory)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


def run_checked(
    argv: Sequence[str], what: str, timeout: float = 600, **kwargs: object
) -> subprocess.CompletedProcess[bytes]:
    """Run a host command; raise HarnessError with its output tail on failure."""
    try:
        result = subprocess.run(
            list(argv), capture_output=True, timeout=timeout, check=False, **kwargs
        )  # type: ignore[call-overload]
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{what} timed out after {timeout:.0f}s") from exc
    if result.returncode != 0:
        out = (result.stdout or b"").decode(errors="replace") + (result.stderr or b"").decode(
            errors="replace"
        )
        raise HarnessError(f"{what} failed (exit {result.returncode}):\n{tail(out)}")
    return result
