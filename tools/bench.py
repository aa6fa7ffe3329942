"""`make bench`: numbers, not assertions. Medians of several runs on this machine."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.release import target_of
from deploy.engine import DeployError
from layout import BACKUP_TOOL
from tools.bench_cutover import bench_cutover
from tools.bench_drill import bench_drill

RUNS = 5
IMPORT_PROGRAM = (
    "import time; t = time.perf_counter(); "
    "import pulumi, pulumi_proxmoxve, pulumi_command, yaml; "
    "print(time.perf_counter() - t)"
)


def median_seconds(run: Callable[[], float], runs: int = RUNS) -> tuple[float, float, float]:
    samples = [run() for _ in range(runs)]
    return statistics.median(samples), min(samples), max(samples)


def import_time() -> float:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_PROGRAM], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


def stack_time(stack: str) -> Callable[[], float]:
    from tools.synth import synthesize

    def run() -> float:
        start = time.perf_counter()
        synthesize(stack)
        return time.perf_counter() - start

    return run


def cold_synth_time(stack: str) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "tools.synth", stack], capture_output=True, check=True
        )
        return time.perf_counter() - start

    return run


def report(label: str, numbers: tuple[float, float, float]) -> None:
    median, low, high = numbers
    print(f"{label:<44} median {median:6.3f} s   (min {low:.3f}, max {high:.3f}, n={RUNS})")


def bench_baseline() -> None:
    """Baseline apply on the tier-3 test guest: first run, then the unchanged re-run."""
    if os.geteuid() != 0:
        print("baseline apply on the test guest: skipped (needs root for its Docker engine)")
        return
    from testbed.harness import Engine, build_images, start_guest
    from testbed.harness.engine import BRIDGE_IP
    from testbed.registry import Registry
    from tests.tier3.app_env import deploy_app
    from tests.tier3.baseline_env import (
        Baselined,
        apply_plan,
        guest_stack_config,
        plan,
        served_crun,
    )
    from tests.tier3.release_env import publish_releases

    engine = Engine()
    engine.start()
    guest = None
    try:
        images = build_images(engine)
        guest = start_guest(engine, images, hostname="bench-guest")
        with served_crun() as crun:
            cfg, spec = guest_stack_config(guest, crun)
            steps = plan(cfg, spec)
            timings = []
            for _ in range(2):
                start = time.perf_counter()
                apply_plan(guest, steps)
                timings.append(time.perf_counter() - start)
            first, rerun = timings
            start = time.perf_counter()
            guest.run("true")
            connect = time.perf_counter() - start
            work = max(rerun - len(steps) * connect, 0.0)
            print(f"{'baseline apply, first run':<44} {first:6.2f} s ({len(steps)} steps)")
            print(f"{'baseline apply, unchanged re-run (forced)':<44} {rerun:6.2f} s")
            print(f"{'re-run / first run':<44} {rerun / first:6.1%}   (target < 10%)")
            print(
                f"{'  of which SSH connections':<44} {len(steps) * connect:6.2f} s "
                f"({connect:.2f} s each: one per step, as pulumi-command connects)"
            )
            print(
                f"{'  remote work of the re-run':<44} {work:6.2f} s ({work / first:.1%} of first)"
            )
            print(f"{'pulumi up, unchanged config':<44} {'0 remote commands (no input changed)'}")
            env = Baselined(guest, cfg, spec, [])
            with (
                tempfile.TemporaryDirectory(prefix="bench-registry-") as root,
                Registry(Path(root), BRIDGE_IP.split("/")[0], loopback=True) as reg,
            ):
                releases = publish_releases(engine, reg)
                deployed = deploy_app(env, releases)
                bench_backups(env, deployed.release)
                bench_deploy(env, releases)
                bench_cutover(env, releases)
                bench_drill(engine, images, releases)
    finally:
        if guest is not None:
            guest.stop()
        engine.stop()


BACKUP_DATA_MB = 32


def bench_backups(env: Any, props: dict[str, Any]) -> None:
    """Backup + validation and restore of a stand-in data set, as MB/s of raw BSON data."""
    from deploy.mongo_users import connect, over_ssh
    from tests.tier3.app_env import SECRETS

    blob = os.urandom(512 * 1024).hex()  # 1 MB of text per document, incompressible-ish
    count = BACKUP_DATA_MB

    def seed(port: int) -> None:
        client = connect(port, "smartsmoker", SECRETS.mongo_app_password)
        try:
            coll = client["smartsmoker"]["bench"]
            coll.delete_many({})
            for n in range(count):
                coll.insert_one({"n": n, "payload": blob})
        finally:
            client.close()

    def drop(port: int) -> None:  # the deploy bench measures a small database again
        client = connect(port, "admin", SECRETS.mongo_root_password)
        try:
            client["smartsmoker"]["bench"].drop()
            client.drop_database("bench_restore")
        finally:
            client.close()

    over_ssh(target_of(props), 27017, seed)
    tool = BACKUP_TOOL
    start = time.perf_counter()
    archive = env.guest.run(f"{tool} dump", timeout=600).stdout.strip()
    env.guest.run(f"{tool} validate", timeout=600)
    backup_s = time.perf_counter() - start
    start = time.perf_counter()
    env.guest.run(f"{tool} restore {archive} --to-db bench_restore", timeout=600)
    restore_s = time.perf_counter() - start
    print(
        f"{'backup + validate, ' + str(count) + ' MB stand-in data':<44} {backup_s:6.2f} s "
        f"({count / backup_s:5.1f} MB/s)"
    )
    print(
        f"{'restore into a scratch database':<44} {restore_s:6.2f} s "
        f"({count / restore_s:5.1f} MB/s)"
    )
    over_ssh(target_of(props), 27017, drop)


class Prober(threading.Thread):
    """Pings MongoDB (whose image an app upgrade does not change) every 50 ms through its own
    SSH tunnel, counting failed probes."""

    def __init__(self, props: dict[str, Any], password: str) -> None:
        super().__init__(daemon=True)
        self.props, self.password = props, password
        self.stop, self.ok, self.failed = threading.Event(), 0, 0
        self.ready = threading.Event()

    def run(self) -> None:
        from deploy.mongo_users import connect
        from deploy.transport import ssh_client, tunnel

        with ssh_client(target_of(self.props)) as client, tunnel(client, 27017) as port:
            mongo = connect(port, "admin", self.password)
            self.ready.set()
            while not self.stop.is_set():
                try:
                    mongo.admin.command("ping")
                    self.ok += 1
                except Exception:
                    self.failed += 1
                time.sleep(0.05)
            mongo.close()


def bench_deploy(env: Any, releases: Any) -> None:
    """Upgrade N -> N+1 and a failing N+2 with rollback, from the engine's own timings."""
    from components.release import release_engine, release_spec
    from tests.tier3.app_env import SECRETS
    from tests.tier3.release_env import N1, N2, release_config, release_props

    def props(version: str) -> dict[str, Any]:
        return release_props(env, release_config(env.cfg, releases, version), SECRETS)

    upgrade = props(N1)
    prober = Prober(upgrade, SECRETS.mongo_root_password)
    prober.start()
    prober.ready.wait(60)
    with release_engine(upgrade, "bench") as engine:
        t = engine.deploy(release_spec(upgrade)).timings
        prober.stop.set()
        prober.join(30)
        startup = t["up"] + t["verify"]
        own = t["total"] - t["backup"] - t["pull"] - startup
        line = f"{'deploy N -> N+1, start to verified':<44}"
        print(f"{line} {t['total']:6.2f} s")
        print(f"{'  containers up and healthy (up + verify)':<44} {startup:6.2f} s")
        print(f"{'  pre-deploy backup (mongodump, verified)':<44} {t['backup']:6.2f} s")
        print(f"{'  pull and resolve digests':<44} {t['pull']:6.2f} s")
        print(f"{'  orchestration overhead (the rest)':<44} {own:6.2f} s   (target < 3 s)")
        print(
            f"{'  failed probes, unchanged MongoDB':<44} {prober.failed:6d}     "
            f"(of {prober.ok + prober.failed}; target 0)"
        )
        with contextlib.suppress(DeployError):
            engine.deploy(release_spec(props(N2)))
        failed = engine.history()[-1]["timings"]
        rollback = failed["rollback"]
        detected = failed["up"] + failed.get("verify", 0)
        print(f"{'deploy N+2 (backend never healthy), detected':<44} {detected:6.2f} s")
        print(f"{'rollback: failed verification -> N+1 verified':<44} {rollback:6.2f} s")
        print(
            f"{'  beyond N+1 own start-up (' + format(startup, '.2f') + ' s)':<44} "
            f"{rollback - startup:6.2f} s   (target < 5 s)"
        )


