"""Tier-3 fixtures: an isolated Docker engine and systemd guests over real SSH.

Fixtures:
    engine         (session) the harness dockerd; images built/cached on first use
    guest          (session) one shared guest; tests may change its state
    guest_factory  (session) ``guest_factory(hostname=...)`` -> a fresh Guest,
                   removed at session end (for tests that need a pristine host)

Without root, outside CI, the tier is skipped; with CI=true every harness
failure is an error. Everything started here is stopped by ID/PID at session
end (finalizers, plus an atexit safety net).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

from testbed.harness import Engine, Guest, ImageSet, build_images, start_guest
from testbed.harness.engine import BRIDGE_IP
from testbed.registry import Registry
from tests.tier3.baseline_env import Baselined, apply_plan, guest_stack_config, plan, served_crun
from tests.tier3.release_env import Releases, publish_releases

TIER3_DIR = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "tier3: real-host tests (own Docker engine, systemd guest over SSH)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TIER3_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.tier3)


def _require_root() -> None:
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip(
            "tier-3 tests need root to start their own Docker engine; run as root or under CI=true"
        )


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let a SIGTERM (e.g. a CI timeout) unwind through the finalizers."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """The harness Docker engine (started once per session, stopped by PID)."""
    _require_root()
    eng = Engine()
    atexit.register(eng.stop)
    with _sigterm_as_interrupt():
        eng.start()
        try:
            yield eng
        finally:
            eng.stop()


@pytest.fixture(scope="session")
def images(engine: Engine, request: pytest.FixtureRequest) -> ImageSet:
    """Base/guest/client images (built on the first run, cached after)."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    ctx = capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
    with ctx:  # show build progress live: a cold build takes minutes
        return build_images(engine)


@pytest.fixture(scope="session")
def guest_factory(engine: Engine, images: ImageSet) -> Iterator[Callable[..., Guest]]:
    """Start fresh guests on demand; all are removed at session end."""
    started: list[Guest] = []

    def make(**kwargs: object) -> Guest:
        g = start_guest(engine, images, **kwargs)  # type: ignore[arg-type]
        started.append(g)
        atexit.register(g.stop)
        return g

    try:
        yield make
    finally:
        for g in reversed(started):
            g.stop()


@pytest.fixture(scope="session")
def guest(guest_factory: Callable[..., Guest]) -> Guest:
    """The shared session guest (root over SSH with a per-run test key)."""
    return guest_factory(hostname="smoker-guest")


@pytest.fixture(scope="session")
def releases(
    engine: Engine, images: ImageSet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Releases]:
    """STAND-IN releases N, N+1, N+2 (broken) in a STAND-IN registry on the harness bridge."""
    root = tmp_path_factory.mktemp("registry")
    with Registry(root, BRIDGE_IP.split("/")[0], loopback=True) as registry:
        yield publish_releases(engine, registry)


def _baselined(guest_factory: Callable[..., Guest], hostname: str) -> Iterator[Baselined]:
    guest = guest_factory(hostname=hostname)
    with served_crun() as crun:
        cfg, spec = guest_stack_config(guest, crun)
        yield Baselined(guest, cfg, spec, apply_plan(guest, plan(cfg, spec)))


@pytest.fixture(scope="session")
def baselined(guest_factory: Callable[..., Guest]) -> Iterator[Baselined]:
    """A guest converged to the cloud-guest baseline by the real apply plan (shared)."""
    yield from _baselined(guest_factory, "baseline-guest")


@pytest.fixture(scope="session")
def app_baselined(guest_factory: Callable[..., Guest]) -> Iterator[Baselined]:
    """Another baselined guest, for the application stack (it trusts the registry stand-in,
    which changes the Docker daemon's config the baseline tests expect unchanged)."""
    yield from _baselined(guest_factory, "app-guest")
