"""Loaded by Python at start-up when this directory is on PYTHONPATH (test_cli_process.py):
with SMOKER_FAKE_HOST set, `python -m deploy` reaches the fake host of the engine's unit tests,
with two releases deployed and the scenario the variable names, instead of an SSH connection."""

from __future__ import annotations

import os

SCENARIO = os.environ.get("SMOKER_FAKE_HOST")

if SCENARIO:
    import contextlib
    from collections.abc import Iterator
    from typing import Any

    import deploy.engine as engine_module
    from deploy.lock import HostLock
    from deploy.transport import SshTarget
    from tests.unit.engine_kit import Clock, fake_host, make_engine, proxied_spec
    from tests.unit.fake_host import FakeHost

    host, clock = fake_host(), Clock()
    for version in ("1.0.0", "1.1.0"):
        clock.t += 60
        make_engine(host, clock, proxied=True).deploy(proxied_spec(version))
    if SCENARIO == "lock-held":
        HostLock(host, clock=clock.wall).acquire("bob@laptop via cli", "deploy")
    elif SCENARIO == "ledger-unwritable":
        host.fail("ledger")
    elif SCENARIO == "connection-lost":
        host.fail("up", drop=True)

    @contextlib.contextmanager
    def connect(_target: SshTarget) -> Iterator[FakeHost]:
        yield host

    real_engine = engine_module.Engine

    def engine(*args: Any, **options: Any) -> Any:
        options.update(clock=clock.wall, monotonic=clock.monotonic, sleep=clock.sleep)
        options.update(auth=lambda *_: None)
        return real_engine(*args, **options)

    engine_module.connect = connect  # type: ignore[assignment]
    engine_module.Engine = engine  # type: ignore[assignment,misc]
