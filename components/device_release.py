"""DesiredRelease: a dynamic resource that publishes a device's signed desired release.

The device (the physical smoker, usually powered off) updates by pull (`deploy.agent`). This
provider signs its release with `deploy.desired.publish` and writes the document to the
publisher (the stack's cloud guest) over SSH, atomically (a temporary file in the same
directory, content on stdin, mode 0644, rename): the document holds no secret, env files
appear in it only as their sha256. Then, best effort, it pushes: when the device answers SSH
within a short connect deadline, the env files go into its root-only env directory, the
document into its local copy, and its agent runs once (`systemctl start --wait`); the agent's
`agent-report.json` is read back. A device that does not answer is not an error: it converges
by pull at its next boot or timer.

The sequence is monotonic and lives in the state: `create` gives 1, `update` the old state's
sequence + 1, never a clock. Both also read the sequence of the document already on the
publisher and go past it, so a lost state or a failed update (which keeps the old state) never
makes a device see a replay. Once the document is on the publisher nothing raises any more (the
push never raises): the state always records what was published.

Like the other providers: importable with no side effects, nothing kept on the instance, every
wait has a deadline (the engine enforces none), `update` is implemented, and `diff` is pure: only
the release's content hash, the publish target (with the publisher's host key: a rebuilt cloud
guest has lost the document, and the update publishes it again past the state's sequence) and
the signing key's public half count.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

import layout
from config import Guest, GuestSpec, Secret
from deploy import commands
from deploy.desired import content_hash_of, private_key_from_pem, public_pem, publish
from deploy.release import Checks, ReleaseSpec
from deploy.transport import SshTarget, Transport, TransportError, connect
from errors import SmokerError

REQUIRED = (
    "stack",
    "guest",
    "compose",
    "signingKey",
    "publisherHost",
    "publisherUser",
    "publisherHostKey",
    "publisherPrivateKey",
    "path",
)
SECRET_OUTPUTS = ["envFiles", "signingKey", "publisherPrivateKey", "devicePrivateKey"]
OUTPUTS = (
    "sequence",
    "contentHash",
    "publicKey",
    "document",
    "delivery",
    "note",
    "agentOutcome",
    "agentReport",
)
# a change publishes again; the publisher's host key changes when the cloud guest is rebuilt,
# which lost the document
TARGET_KEYS = ("stack", "guest", "publisherHost", "publisherHostKey", "path")

PUBLISH_TIMEOUT = 60.0  # one command on the publisher
PUSH_CONNECT_TIMEOUT = 8.0  # a device that does not answer by then is off: pull
PUSH_AGENT_TIMEOUT = 900.0  # one agent run (pull by digest, up, verify) on the device
PUSHED, PULL = "pushed", "pull"


class PublishError(SmokerError):
    """The document could not be written to the publisher (the state keeps the previous one)."""


def spec_of(props: dict[str, Any]) -> ReleaseSpec:
    return ReleaseSpec(
        compose=props["compose"],
        env_files=dict(props.get("envFiles") or {}),
        checks=Checks.from_dict(props.get("checks") or {}),
    )


def content_hash(props: dict[str, Any]) -> str:
    return content_hash_of(spec_of(props))


def publisher_of(props: dict[str, Any]) -> SshTarget:
    return SshTarget(
        host=props["publisherHost"],
        user=props["publisherUser"],
        private_key=props["publisherPrivateKey"],
        port=int(props.get("publisherPort") or 22),
        host_key=props.get("publisherHostKey") or "",
    )


def device_of(props: dict[str, Any]) -> SshTarget | None:
    """The device's SSH target for the push, or None when the program gives none."""
    if not props.get("deviceHost"):
        return None
    return SshTarget(
        host=props["deviceHost"],
        user=props.get("deviceUser") or "root",
        private_key=props.get("devicePrivateKey") or "",
        port=int(props.get("devicePort") or 22),
        host_key=props.get("deviceHostKey") or "",
        connect_timeout=float(props.get("pushConnectTimeoutSeconds") or PUSH_CONNECT_TIMEOUT),
    )


# -- the shell run on the publisher and the device -----------------------------------------------


def published_sequence(transport: Transport, path: str) -> int:
    """The sequence of the document at `path` (0 when there is none or it cannot be read)."""
    result = transport.run(f"cat {shlex.quote(path)} 2>/dev/null || true", timeout=PUBLISH_TIMEOUT)
    try:
        sequence = json.loads(result.stdout)["document"]["sequence"]
    except (ValueError, KeyError, TypeError):
        return 0
    return sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else 0


