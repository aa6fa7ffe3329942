"""The DesiredRelease dynamic provider, called directly as Pulumi would: the publisher and the
device are directories of this machine reached through `LocalTransport` (the real shell of the
atomic writes), the device's agent a stand-in that reads the pushed document and reports."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import components.device_release as device_release
from components.device_release import DesiredReleaseProvider, PublishError
from deploy.desired import Seen, parse, public_key_from_pem, public_pem
from deploy.transport import CommandResult, LocalTransport, SshTarget, TransportError
from tests.unit.engine_kit import (
    APP_PASSWORD,
    CHECKS,
    Clock,
    digest,
    fake_host,
    make_engine,
    spec,
)

KEY = Ed25519PrivateKey.generate()
KEY_PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
PUBLIC = public_key_from_pem(public_pem(KEY))
OTHER_KEY_PEM = (
    Ed25519PrivateKey.generate()
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey"


@dataclass
class World:
    root: Path
    device_up: bool = True
    agent_outcome: str = "deployed"
    agent_exit: int = 0
    connections: list[str] = field(default_factory=list)
    commands: list[tuple[str, str]] = field(default_factory=list)  # (host, command)
    stdins: list[bytes] = field(default_factory=list)
    fail_publish: bool = False
    real_agent: Callable[[], int] | None = None  # runs deploy.agent for `systemctl start`
    timer_runs: int = 0  # starts that join a timer's run which read nothing new

    @property
    def published(self) -> Path:
        return self.root / "publisher/srv/device-releases/smoker-pi.json"

    @property
    def device(self) -> Path:
        return self.root / "device"


class Recording(LocalTransport):
    def __init__(self, world: World, host: str) -> None:
        self.world, self.host = world, host

    def run(self, command: str, stdin: bytes = b"", timeout: float = 120) -> CommandResult:
        assert timeout < float("inf")  # every wait has a deadline
        self.world.commands.append((self.host, command))
        self.world.stdins.append(stdin)
        if self.host == "publisher" and self.world.fail_publish and "mktemp" in command:
            return CommandResult(1, "", "No space left on device")
        if "systemctl start --wait" in command:
            return self.agent()
        return super().run(command, stdin, timeout)

    def agent(self) -> CommandResult:
        """The agent's run: the document it reads is the pushed local copy."""
        if self.world.real_agent is not None:
            return CommandResult(self.world.real_agent(), "", "")
        document = json.loads((self.world.device / "state/desired-release.json").read_text())
        doc = document["document"]
        if self.world.timer_runs:
            self.world.timer_runs -= 1
            doc = {"sequence": None, "contentHash": ""}
        report = {
            "time": "2026-12-03T08:00:00Z",
            "outcome": self.world.agent_outcome,
            "message": f"sequence {doc['sequence']} ({doc['contentHash'][:12]}) "
            + self.world.agent_outcome,
            "desired": {"sequence": doc["sequence"], "contentHash": doc["contentHash"]},
            "liveRelease": "20261203T080000Z-1a2b3c4d5e6f",
            "error": None,
        }
        (self.world.device / "state/agent-report.json").write_text(json.dumps(report))
        return CommandResult(self.world.agent_exit, "", "")


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    w = World(tmp_path)

    @contextlib.contextmanager
    def connect(target: SshTarget) -> Iterator[Recording]:
        assert target.host_key == HOST_KEY and target.private_key.startswith("KEY-")
        w.connections.append(target.host)
        if target.host == "device":
            assert target.connect_timeout <= 10  # a powered-off device costs seconds, not minutes
            if not w.device_up:
                raise TransportError(f"SSH to {target.user}@device:22 failed: timed out")
        yield Recording(w, target.host)

    monkeypatch.setattr(device_release, "connect", connect)
    return w


