"""The Release dynamic provider, called directly as Pulumi would (provider methods never run
under mocks), against the fake host."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

import components.release as release
import deploy.engine as engine_module
from deploy.engine import DeployError, Engine
from deploy.transport import SshTarget
from tests.unit.engine_kit import CHECKS, Clock, compose, digest, fake_host, spec
from tests.unit.fake_host import APP_DIR, PROJECT, FakeHost


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    fake = fake_host()
    fake.connections = 0  # type: ignore[attr-defined]
    clock = Clock()

    @contextlib.contextmanager
    def connect(target: SshTarget) -> Iterator[FakeHost]:
        assert target.host_key.startswith("ssh-ed25519 ") and target.private_key == "KEY"
        fake.connections += 1  # type: ignore[attr-defined]
        clock.t += 60
        yield fake

    class TestEngine(Engine):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.update(
                auth=lambda *_: None, clock=clock.wall, monotonic=clock.monotonic, sleep=clock.sleep
            )
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(engine_module, "connect", connect)
    monkeypatch.setattr(engine_module, "Engine", TestEngine)
    return fake


def props(version: str, **extra: Any) -> dict[str, Any]:
    s = spec(version)
    return {
        "host": "10.20.0.20",
        "sshUser": "root",
        "sshPort": 22,
        "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey",
        "privateKey": "KEY",
        "stack": "dev",
        "guest": "dev-cloud",
        "project": PROJECT,
        "appDir": APP_DIR,
        "compose": compose(version),
        "envFiles": dict(s.env_files),
        "checks": CHECKS.as_dict(),
        "backup": True,
        "restoreOnRollback": False,
        "keepReleases": 5,
        "verifyTimeoutSeconds": 30,
        "lockLeaseSeconds": 120,
        "revision": "",
        **extra,
    }


def connections(host: FakeHost) -> int:
    return host.connections  # type: ignore[attr-defined,no-any-return]


def test_create_deploys_and_returns_the_release(host: FakeHost) -> None:
    created = release.ReleaseProvider().create(props("1.0.0"))
    outs = created.outs or {}
    assert outs["releaseId"] == host.current and outs["backupId"].startswith(
        "smartsmoker-predeploy"
    )
    assert outs["digests"]["backend"] == digest("backend", "1.0.0")
    assert outs["deployedAt"].endswith("Z") and created.id == f"release-10.20.0.20-{PROJECT}"


def test_unchanged_inputs_make_no_connection(host: FakeHost) -> None:
    outs = release.ReleaseProvider().create(props("1.0.0")).outs or {}
    before = connections(host)
    diff = release.ReleaseProvider().diff("id", outs, props("1.0.0"))
    assert diff.changes is False
    release.ReleaseProvider().read("id", outs)
    assert connections(host) == before


@pytest.mark.parametrize(
    ("change", "deploys", "new_release"),
    [
        ({"compose": compose("1.1.0")}, True, True),
        ({"envFiles": dict(spec("1.0.0", password="rotated").env_files)}, True, True),
        ({"checks": {"http": []}}, True, True),
        # re-resolves the tags; the same digests make no new release
        ({"revision": "abc123"}, True, False),
        ({"privateKey": "KEY"}, False, False),  # (unchanged: the baseline of this table)
        ({"hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRotated"}, False, False),
        ({"keepReleases": 3, "verifyTimeoutSeconds": 60}, False, False),
    ],
)
def test_only_release_content_deploys(
    host: FakeHost, change: dict[str, Any], deploys: bool, new_release: bool
) -> None:
    provider = release.ReleaseProvider()
    outs = provider.create(props("1.0.0")).outs or {}
    news = props("1.0.0", **change)
    diff = provider.diff("id", outs, news)
    assert diff.changes is (news != props("1.0.0")) and not diff.replaces
    before = connections(host)
    updated = provider.update("id", outs, news).outs or {}
    assert (connections(host) > before) is deploys
    assert (updated["releaseId"] != outs["releaseId"]) is new_release
    assert {k: updated[k] for k in news} == news  # the state holds the new inputs


def test_a_failed_update_raises_so_pulumi_keeps_the_previous_state(host: FakeHost) -> None:
    provider = release.ReleaseProvider()
    outs = provider.update("id", provider.create(props("1.0.0")).outs or {}, props("1.1.0")).outs
    assert outs is not None
    with pytest.raises(DeployError) as raised:
        provider.update("id", outs, props("1.2.0"))
    message = str(raised.value)
    assert f"release {outs['releaseId']} is live and verified" in message
    assert "deployments.jsonl" in message and "predeploy" in message
    assert host.current == outs["releaseId"]


def test_delete_leaves_the_services_running(host: FakeHost) -> None:
    provider = release.ReleaseProvider()
    outs = provider.create(props("1.0.0")).outs or {}
    before = (connections(host), host.snapshot())
    provider.delete("id", outs)
    assert (connections(host), host.snapshot()) == before


def test_check_names_missing_inputs() -> None:
    result = release.ReleaseProvider().check({}, {"host": "h"})
    assert {f.property for f in result.failures or []} >= {"compose", "hostKey", "privateKey"}


def test_an_input_the_program_no_longer_sends_is_a_change() -> None:
    olds = {**props("1.0.0"), "revision": "abc123"}
    news = {k: v for k, v in props("1.0.0").items() if k != "revision"}
    assert release.ReleaseProvider().diff("id", olds, news).changes