def _publish(props: dict[str, Any], after: int) -> dict[str, Any]:
    """Sign the release with the next sequence after `after` (and after what the publisher
    holds), write it to the publisher, then push it to the device if it answers."""
    key = private_key_from_pem(props["signingKey"])
    spec = spec_of(props)
    path = props["path"]
    try:
        with connect(publisher_of(props)) as publisher:
            sequence = max(after, published_sequence(publisher, path)) + 1
            document = publish(
                spec, stack=props["stack"], guest=props["guest"], sequence=sequence, private_key=key
            )
            result = publisher.run(
                commands.write_file_whole(path, "0644"), stdin=document, timeout=PUBLISH_TIMEOUT
            )
    except TransportError as exc:
        raise PublishError(
            f"publishing the desired release of {props['guest']} to {props['publisherHost']} "
            f"failed: {exc}; nothing was published, the next `pulumi up` tries again"
        ) from None
    if not result.ok:
        raise PublishError(
            f"writing {path} on {props['publisherHost']} failed (exit {result.exit_code}): "
            f"{result.stderr.strip()[-300:]}; nothing was published, the next `pulumi up` "
            "tries again"
        )
    outs = {
        **props,
        "sequence": sequence,
        "contentHash": content_hash_of(spec),
        "publicKey": public_pem(key),
        "document": document.decode(),
    }
    return {**outs, **push(props, document, sequence)}


def push(props: dict[str, Any], document: bytes, sequence: int) -> dict[str, Any]:
    """Best effort, never raises: deliver the env files and the document to the device and run
    its agent once. `delivery` is `pushed` (with the agent's outcome) or `pull`."""
    target = device_of(props)
    pull_later = "the device will converge by pull at its next boot or agent timer"
    if target is None:
        return _delivery(PULL, f"no device address to push to: {pull_later}")
    try:
        with connect(target) as device:
            return _push(device, props, document, sequence)
    except TransportError as exc:
        return _delivery(PULL, f"the device did not answer ({exc}): {pull_later}")


def _push(
    device: Transport, props: dict[str, Any], document: bytes, sequence: int
) -> dict[str, Any]:
    env_dir = props.get("deviceEnvDir") or layout.AGENT_ENV_DIR
    state_dir = props.get("deviceStateDir") or layout.AGENT_STATE_DIR
    pull_later = "the device will converge by pull at its next boot or agent timer"
    for name, content in sorted((props.get("envFiles") or {}).items()):
        done = device.run(
            commands.write_file_whole(f"{env_dir}/{name}", "0600", dir_mode="0700"),
            stdin=content.encode(),
            timeout=PUBLISH_TIMEOUT,
        )
        if not done.ok:
            return _delivery(PULL, f"delivering env file {name} failed: {pull_later}")
    local = props.get("deviceDocumentPath") or layout.AGENT_DOCUMENT
    done = device.run(commands.write_file_whole(local, "0644", dir_mode="0700"), stdin=document)
    if not done.ok:
        return _delivery(PULL, f"writing the document to {local} failed: {pull_later}")
    deadline = float(props.get("pushAgentTimeoutSeconds") or PUSH_AGENT_TIMEOUT)
    for _ in range(2):
        started = device.run(
            f"timeout {int(deadline)} systemctl start --wait {layout.AGENT_SERVICE}",
            timeout=deadline + 30,
        )
        report = _agent_report(device, state_dir)
        # a start while the timer's run is under way joins that run, which may have read the
        # device's document before this one arrived: then start the agent once more
        if not isinstance(report, dict) or _reported_sequence(report) == sequence:
            break
    if not isinstance(report, dict):
        note = f"the agent ran (exit {started.exit_code}) but left no readable report"
        return _delivery(PUSHED, note, None, None)
    outcome = str(report.get("outcome"))
    if _reported_sequence(report) != sequence:
        note = (
            f"the agent's report is about sequence {_reported_sequence(report)}, not {sequence} "
            f"(agent exit {started.exit_code}): {pull_later}"
        )
        return _delivery(PUSHED, note, outcome, report)
    return _delivery(PUSHED, f"{outcome}: {report.get('message')}", outcome, report)


def _agent_report(device: Transport, state_dir: str) -> Any:
    """The device's `agent-report.json` (None when it cannot be read)."""
    read = device.run(f"cat {shlex.quote(layout.agent_report(state_dir))}", timeout=PUBLISH_TIMEOUT)
    try:
        return json.loads(read.stdout) if read.ok else None
    except ValueError:
        return None