def props(world: World, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    s = spec(version, planned=True)
    return {
        "stack": "prod",
        "guest": "smoker-pi",
        "compose": s.compose,
        "envFiles": dict(s.env_files),
        "checks": CHECKS.as_dict(),
        "signingKey": KEY_PEM,
        "publisherHost": "publisher",
        "publisherUser": "root",
        "publisherPort": 22,
        "publisherHostKey": HOST_KEY,
        "publisherPrivateKey": "KEY-publisher",
        "path": str(world.published),
        "deviceHost": "device",
        "deviceUser": "root",
        "devicePort": 22,
        "deviceHostKey": HOST_KEY,
        "devicePrivateKey": "KEY-device",
        "deviceDocumentPath": str(world.device / "state/desired-release.json"),
        "deviceEnvDir": str(world.device / "env"),
        "deviceStateDir": str(world.device / "state"),
        **extra,
    }


def on_publisher(world: World) -> bytes:
    return world.published.read_bytes()


def test_create_publishes_sequence_1_signed_and_readable_by_all(world: World) -> None:
    world.device_up = False
    created = DesiredReleaseProvider().create(props(world))
    outs = created.outs or {}
    assert created.id == "desired-release-prod-smoker-pi"
    assert outs["sequence"] == 1 and outs["path"] == str(world.published)
    assert outs["publicKey"] == public_pem(KEY)
    assert outs["document"].encode() == on_publisher(world)
    desired = parse(on_publisher(world), PUBLIC, stack="prod", guest="smoker-pi")
    assert desired.sequence == 1 and desired.content_hash == outs["contentHash"]
    assert stat.S_IMODE(os.stat(world.published).st_mode) == 0o644
    assert [p.name for p in world.published.parent.iterdir()] == ["smoker-pi.json"]  # no temp


def test_the_document_holds_no_secret(world: World) -> None:
    outs = DesiredReleaseProvider().create(props(world)).outs or {}
    published = on_publisher(world).decode()
    for secret in (APP_PASSWORD, "root-secret", KEY_PEM.splitlines()[1], "KEY-"):
        assert secret not in published and secret not in outs["document"]
    env = json.loads(published)["document"]["release"]["envFiles"]
    assert set(env) == {"backend.env", "mongo.env"} and all(len(h) == 64 for h in env.values())
    # the secrets reach the publisher on no command line and in no stdin
    publisher_stdins = [
        s for (host, _), s in zip(world.commands, world.stdins, strict=True) if host == "publisher"
    ]
    assert not [s for s in publisher_stdins if APP_PASSWORD.encode() in s]
    assert not [c for _, c in world.commands if APP_PASSWORD in c]


def test_unchanged_content_is_no_change_and_connects_nowhere(world: World) -> None:
    provider = DesiredReleaseProvider()
    outs = provider.create(props(world)).outs or {}
    before = len(world.connections)
    # a new connection, a new key, another device address: nothing to publish
    news = props(world, publisherPrivateKey="KEY-rotated", deviceHost="10.20.0.99")
    diff = provider.diff("id", outs, news)
    assert diff.changes is False and not diff.replaces
    provider.read("id", outs)
    assert len(world.connections) == before


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"compose": spec("1.1.0", planned=True).compose}, "contentHash"),
        ({"envFiles": dict(spec("1.0.0", password="rotated").env_files)}, "contentHash"),
        ({"checks": {"http": []}}, "contentHash"),
        ({"path": "/srv/elsewhere/smoker-pi.json"}, "path"),
        ({"publisherHost": "10.20.0.21"}, "publisherHost"),
        # a rebuilt cloud guest: the document it held is gone, publish it again
        ({"publisherHostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRebuilt"}, "publisherHostKey"),
        ({"guest": "smoker-pi-2"}, "guest"),
        ({"signingKey": OTHER_KEY_PEM}, "publicKey"),  # the device gets the new public key
    ],
)
def test_content_or_target_changes_are_updates(
    world: World, change: dict[str, Any], key: str
) -> None:
    provider = DesiredReleaseProvider()
    outs = provider.create(props(world)).outs or {}
    diff = provider.diff("id", outs, props(world, **change))
    assert diff.changes is True and not diff.replaces
    assert device_release.changed_keys(outs, props(world, **change)) == [key]