def bench_rehearsal() -> None:
    """The dev stack rehearsed on test guests (tests/tier3/rehearsal_env.py), phase by phase."""
    if os.geteuid() != 0:
        print("rehearsal of the dev stack: skipped (needs root for its Docker engine)")
        return
    from testbed.harness import Engine, build_images, start_guest
    from testbed.harness.engine import BRIDGE_IP
    from testbed.registry import Registry
    from tests.configs import set_path
    from tests.sdk.rehearsal import timed
    from tests.tier3.baseline_env import served_crun
    from tests.tier3.rehearsal_env import CLOUD, phase_windows, rehearsal
    from tests.tier3.release_env import publish_releases

    phases: dict[str, float] = {}
    engine = Engine()
    engine.start()
    try:
        with timed(phases, "images (warm cache)"):
            images = build_images(engine)
        with (
            tempfile.TemporaryDirectory(prefix="bench-registry-") as root,
            Registry(Path(root), BRIDGE_IP.split("/")[0], loopback=True) as reg,
            served_crun() as crun,
        ):
            with timed(phases, "stand-in releases in the registry"):
                releases = publish_releases(engine, reg)

            def guest(**kwargs: Any) -> Any:
                return start_guest(engine, images, **kwargs)

            with contextlib.ExitStack() as stack:
                with timed(phases, "two fresh test guests"):
                    r = stack.enter_context(rehearsal(engine, guest, releases, crun))
                with timed(phases, "preview (empty state)"):
                    r.up(preview=True)
                with timed(phases, "up: empty guests -> verified release"):
                    first = r.up()
                with timed(phases, "up: nothing changed"):
                    second = r.up()
                r.raw = set_path(r.raw, "baseline.fail2ban.maxRetry", 5)
                with timed(phases, "up: one setting changed (fail2ban maxRetry)"):
                    third = r.up()
                with timed(phases, "up: rebuilt dev-cloud guest"):
                    try:
                        rebuilt = r.up(replace=(r.urn(CLOUD, "proxmoxve:"),))
                    except Exception as exc:
                        rebuilt = None
                        print(f"rebuilt guest run failed: {str(exc).splitlines()[0]}")
        for name, seconds in phases.items():
            print(f"{'rehearsal: ' + name:<52} {seconds:7.2f} s")
        total = sum(v for k, v in phases.items() if not k.startswith("up: ") or "empty" in k)
        print(
            f"{'rehearsal: total, warm images to a verified release':<52} {total:7.2f} s"
            "   (target < 300 s on warm images)"
        )
        print(
            f"{'  first up: steps / commands / most at once':<52} "
            f"{len(first.steps)} / {first.commands} / {first.max_concurrent}"
        )
        print(f"{'  unchanged re-run: commands':<52} {second.commands}")
        print(
            f"{'  one setting changed: commands':<52} {third.commands} ({', '.join(third.ops())})"
        )
        for name, (start, end) in phase_windows(first).items():
            print(f"{'  first up, ' + name:<52} {start:6.1f} -> {end:6.1f} s ({end - start:.1f} s)")
        if rebuilt is not None:
            print(
                f"{'  rebuilt guest: steps replaced / commands':<52} "
                f"{len(rebuilt.ops('replace'))} / {rebuilt.commands}"
            )
    finally:
        engine.stop()


def main() -> None:
    if sys.argv[1:] == ["rehearsal"]:
        bench_rehearsal()
        return
    print("smoker-infra benchmark (2-core build machine; ratios are steadier than seconds)")
    report("import program dependencies (fresh process)", median_seconds(import_time))
    stack_time("dev")()  # first evaluation pays the imports; measure the steady state
    for stack in ("dev", "prod"):
        report(f"evaluate stack '{stack}' under mocks", median_seconds(stack_time(stack)))
        report(f"make synth STACK={stack} (fresh process)", median_seconds(cold_synth_time(stack)))
    bench_baseline()
    bench_rehearsal()


if __name__ == "__main__":
    main()
