"""Build the STAND-IN service images on the harness engine (tier-3 tests only).

* ``smoker-test/mongo-standin:7.0`` — stands in for ``mongo:7.0`` (see ``mongo/``);
* ``smoker-test/backend-standin:<version>`` — for ``benjr70/smart-smoker-backend``; with
  ``broken_versions`` also ``:<version>-broken`` (``/api/health`` answers 503 forever);
* ``smoker-test/frontend-standin:<version>`` — for ``benjr70/smart-smoker-frontend`` (nginx).

All three start FROM the harness's debootstrap'ed base image and install bookworm's python3 and
pymongo from two pinned wheels that the host downloads once (hash-checked) into the harness cache:
nothing is pulled from a registry, and pip inside the build needs no network. Every image carries
a label with the hash of its recipe (base image, build context, wheels, build args); a build is
skipped when the tag already has that label (``SMOKER_HARNESS_REBUILD=1`` forces it). The build
args are baked into a file in the image, so each version (and the broken variant) has its own
image ID.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from testbed.harness import Engine, HarnessError
from testbed.harness.engine import log, run_checked
from testbed.harness.images import build_base, content_digest

STANDINS_DIR = Path(__file__).resolve().parent
MONGO_REPO = "smoker-test/mongo-standin"
MONGO_TAG = "7.0"
BACKEND_REPO = "smoker-test/backend-standin"
FRONTEND_REPO = "smoker-test/frontend-standin"
RECIPE_LABEL = "smoker-test.standin-recipe"
#: Bump to rebuild every stand-in image whatever the hashes say.
RECIPE_VERSION = "1"

#: The driver inside the images (same as the unit tests use on the host), pinned by hash.
PYMONGO_VERSION = "4.20.1"
WHEELS: dict[str, str] = {
    f"pymongo-{PYMONGO_VERSION}-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64"
    ".manylinux_2_28_x86_64.whl": (
        "41464411366fabc8db70212f1a10cd7b5953eae6ee6a6500d9522f37f1a04311"
    ),
    "dnspython-2.9.2-py3-none-any.whl": (
        "af15f7d385a6ae2fb35a796fde2138004c8c42c7389090e2addc83e3b3340fd8"
    ),
}
_PINS = {"pymongo": PYMONGO_VERSION, "dnspython": "2.9.2"}
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}$")
_IGNORED = ("__pycache__", "*.pyc", ".pytest_cache", ".dockerignore")


@dataclass(frozen=True)
class StandinImages:
    """Image references of the stand-ins (all present on the harness engine)."""

    mongo: str
    backend: Mapping[str, str] = field(default_factory=dict)  # version -> ref
    frontend: Mapping[str, str] = field(default_factory=dict)  # version -> ref
    backend_broken: Mapping[str, str] = field(default_factory=dict)  # version -> ref

    def app_images(self, version: str, broken: bool = False) -> dict[str, str]:
        """The ``images`` mapping ``rendering.app.compose_file`` takes, for one release."""
        backend = (self.backend_broken if broken else self.backend)[version]
        return {"mongo": self.mongo, "backend": backend, "frontend": self.frontend[version]}

    def refs(self) -> list[str]:
        """Every reference, e.g. to ``Guest.load_image`` them all."""
        return [
            self.mongo,
            *self.backend.values(),
            *self.backend_broken.values(),
            *self.frontend.values(),
        ]


def _ignored(path: Path) -> bool:
    return any(path.match(p) or any(parent.match(p) for parent in path.parents) for p in _IGNORED)


def _context_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.rglob("*") if p.is_file() and not _ignored(p.relative_to(directory))
    )


def _context_digest(directory: Path) -> bytes:
    parts: list[bytes] = []
    for path in _context_files(directory):
        rel = path.relative_to(directory).as_posix().encode()
        parts += [rel, str(path.stat().st_mode & 0o777).encode(), path.read_bytes()]
    return content_digest(*parts).encode()


def standin_wheels(engine: Engine) -> Path:
    """Directory with the pinned pymongo/dnspython wheels (downloaded once, hash-checked)."""
    key = content_digest(*(f"{n}={h}".encode() for n, h in sorted(WHEELS.items())))
    target = engine.cache_dir / "downloads" / f"standin-wheels-{key}"
    if all((target / name).is_file() for name in WHEELS):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(
            "".join(
                f"{project}=={version} --hash=sha256:{digest}\n"
                for (project, version), digest in zip(_PINS.items(), WHEELS.values(), strict=True)
            )
        )
        wheels = Path(tmp) / "wheels"
        log("downloading the pinned pymongo wheels for the stand-in images")
        run_checked(
            [
                sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
                "--no-deps", "--only-binary=:all:", "--platform", "manylinux2014_x86_64",
                "--python-version", "3.11", "--implementation", "cp",
                "--require-hashes", "-r", str(req), "-d", str(wheels),
            ],
            what="pip download of the stand-in wheels",
            timeout=600,
        )  # fmt: skip
        for name, digest in WHEELS.items():
            if hashlib.sha256((wheels / name).read_bytes()).hexdigest() != digest:
                raise HarnessError(f"{name} does not match its pinned sha256")
        shutil.rmtree(target, ignore_errors=True)
        wheels.rename(target)
    return target


def _force_rebuild() -> bool:
    return os.environ.get("SMOKER_HARNESS_REBUILD", "") not in ("", "0")


def build_labelled(
    engine: Engine,
    ref: str,
    context: Path,
    base: str,
    wheels: Path | None = None,
    build_args: Mapping[str, str] | None = None,
) -> str:
    """``docker build`` of ``context`` (plus ``wheels/`` when given) FROM ``base`` as ``ref``,
    skipped when ``ref`` already carries the label with this recipe's hash. Returns ``ref``."""
    args = dict(build_args or {})
    recipe = content_digest(
        RECIPE_VERSION.encode(),
        base.encode(),
        engine.docker_text("image", "inspect", "-f", "{{.Id}}", base).encode(),
        _context_digest(context),
        *((f"{n}={h}".encode() for n, h in sorted(WHEELS.items())) if wheels else ()),
        *(f"{k}={v}".encode() for k, v in sorted(args.items())),
    )
    if not _force_rebuild() and engine.image_exists(ref):
        label = engine.docker_text(
            "image", "inspect", "-f", f'{{{{index .Config.Labels "{RECIPE_LABEL}"}}}}', ref
        )
        if label == recipe:
            log(f"image {ref} cached")
            return ref
    t0 = time.monotonic()
    work = engine.cache_dir / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="standin-ctx-", dir=work) as tmp:
        ctx = Path(tmp) / "ctx"
        shutil.copytree(context, ctx, ignore=shutil.ignore_patterns(*_IGNORED))
        if wheels is not None:
            shutil.copytree(wheels, ctx / "wheels")
        argv = ["build", "--network", "host", "--force-rm", "--build-arg", f"BASE={base}"]
        for key, value in sorted(args.items()):
            argv += ["--build-arg", f"{key}={value}"]
        argv += ["--label", f"{RECIPE_LABEL}={recipe}", "-t", ref, str(ctx)]
        log(f"building {ref} (docker build --network host; output follows)")
        result = engine.docker(*argv, capture=False, check=False, timeout=1800)
        if result.returncode != 0:
            raise HarnessError(f"docker build of {ref} failed (exit {result.returncode})")
    engine.docker("image", "prune", "-f", check=False)  # the image this tag had before
    log(f"image {ref} built in {time.monotonic() - t0:.0f}s")
    return ref


