"""SDK boundary: the DesiredRelease provider through the SDK's own provider host.

The resource is registered under mocks with its secrets as secrets (what the program will
send), its wire inputs converted as the engine converts them, and `python -m pulumi.dynamic`
(another process) is driven over gRPC: Check, Create (sequence 1), Update (sequence 2), and a
Diff of the same inputs against the new state (no change). The publisher is a loopback SSH
server that runs the provider's commands on this machine; the device's port is closed, so the
push falls back to pull without failing.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from components.device_release import DesiredRelease
from deploy.desired import Seen, parse, public_key_from_pem, public_pem
from tests.sdk.provider_host import (
    PROVIDER_KEY,
    SECRET_SIG,
    SIG,
    ProviderHost,
    dynamic_resource,
    engine_inputs,
    plain,
    substitute,
)
from tests.sdk.ssh_server import SshServer
from tests.unit.engine_kit import APP_PASSWORD, CHECKS, spec
from tools.synth import Resource, record

NAME = "smoker-pi-desired-release"
TYPE = "pulumi-python:dynamic/device:DesiredRelease"
SECRETS = ("signingKey", "envFiles", "publisherPrivateKey", "devicePrivateKey")
KEY = Ed25519PrivateKey.generate()
KEY_PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


@pytest.fixture(scope="module")
def host() -> Iterator[ProviderHost]:
    with ProviderHost() as provider_host:
        yield provider_host


@pytest.fixture
def publisher() -> Iterator[SshServer]:
    with SshServer() as server:
        yield server


def closed_port() -> int:
    """A loopback port nobody listens on: the device is off."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def registered(publisher: SshServer, path: Path) -> Resource:
    s = spec("1.0.0", planned=True)
    device_port = closed_port()

    def build() -> None:  # the outputs belong to the runtime `record` sets up
        secret = pulumi.Output.secret
        props: dict[str, Any] = {
            "stack": "prod",
            "guest": "smoker-pi",
            "compose": s.compose,
            "envFiles": secret(dict(s.env_files)),
            "checks": CHECKS.as_dict(),
            "signingKey": secret(KEY_PEM),
            "publisherHost": "127.0.0.1",
            "publisherUser": "root",
            "publisherPort": publisher.port,
            "publisherHostKey": publisher.host_key,
            "publisherPrivateKey": secret(publisher.client_private_key),
            "path": str(path),
            "deviceHost": "127.0.0.1",
            "deviceUser": "root",
            "devicePort": device_port,
            "deviceHostKey": publisher.host_key,
            "devicePrivateKey": secret(publisher.client_private_key),
        }
        DesiredRelease(NAME, props)

    resources = record("prod", build)
    found: Resource = dynamic_resource(resources, NAME)
    return found


def test_create_update_and_no_change_across_the_process_boundary(
    host: ProviderHost, publisher: SshServer, tmp_path: Path
) -> None:
    path = tmp_path / "srv/device-releases/smoker-pi.json"
    res = registered(publisher, path)
    assert res.type == TYPE
    wire = res.wire_inputs
    for key in SECRETS:
        assert wire[key].get(SIG) == SECRET_SIG, f"{key} is not sent as a secret"
    assert sorted(res.additional_secret_outputs) == sorted(SECRETS)
    sent = engine_inputs(wire, preview=False)
    assert isinstance(sent[PROVIDER_KEY], str) and sent["signingKey"] == KEY_PEM

    inputs, failures = host.check(res.urn, {}, sent)
    assert failures == [] and inputs == sent
    id_, first = host.create(res.urn, inputs)
    assert id_ == "desired-release-prod-smoker-pi"
    assert first["sequence"] == 1  # a Struct double, 1.0
    assert first["delivery"] == "pull" and "converge by pull" in first["note"]
    public = public_key_from_pem(public_pem(KEY))
    assert path.read_text() == first["document"]
    assert parse(path.read_bytes(), public, stack="prod", guest="smoker-pi").sequence == 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    for secret in (APP_PASSWORD, KEY_PEM.splitlines()[1]):
        assert secret not in first["document"]
    assert publisher.logins >= 1

    # a new release: an update publishes sequence 2, counted from the old state
    s2 = spec("1.1.0", planned=True)
    changed = substitute(wire, compose=s2.compose)
    assert changed["envFiles"][SIG] == SECRET_SIG
    news, failures = host.check(res.urn, inputs, engine_inputs(changed, preview=False))
    assert failures == []
    assert host.diff(res.urn, id_, first, news, old_inputs=inputs).changes is True
    second = host.update(res.urn, id_, first, news, old_inputs=inputs)
    assert second["sequence"] == 2 and second["contentHash"] != first["contentHash"]
    desired = parse(path.read_bytes(), public, seen=Seen(1, first["contentHash"]))
    assert desired.sequence == 2 and json.loads(second["document"])["document"]["sequence"] == 2

    # the same inputs again: no change, nothing published
    commands = len(publisher.commands)
    again, _ = host.check(res.urn, news, engine_inputs(changed, preview=False))
    diff = host.diff(res.urn, id_, second, again, old_inputs=news)
    assert diff.changes is False and diff.replaces == []
    assert len(publisher.commands) == commands
    assert plain(changed["envFiles"]) == dict(spec("1.0.0").env_files)