def test_update_increments_the_sequence_from_the_old_state(world: World) -> None:
    provider = DesiredReleaseProvider()
    first = provider.create(props(world)).outs or {}
    second = provider.update("id", first, props(world, "1.1.0")).outs or {}
    third = provider.update("id", second, props(world, "1.2.0")).outs or {}
    assert (first["sequence"], second["sequence"], third["sequence"]) == (1, 2, 3)
    desired = parse(on_publisher(world), PUBLIC, seen=Seen(2, second["contentHash"]))
    assert desired.sequence == 3 and desired.content_hash == third["contentHash"]
    assert first["contentHash"] != second["contentHash"] != third["contentHash"]


def test_the_sequence_goes_past_what_the_publisher_holds(world: World) -> None:
    """A lost state (or a resource created again) must not make the device see a replay."""
    provider = DesiredReleaseProvider()
    outs = provider.create(props(world)).outs or {}
    outs = provider.update("id", outs, props(world, "1.1.0")).outs or {}
    again = provider.create(props(world, "1.2.0")).outs or {}
    assert again["sequence"] == 3
    stale = provider.update("id", {**outs, "sequence": 1}, props(world, "1.0.0")).outs or {}
    assert stale["sequence"] == 4


def test_a_failed_publication_raises_so_pulumi_keeps_the_old_state(world: World) -> None:
    provider = DesiredReleaseProvider()
    outs = provider.create(props(world)).outs or {}
    world.fail_publish = True
    with pytest.raises(PublishError, match=r"No space left on device.*next `pulumi up`"):
        provider.update("id", outs, props(world, "1.1.0"))
    assert json.loads(on_publisher(world))["document"]["sequence"] == 1
    world.fail_publish = False
    assert (provider.update("id", outs, props(world, "1.1.0")).outs or {})["sequence"] == 2


