"""SDK boundary (fast): the dev stack's dynamic resources through the SDK's own provider host.

`python -m pulumi.dynamic` runs from the project directory and is called over gRPC with the
exact inputs the program registers (`tools.synth`'s wire inputs), converted as the engine
converts them. No host is reached: where a call could connect, the connection points at a
loopback listener that counts connection attempts.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import pytest

from components.release import OUTPUTS as RELEASE_OUTPUTS
from tests.sdk.provider_host import (
    OUTPUT_SIG,
    PROVIDER_KEY,
    RESOURCE_SIG,
    SECRET_SIG,
    SIG,
    UNKNOWN,
    ProviderError,
    ProviderHost,
    dynamic_resource,
    engine_inputs,
    plain,
    substitute,
)
from tests.sdk.ssh_server import ed25519_pair
from tools.synth import Resource, Synthesis, synthesize

RELEASE = "dev-cloud-release"
USERS = "dev-cloud-mongo-users"
BOTH = [RELEASE, USERS]
REQUIRED = {
    RELEASE: ["host", "sshUser", "privateKey", "hostKey", "project", "appDir", "compose"],
    USERS: [
        "host",
        "sshUser",
        "privateKey",
        "hostKey",
        "mongoPort",
        "adminUser",
        "adminPassword",
        "users",
    ],
}


@pytest.fixture(scope="module")
def synthesis() -> Synthesis:
    return synthesize("dev")


@pytest.fixture(scope="module")
def host() -> Iterator[ProviderHost]:
    with ProviderHost() as provider_host:
        yield provider_host


def resource(synthesis: Synthesis, name: str) -> Resource:
    found: Resource = dynamic_resource(synthesis.resources, name)
    return found


def resource_id(name: str, inputs: dict[str, Any]) -> str:
    if name == RELEASE:
        return f"release-{inputs['host']}-{inputs['project']}"
    return f"mongo-users-{inputs['host']}"


def checked(host: ProviderHost, res: Resource, wire: dict[str, Any], preview: bool = False) -> Any:
    inputs, failures = host.check(res.urn, {}, engine_inputs(wire, preview))
    assert failures == []
    return inputs


def state_after_create(name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The state a successful Create records: the inputs plus the provider's outputs."""
    if name == RELEASE:
        outputs = {
            "releaseId": "20260101T000000Z-1a2b3c",
            "digests": {"backend": "benjr70/smart-smoker-backend@sha256:" + "0" * 64},
            "deployedAt": "2026-01-01T00:00:00Z",
            "backupId": "smartsmoker-predeploy-20260101T000000Z",
        }
        assert set(outputs) == set(RELEASE_OUTPUTS)
    else:
        outputs = {"result": {"admin": "unchanged", "smartsmoker": "created"}}
    return {**inputs, **outputs}


