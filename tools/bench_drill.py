"""`make bench`: the rebuild drill's RTO and the off-guest shipping throughput, on test guests.

For each data set (32 MB and 320 MB of documents in the MongoDB STAND-IN): guest A is built by
the real steps with off-guest backups to an SFTP test container, its nightly dump is shipped
(restic over SFTP), A is destroyed, guest B is built by the same steps, and the engine's restore
(`python -m deploy restore`) fetches, restores and verifies. RTO = B ready -> data restored ->
release verified; the rebuild itself (a `pulumi up` on a real node) is reported beside it.
"""

from __future__ import annotations

import time
from typing import Any

from components.release import release_engine
from layout import BACKUP_TOOL
from rendering.restic import ResticSecrets

SIZES_MB = (32, 320)


def bench_drill(harness: Any, images: Any, releases: Any) -> None:
    from testbed.harness import start_guest
    from testbed.harness.sftp_target import start_sftp_target
    from tests.tier3.data_env import (
        TARGET_IP,
        build_app_guest,
        content_of,
        drill_network,
        load_documents,
        rebuild_app_guest,
    )

    started: list[Any] = []

    def new_guest(**kwargs: Any) -> Any:
        guest = start_guest(harness, images, **kwargs)
        started.append(guest)
        return guest

    with drill_network(harness) as network:
        target = start_sftp_target(harness, images, network=network, ip=TARGET_IP)
        try:
            for size in SIZES_MB:
                name = f"bench-{size}"
                repo = ResticSecrets(
                    target.repository(name), "bench-restic-password", target.private_key,
                    target.known_hosts,
                )  # fmt: skip
                a = build_app_guest(new_guest, releases, hostname=name, restic=repo)
                later = f"SMOKER_BACKUP_SHIP=later {BACKUP_TOOL}"
                a.guest.run(f"{later} dump >/dev/null && {BACKUP_TOOL} ship")  # creates the repo
                data = load_documents(a.guest, size, seed=size)
                start = time.perf_counter()
                a.guest.run(f"{later} dump --class daily >/dev/null")
                dumped = time.perf_counter() - start
                archive = a.guest.run(
                    f"readlink -f {a.deployed.cfg.baseline.app_dir}/backups/latest"
                )
                size_bytes = int(a.guest.run(f"stat -c %s {archive.stdout.strip()}").stdout)
                start = time.perf_counter()
                a.guest.run(f"{BACKUP_TOOL} ship")
                shipped = time.perf_counter() - start
                start = time.perf_counter()
                b = rebuild_app_guest(a, new_guest, releases, restic=repo)
                rebuilt = time.perf_counter() - start
                start = time.perf_counter()
                with release_engine(b.deployed.release, "bench via cli") as engine:
                    result = engine.restore()
                rto = time.perf_counter() - start
                assert content_of(b.guest) == data, "the drill lost documents"
                steps = result["seconds"]
                print(f"rebuild drill, {size} MB ({data.count} documents, archive "
                      f"{size_bytes / 1e6:.0f} MB gzip)")  # fmt: skip
                print(f"{'  dump (mongodump, stand-in)':<44} {dumped:6.2f} s")
                print(f"{'  ship (restic over SFTP)':<44} {shipped:6.2f} s "
                      f"({size_bytes / 1e6 / shipped:.1f} MB/s)")  # fmt: skip
                print(f"{'  rebuild guest B (test guest, same steps)':<44} {rebuilt:6.2f} s")
                print(f"{'  RTO: B ready -> restored -> verified':<44} {rto:6.2f} s "
                      f"(fetch {steps.get('fetch', 0):.2f}, restore {steps.get('restore', 0):.2f},"
                      f" verify {steps.get('verify', 0):.2f})")  # fmt: skip
                for guest in started:
                    guest.stop()
                started.clear()
        finally:
            for guest in started:
                guest.stop()
            target.remove()


def main() -> None:
    """`python -m tools.bench_drill`: the drill alone, with its own engine and registry."""
    import tempfile
    from pathlib import Path

    from testbed.harness import Engine as Harness
    from testbed.harness import build_images
    from testbed.harness.engine import BRIDGE_IP
    from testbed.registry import Registry
    from tests.tier3.release_env import publish_releases

    harness = Harness()
    harness.start()
    try:
        images = build_images(harness)
        with (
            tempfile.TemporaryDirectory(prefix="bench-registry-") as root,
            Registry(Path(root), BRIDGE_IP.split("/")[0], loopback=True) as registry,
        ):
            bench_drill(harness, images, publish_releases(harness, registry))
    finally:
        harness.stop()


if __name__ == "__main__":
    main()