def _reported_sequence(report: dict[str, Any]) -> Any:
    return (report.get("desired") or {}).get("sequence")


def _delivery(
    how: str, note: str, outcome: str | None = None, report: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"delivery": how, "note": note, "agentOutcome": outcome, "agentReport": report}


def changed_keys(olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
    """What makes a new publication: the publish target, the release's content hash, or a new
    signing key (the device, given the new public key, would refuse the old signature)."""
    changed = [key for key in TARGET_KEYS if olds.get(key) != news.get(key)]
    try:
        if olds.get("contentHash") != content_hash(news):
            changed.append("contentHash")
    except (AttributeError, KeyError, TypeError, ValueError, SmokerError):
        changed.append("contentHash")  # unknown in a preview, or not a release
    try:
        if olds.get("publicKey") != public_pem(private_key_from_pem(news["signingKey"])):
            changed.append("publicKey")
    except (KeyError, TypeError, SmokerError):
        changed.append("publicKey")
    return changed


def release_public_key(signing_key: Secret) -> str:
    """The public half of `deviceReleaseSigningKey` (SubjectPublicKeyInfo PEM), for the
    device's `release.pub` (rendering.agent.agent_plan): not a secret."""
    return public_pem(private_key_from_pem(signing_key.reveal()))


def desired_release_inputs(
    stack: str,
    device: Guest,
    release: Mapping[str, Any],
    *,
    signing_key: Secret,
    private_key: Secret,
    publisher: GuestSpec,
    publisher_host_key: pulumi.Input[str],
    device_host_key: pulumi.Input[str] | None = None,
    compose: pulumi.Input[str] | None = None,
) -> dict[str, Any]:
    """The DesiredRelease inputs for `device`, published on the cloud guest `publisher`:
    `release` is the device's release (`rendering.app.release_inputs`: compose, envFiles,
    checks), `compose` the one with the planned digests when the stack pins them. Every secret
    is registered as a secret."""
    return {
        "stack": stack,
        "guest": device.name,
        "compose": release["compose"] if compose is None else compose,
        "envFiles": pulumi.Output.secret(release["envFiles"]),
        "checks": release["checks"],
        "signingKey": pulumi.Output.secret(signing_key.reveal()),
        "publisherHost": publisher.ssh_host,
        "publisherUser": publisher.ssh_user,
        "publisherPort": 22,
        "publisherHostKey": publisher_host_key,
        "publisherPrivateKey": pulumi.Output.secret(private_key.reveal()),
        "path": layout.published_release(device.name),
        "deviceHost": device.ssh_host,
        "deviceUser": device.ssh_user,
        "devicePort": 22,
        "deviceHostKey": device.ssh_host_key if device_host_key is None else device_host_key,
        "devicePrivateKey": pulumi.Output.secret(private_key.reveal()),
    }


class DesiredReleaseProvider(ResourceProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = [
            CheckFailure(key, f"{key} is required") for key in REQUIRED if not news.get(key)
        ]
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """A change only when the release's content (its hash) or where it goes changes."""
        return DiffResult(
            changes=bool(changed_keys(olds, news)), replaces=[], delete_before_replace=False
        )

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = _publish(props, after=0)
        return CreateResult(f"desired-release-{props['stack']}-{props['guest']}", outs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(_publish(news, after=int(olds.get("sequence") or 0)))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Refresh keeps the recorded publication (`python -m deploy status` shows the
        device's view)."""
        return ReadResult(id_, props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """The document stays on the publisher: a device keeps its release, and a resource
        created again later publishes past its sequence."""


class DesiredRelease(Resource, module="device", name="DesiredRelease"):
    """The signed desired release of one device, published (and pushed when it answers).

    Type token `pulumi-python:dynamic/device:DesiredRelease` (the engine's form of
    `smoker:device:DesiredRelease` for a dynamic resource)."""

    sequence: pulumi.Output[int]
    contentHash: pulumi.Output[str]  # noqa: N815
    publicKey: pulumi.Output[str]  # noqa: N815
    path: pulumi.Output[str]
    document: pulumi.Output[str]
    delivery: pulumi.Output[str]
    note: pulumi.Output[str]
    agentOutcome: pulumi.Output[str]  # noqa: N815
    agentReport: pulumi.Output[dict[str, Any]]  # noqa: N815

    def __init__(
        self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=SECRET_OUTPUTS)
        )
        outputs = {key: None for key in OUTPUTS}
        super().__init__(DesiredReleaseProvider(), name, {**outputs, **props}, opts)