def _check_versions(versions: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys(versions))
    for version in out:
        if not _TAG_RE.match(version) or version.endswith("-broken"):
            raise HarnessError(f"{version!r} cannot be a stand-in image tag")
    return out


def build_standins(
    engine: Engine,
    versions: Iterable[str] = ("1.0.0",),
    broken_versions: Iterable[str] = (),
) -> StandinImages:
    """Build (or reuse) the mongo stand-in, a backend and a frontend per version, and a
    broken backend (``HEALTHY=false``, tag ``<version>-broken``) per ``broken_versions``."""
    wanted = _check_versions(versions)
    broken = _check_versions(broken_versions)
    t0 = time.monotonic()
    base = build_base(engine)
    wheels = standin_wheels(engine)
    mongo_ref = f"{MONGO_REPO}:{MONGO_TAG}"
    mongo = build_labelled(engine, mongo_ref, STANDINS_DIR / "mongo", base, wheels)
    backend: dict[str, str] = {}
    frontend: dict[str, str] = {}
    backend_broken: dict[str, str] = {}
    for version in wanted:
        backend[version] = build_labelled(
            engine, f"{BACKEND_REPO}:{version}", STANDINS_DIR / "backend", base, wheels,
            {"BUILD_VERSION": version, "HEALTHY": "true"},
        )  # fmt: skip
        frontend[version] = build_labelled(
            engine, f"{FRONTEND_REPO}:{version}", STANDINS_DIR / "frontend", base, wheels,
            {"BUILD_VERSION": version},
        )  # fmt: skip
    for version in broken:
        backend_broken[version] = build_labelled(
            engine, f"{BACKEND_REPO}:{version}-broken", STANDINS_DIR / "backend", base, wheels,
            {"BUILD_VERSION": version, "HEALTHY": "false"},
        )  # fmt: skip
    log(f"stand-in images ready in {time.monotonic() - t0:.1f}s")
    return StandinImages(mongo, backend, frontend, backend_broken)
