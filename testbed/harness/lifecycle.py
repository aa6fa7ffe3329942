"""Starting and cleaning up guests (and their fixed-address networks) on the harness engine."""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path

from .engine import LABEL, Engine, log, remove_tree, run_checked
from .guest import SYSTEMD_FLAGS, Client, Guest
from .images import ImageSet, build_images


def _keygen(ssh_dir: Path) -> Path:
    key = ssh_dir / "id_ed25519"
    run_checked(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "smoker-infra-tier3-test-only",
            "-f",
            str(key),
        ],
        what="ssh-keygen",
        timeout=30,
    )
    key.chmod(0o600)
    return key


def _start_client(engine: Engine, images: ImageSet, name: str) -> Client:
    cid = engine.docker_text(
        "run", "-d", "--init", "--name", f"{name}-client", "--hostname", "smoker-client",
        "--label", f"{LABEL}={engine.ident}", images.client,
    )  # fmt: skip
    ip = engine.docker_text(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", cid
    )
    return Client(engine, cid, ip)


def start_guest(
    engine: Engine,
    images: ImageSet | None = None,
    *,
    hostname: str = "smoker-guest",
    with_client: bool = True,
    timeout: float = 180,
    network: str | None = None,
    ip: str | None = None,
) -> Guest:
    """Start a guest container (building images if needed) and wait until SSH works.

    With `network` and `ip` (see `ensure_network`) the guest gets that fixed address, so a
    fresh guest can replace a removed one at the same address (a rebuilt guest)."""
    images = images or build_images(engine)
    remove_stale_guest_dirs(engine)
    t0 = time.monotonic()
    name = f"smoker-guest-{uuid.uuid4().hex[:8]}"
    guests_dir = engine.cache_dir / "guests"
    guests_dir.mkdir(parents=True, exist_ok=True)
    # <cache>/guests/<name>/{docker,ssh}: removed with the guest, or by the next
    # run if this process is killed (remove_stale_guest_dirs).
    guest_dir = guests_dir / name
    volume_dir = guest_dir / "docker"
    ssh_dir = guest_dir / "ssh"
    volume_dir.mkdir(parents=True)
    ssh_dir.mkdir(mode=0o700)
    guest: Guest | None = None
    try:
        key = _keygen(ssh_dir)
        log(f"starting guest {name} from {images.guest}")
        cid = engine.docker_text(
            "run", "-d", "--name", name, "--hostname", hostname,
            "--label", f"{LABEL}={engine.ident}",
            *SYSTEMD_FLAGS,
            *(("--network", network, "--ip", ip) if network and ip else ()),
            "-v", f"{volume_dir}:/var/lib/docker",
            images.guest, "/sbin/init",
        )  # fmt: skip
        guest = Guest(
            engine,
            images,
            name=name,
            hostname=hostname,
            container_id=cid,
            volume_dir=volume_dir,
            ssh_dir=ssh_dir,
        )
        guest.fixed_ip = ip if network else None
        guest.exec(
            "install -d -m 700 /root/.ssh && cat > /root/.ssh/authorized_keys"
            " && chmod 600 /root/.ssh/authorized_keys",
            input=key.with_suffix(".pub").read_bytes(),
        )
        if with_client:
            guest.client = _start_client(engine, images, name)
        guest.wait_ready(timeout=timeout)
        log(f"guest {name} up in {time.monotonic() - t0:.1f}s: {guest.ssh_command()}")
        return guest
    except BaseException:
        if guest is not None:
            guest.stop()
        else:
            with contextlib.suppress(Exception):
                engine.docker("rm", "-f", name, check=False)
            remove_tree(guest_dir)
        raise


def remove_stale_guest_dirs(engine: Engine) -> None:
    """Delete guest volume dirs left by killed runs (call while holding the engine)."""
    guests_dir = engine.cache_dir / "guests"
    if not guests_dir.is_dir():
        return
    live = set(engine.docker_text("ps", "-a", "--format", "{{.Names}}").split())
    for path in guests_dir.iterdir():
        if path.name not in live:
            remove_tree(path)


def ensure_network(engine: Engine, name: str, subnet: str, gateway: str) -> str:
    """A harness bridge network with a fixed link-local `subnet` (created once; labelled).

    Guests on it can be given fixed addresses (`start_guest(network=..., ip=...)`); remove it
    with `remove_network` (which also removes its bridge from the host)."""
    found = engine.docker("network", "inspect", name, check=False, timeout=30)
    if found.returncode != 0:
        engine.docker(
            "network", "create", "--driver", "bridge", "--subnet", subnet,
            "--gateway", gateway, "--label", f"{LABEL}={engine.ident}", name, timeout=60,
        )  # fmt: skip
    return name


def remove_network(engine: Engine, name: str) -> None:
    engine.docker("network", "rm", name, check=False, timeout=60)
