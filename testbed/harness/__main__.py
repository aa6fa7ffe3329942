"""Manual use of the tier-3 harness.

python -m testbed.harness build  # build/cache the images only
python -m testbed.harness up     # engine + guest; prints the ssh command; Ctrl-C or `down` ends it
python -m testbed.harness down   # stop a running `up` (or leftovers of a killed run)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
from pathlib import Path

from .engine import LOCK_PATH, Engine, HarnessError, cmdline, log, pid_alive, poll_until
from .images import build_images
from .lifecycle import remove_stale_guest_dirs, start_guest


def _cmd_build(engine: Engine) -> int:
    with engine:
        images = build_images(engine)
    print(json.dumps(dataclasses.asdict(images), indent=2))
    return 0


def _cmd_up(engine: Engine) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log(f"got signal {signum}; shutting down")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    info_path = engine.cache_dir / "up.json"
    with engine:
        guest = start_guest(engine)
        try:
            info = {
                "pid": os.getpid(),
                "host": guest.host,
                "port": guest.port,
                "user": guest.user,
                "key_path": str(guest.key_path),
                "known_hosts_path": str(guest.known_hosts_path),
                "container": guest.id,
                "client_ip": guest.client.ip if guest.client else None,
                "docker_host": engine.host,
                "ssh": guest.ssh_command(),
            }
            info_path.write_text(json.dumps(info, indent=2) + "\n")
            print(json.dumps(info, indent=2), flush=True)
            print(f"\nssh:    {guest.ssh_command()}", flush=True)
            print(
                f"docker: {' '.join(engine.docker_argv())} exec -it {guest.name} bash", flush=True
            )
            print("Ctrl-C or `python -m testbed.harness down` to stop.", flush=True)
            while not stop.wait(3600):
                pass
        finally:
            guest.stop()
            with contextlib.suppress(FileNotFoundError):
                info_path.unlink()
    return 0


def _cmd_down(engine: Engine) -> int:
    owner = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        owner = int(LOCK_PATH.read_text().split()[0])
    if owner and pid_alive(owner) and any("testbed.harness" in a for a in cmdline(owner)):
        log(f"asking harness process {owner} to stop")
        os.kill(owner, signal.SIGTERM)
        poll_until(
            lambda: not pid_alive(owner), timeout=180, what=f"harness process {owner} to exit"
        )
        return 0
    if owner and pid_alive(owner):
        raise HarnessError(
            f"{LOCK_PATH} is held by pid {owner}, which is not `python -m testbed.harness`;"
            " not touching it"
        )
    # No owner: clean up whatever a killed run left (by PID, only our dockerd).
    engine.start()
    try:
        engine.remove_leftover_containers()
        remove_stale_guest_dirs(engine)
    finally:
        engine.stop()
    with contextlib.suppress(FileNotFoundError):
        (engine.cache_dir / "up.json").unlink()
    log("nothing running any more")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.harness", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("command", choices=["build", "up", "down"])
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="cache dir (default: $SMOKER_HARNESS_DIR or /var/tmp/smoker-infra-harness)",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the harness needs root (it starts its own dockerd)", file=sys.stderr)
        return 2
    engine = Engine(args.dir)
    try:
        return {"build": _cmd_build, "up": _cmd_up, "down": _cmd_down}[args.command](engine)
    except HarnessError as exc:
        print(f"harness error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