class Listener:
    """A loopback TCP port that counts connection attempts (and hangs up on each)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def connection(self) -> dict[str, Any]:
        """Connection inputs pointing at this listener (a readable key, a pinned host key)."""
        private, public = ed25519_pair()
        return {"host": "127.0.0.1", "sshPort": self.port, "privateKey": private, "hostKey": public}


def walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


# the protocol as the engine sees it ------------------------------------------------------------


def test_the_host_takes_plain_values_and_no_previews(host: ProviderHost) -> None:
    assert host.configure_response is not None
    assert host.accepts_secrets is False  # the engine unwraps secrets before every call
    assert host.configure_response.acceptResources is False
    assert host.supports_preview is False  # Create/Update are never called in a preview


def test_engine_inputs_convert_as_the_engine_marshals() -> None:
    wire: dict[str, Any] = {
        "a": {SIG: SECRET_SIG, "value": {"k": "s", "n": 2.0}},
        "b": UNKNOWN,
        "c": [1.0, UNKNOWN, {SIG: SECRET_SIG, "value": "x"}],
        "d": {SIG: RESOURCE_SIG, "urn": "urn:pulumi:dev::p::t::n", "id": "104"},
        "e": {SIG: RESOURCE_SIG, "urn": "urn:pulumi:dev::p::t::n"},
        "f": {SIG: OUTPUT_SIG, "value": "known", "secret": True},
        "g": {SIG: OUTPUT_SIG, "dependencies": ["urn:x"]},
        "h": None,
    }
    sent: dict[str, Any] = {"a": {"k": "s", "n": 2.0}, "c": [1.0, "x"], "d": "104"}
    sent |= {"e": "urn:pulumi:dev::p::t::n", "f": "known", "h": None}
    assert engine_inputs(wire, preview=False) == sent
    assert engine_inputs(wire, preview=True) == {
        **sent,
        "b": UNKNOWN,
        "c": [1.0, UNKNOWN, "x"],
        "g": UNKNOWN,
    }


@pytest.mark.parametrize("name", BOTH)
def test_the_registered_inputs_reach_the_provider_as_plain_values(
    synthesis: Synthesis, name: str
) -> None:
    wire = resource(synthesis, name).wire_inputs
    assert wire["privateKey"].get(SIG) == SECRET_SIG  # registered as a secret
    sent = engine_inputs(wire, preview=False)
    assert not [v for v in walk(sent) if isinstance(v, dict) and SIG in v]
    assert sent["privateKey"] == plain(wire["privateKey"]) and "PRIVATE KEY" in sent["privateKey"]
    assert isinstance(sent[PROVIDER_KEY], str)  # the pickled provider, unwrapped
    assert sent["sshPort"] == 22.0  # a Struct carries every number as a double


# Check -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BOTH)
def test_check_passes_the_exact_wire_inputs(
    host: ProviderHost, synthesis: Synthesis, name: str
) -> None:
    res = resource(synthesis, name)
    sent = engine_inputs(res.wire_inputs, preview=False)
    inputs, failures = host.check(res.urn, {}, sent)
    assert failures == []
    assert inputs == sent


@pytest.mark.parametrize(
    ("name", "key"),
    [(name, key) for name in BOTH for key in REQUIRED[name]],
)
def test_check_fails_naming_a_missing_key(
    host: ProviderHost, synthesis: Synthesis, name: str, key: str
) -> None:
    res = resource(synthesis, name)
    wire = {k: v for k, v in res.wire_inputs.items() if k != key}
    _, failures = host.check(res.urn, {}, engine_inputs(wire, preview=False))
    assert [prop for prop, _ in failures] == [key]
    assert key in failures[0][1]


# Diff ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BOTH)
def test_identical_inputs_have_no_changes(
    host: ProviderHost, synthesis: Synthesis, name: str
) -> None:
    res = resource(synthesis, name)
    inputs = checked(host, res, res.wire_inputs)
    state = state_after_create(name, inputs)
    diff = host.diff(res.urn, resource_id(name, inputs), state, inputs, old_inputs=inputs)
    assert diff.changes is False and diff.replaces == []


def _changed_app_password(wire: dict[str, Any]) -> dict[str, Any]:
    users = [{**u, "password": "rotated-Pa55"} for u in plain(wire["users"])]
    return substitute(wire, users=users)


def _changed_env(wire: dict[str, Any]) -> dict[str, Any]:
    env = plain(wire["envFiles"])
    env["backend.env"] += "EXTRA=1\n"
    return substitute(wire, envFiles=env)


CONTENT_CHANGES = {
    (RELEASE, "compose"): lambda w: substitute(w, compose=w["compose"] + "# changed\n"),
    (RELEASE, "envFiles"): _changed_env,
    (USERS, "adminPassword"): lambda w: substitute(w, adminPassword="rotated-root-Pa55"),
    (USERS, "users"): _changed_app_password,
}


@pytest.mark.parametrize(("name", "key"), list(CONTENT_CHANGES))
def test_a_content_change_is_an_update_not_a_replacement(
    host: ProviderHost, synthesis: Synthesis, name: str, key: str
) -> None:
    res = resource(synthesis, name)
    olds = checked(host, res, res.wire_inputs)
    changed = CONTENT_CHANGES[(name, key)](res.wire_inputs)
    assert plain(changed[key]) != plain(res.wire_inputs[key])
    if res.wire_inputs[key].__class__ is dict and SIG in res.wire_inputs[key]:
        assert changed[key][SIG] == SECRET_SIG  # still registered as a secret
    news = checked(host, res, changed)
    diff = host.diff(res.urn, resource_id(name, olds), state_after_create(name, olds), news, olds)
    assert diff.changes is True
    assert diff.replaces == [] and diff.delete_before_replace is False


CONNECTION_CHANGES = {
    "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRebuiltGuestHostKey000000000000000000000",
    "host": "10.20.0.21",
    "sshPort": 2222,
    "privateKey": ed25519_pair()[0],
}


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize("key", list(CONNECTION_CHANGES))
def test_a_connection_change_never_replaces(
    host: ProviderHost, synthesis: Synthesis, name: str, key: str
) -> None:
    res = resource(synthesis, name)
    olds = checked(host, res, res.wire_inputs)
    news = checked(host, res, substitute(res.wire_inputs, **{key: CONNECTION_CHANGES[key]}))
    diff = host.diff(res.urn, resource_id(name, olds), state_after_create(name, olds), news, olds)
    assert diff.replaces == [] and diff.delete_before_replace is False
    if name == RELEASE:  # recorded as an update (which must not deploy: below)
        assert diff.changes is True


# Update, Read, Delete without a host -----------------------------------------------------------


def test_a_connection_only_update_of_the_release_returns_new_state_and_connects_nowhere(
    host: ProviderHost, synthesis: Synthesis
) -> None:
    res = resource(synthesis, RELEASE)
    olds = checked(host, res, res.wire_inputs)
    state = state_after_create(RELEASE, olds)
    with Listener() as listener:
        news = checked(host, res, substitute(res.wire_inputs, **listener.connection()))
        assert host.diff(res.urn, resource_id(RELEASE, olds), state, news, olds).changes
        outs = host.update(res.urn, resource_id(RELEASE, olds), state, news, old_inputs=olds)
    assert listener.connections == 0
    assert outs == {**news, **{key: state[key] for key in RELEASE_OUTPUTS}}


def test_a_connection_only_change_of_the_mongo_users_is_recorded_without_connecting(
    host: ProviderHost, synthesis: Synthesis
) -> None:
    res = resource(synthesis, USERS)
    olds = checked(host, res, res.wire_inputs)
    state = state_after_create(USERS, olds)
    with Listener() as listener:
        news = checked(host, res, substitute(res.wire_inputs, **listener.connection()))
        assert host.diff(res.urn, resource_id(USERS, olds), state, news, olds).changes
        outs = host.update(res.urn, resource_id(USERS, olds), state, news, old_inputs=olds)
    assert listener.connections == 0
    assert outs == {**news, "result": state["result"]}


def test_a_content_update_of_the_release_does_connect_and_its_failure_reaches_the_engine(
    host: ProviderHost, synthesis: Synthesis
) -> None:
    """The control for the test above: the listener sees a deploy's connection, and the
    provider's error comes back as a gRPC error carrying its message."""
    res = resource(synthesis, RELEASE)
    olds = checked(host, res, res.wire_inputs)
    state = state_after_create(RELEASE, olds)
    with Listener() as listener:
        wire = substitute(res.wire_inputs, **listener.connection())
        news = checked(host, res, substitute(wire, compose=wire["compose"] + "# changed\n"))
        with pytest.raises(ProviderError) as raised:
            host.update(res.urn, resource_id(RELEASE, olds), state, news, old_inputs=olds)
    assert listener.connections >= 1
    assert f"SSH to root@127.0.0.1:{listener.port} failed" in raised.value.message
    assert "TransportError" in raised.value.details()