def test_an_unreachable_publisher_raises(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    @contextlib.contextmanager
    def refused(target: SshTarget) -> Iterator[None]:
        raise TransportError(f"SSH to root@{target.host}:22 failed: connection refused")
        yield

    monkeypatch.setattr(device_release, "connect", refused)
    with pytest.raises(PublishError, match="connection refused; nothing was published"):
        DesiredReleaseProvider().create(props(world))


def test_a_reachable_device_gets_the_push_and_reports(world: World) -> None:
    outs = DesiredReleaseProvider().create(props(world)).outs or {}
    assert outs["delivery"] == "pushed" and outs["agentOutcome"] == "deployed"
    assert outs["agentReport"]["desired"]["sequence"] == 1
    assert outs["note"].startswith("deployed: sequence 1")
    local = world.device / "state/desired-release.json"
    assert local.read_bytes() == on_publisher(world)
    assert stat.S_IMODE(local.stat().st_mode) == 0o644
    env = world.device / "env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o700
    for name, content in spec("1.0.0").env_files.items():
        assert (env / name).read_text() == content
        assert stat.S_IMODE((env / name).stat().st_mode) == 0o600
    device_commands = [c for host, c in world.commands if host == "device"]
    assert any("systemctl start --wait smart-smoker-agent.service" in c for c in device_commands)
    assert all(c.startswith("timeout ") for c in device_commands if "systemctl" in c)


def test_a_push_that_joins_a_timer_run_starts_the_agent_once_more(world: World) -> None:
    """`systemctl start --wait` while the timer's run is under way waits for that run, which
    read the device's document before the push wrote it."""
    world.timer_runs = 1
    outs = DesiredReleaseProvider().create(props(world)).outs or {}
    assert (outs["delivery"], outs["agentOutcome"]) == ("pushed", "deployed")
    starts = [c for host, c in world.commands if host == "device" and "systemctl start" in c]
    assert len(starts) == 2
    world.timer_runs = 5  # never more than two starts: then the note says so
    outs = DesiredReleaseProvider().create(props(world, "1.1.0")).outs or {}
    assert "report is about sequence None, not 2" in outs["note"]


def test_a_device_that_is_off_is_not_a_failure(world: World) -> None:
    world.device_up = False
    outs = DesiredReleaseProvider().create(props(world)).outs or {}
    assert outs["delivery"] == "pull" and outs["agentOutcome"] is None
    assert "converge by pull at its next boot or agent timer" in outs["note"]
    assert "timed out" in outs["note"]
    assert outs["sequence"] == 1 and on_publisher(world)


def test_no_device_address_is_pull(world: World) -> None:
    outs = DesiredReleaseProvider().create(props(world, deviceHost="")).outs or {}
    assert outs["delivery"] == "pull" and "no device address" in outs["note"]
    assert "device" not in world.connections


def test_a_failed_agent_run_is_reported_not_raised(world: World) -> None:
    world.agent_outcome, world.agent_exit = "rolled-back", 1
    outs = DesiredReleaseProvider().create(props(world)).outs or {}
    assert outs["delivery"] == "pushed" and outs["agentOutcome"] == "rolled-back"
    assert outs["sequence"] == 1  # the publication stands


def test_delete_leaves_the_publication(world: World) -> None:
    provider = DesiredReleaseProvider()
    outs = provider.create(props(world)).outs or {}
    before = len(world.connections)
    provider.delete("id", outs)
    assert len(world.connections) == before and world.published.exists()


def test_check_names_missing_inputs() -> None:
    result = DesiredReleaseProvider().check({}, {"stack": "prod"})
    assert {f.property for f in result.failures or []} >= {"signingKey", "path", "compose"}


def test_the_wiring_helper_registers_every_secret_as_a_secret() -> None:
    from config import parse_config
    from config.secrets import Secret
    from rendering.app import release_inputs
    from tests.configs import stack_raw
    from tests.sdk.wire import SECRET_SIG, SIG
    from tools.synth import record

    cfg = parse_config(*stack_raw("dev"), "dev")
    device, cloud = cfg.guest("virtual-smoker-device"), cfg.guest("dev-cloud")
    signing = Secret(KEY_PEM)
    assert device_release.release_public_key(signing) == public_pem(KEY)

    def build() -> None:
        inputs = device_release.desired_release_inputs(
            "dev",
            device,
            release_inputs(cfg, device, None),
            signing_key=signing,
            private_key=cfg.secrets.guest_ssh_private_key,
            publisher=cloud,
            publisher_host_key=HOST_KEY,
        )
        device_release.DesiredRelease("virtual-smoker-device-desired-release", inputs)

    (res,) = record("dev", build)
    assert res.type == "pulumi-python:dynamic/device:DesiredRelease"
    wire = res.wire_inputs
    for key in ("signingKey", "envFiles", "publisherPrivateKey", "devicePrivateKey"):
        assert wire[key][SIG] == SECRET_SIG, key
    assert wire["path"] == "/srv/smart-smoker/device-releases/virtual-smoker-device.json"
    assert wire["publisherHost"] == cloud.ssh_host and wire["deviceHost"] == device.ssh_host
    assert DesiredReleaseProvider().check({}, {k: v for k, v in wire.items()}).failures == []


def test_the_push_runs_the_real_agent_on_what_it_delivered(world: World) -> None:
    """Publish, push, and `deploy.agent.converge` (over the fake host's engine) reading the
    pushed copy and env files, reporting back: a deploy, a newer one, then a rolled-back one."""
    from deploy.agent import converge

    device, clock = fake_host(), Clock()

    def run_agent() -> int:
        clock.t += 60
        report = converge(
            str(world.device / "state/desired-release.json"),
            PUBLIC,
            world.device / "state",
            lambda: make_engine(device, clock),
            env_dir=world.device / "env",
            stack="prod",
            guest="smoker-pi",
            clock=clock.wall,
        )
        return report.exit_code

    world.real_agent = run_agent
    provider = DesiredReleaseProvider()
    first = provider.create(props(world)).outs or {}
    assert (first["delivery"], first["agentOutcome"]) == ("pushed", "deployed"), first["note"]
    live = device.current
    assert live is not None and first["agentReport"]["liveRelease"] == live
    second = provider.update("id", first, props(world, "1.1.0")).outs or {}
    assert (second["sequence"], second["agentOutcome"]) == (2, "deployed")
    assert device.current != live
    device.broken.add(digest("backend", "1.2.0"))  # its containers go unhealthy
    third = provider.update("id", second, props(world, "1.2.0")).outs or {}
    assert (third["sequence"], third["delivery"], third["agentOutcome"]) == (
        3,
        "pushed",
        "rolled-back",
    )
    assert third["agentReport"]["liveRelease"] == second["agentReport"]["liveRelease"]