def test_reading_and_deleting_the_release_touch_no_host(
    host: ProviderHost, synthesis: Synthesis
) -> None:
    res = resource(synthesis, RELEASE)
    with Listener() as listener:
        inputs = checked(host, res, substitute(res.wire_inputs, **listener.connection()))
        state = state_after_create(RELEASE, inputs)
        id_ = resource_id(RELEASE, inputs)
        assert host.read(res.urn, id_, state) == (id_, state)
        host.delete(res.urn, id_, state)
    assert listener.connections == 0


def test_deleting_the_mongo_users_drops_nothing(host: ProviderHost, synthesis: Synthesis) -> None:
    res = resource(synthesis, USERS)
    with Listener() as listener:
        inputs = checked(host, res, substitute(res.wire_inputs, **listener.connection()))
        state = state_after_create(USERS, inputs)
        host.delete(res.urn, resource_id(USERS, inputs), state)
    assert listener.connections == 0


# the first preview -----------------------------------------------------------------------------

UNKNOWN_IN_PREVIEW = [
    (RELEASE, "hostKey"),  # the guest's readiness step has not run yet
    (RELEASE, "host"),
    (RELEASE, "envFiles"),
    (USERS, "hostKey"),
    (USERS, "adminPassword"),
]


@pytest.mark.parametrize(("name", "key"), UNKNOWN_IN_PREVIEW)
def test_a_preview_with_unknown_inputs_checks_and_diffs(
    host: ProviderHost, synthesis: Synthesis, name: str, key: str
) -> None:
    res = resource(synthesis, name)
    wire = substitute(res.wire_inputs, **{key: UNKNOWN})
    sent = engine_inputs(wire, preview=True)
    assert sent[key] == UNKNOWN
    # a first preview: nothing exists yet (Check only; Create is not called in a preview)
    inputs, failures = host.check(res.urn, {}, sent)
    assert failures == [] and inputs[key] == UNKNOWN
    assert host.create(res.urn, inputs, preview=True) == ("", inputs)
    # a preview of a change to an existing resource
    olds = checked(host, res, res.wire_inputs)
    inputs, failures = host.check(res.urn, olds, sent)
    assert failures == []
    diff = host.diff(res.urn, resource_id(name, olds), state_after_create(name, olds), inputs)
    assert diff.replaces == []
    if name == RELEASE:
        assert diff.changes is True
