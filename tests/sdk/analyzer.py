"""Drive the policy pack through its own Analyzer gRPC server, the way the Pulumi engine does.

Launch (pulumi/pulumi `sdk/python/cmd/pulumi-language-python` RunPlugin, kind analyzer): the
language host runs `python -u -m pulumi.policy <engine address> <pack dir>` with the pack
directory as working directory; `PolicyPack(...)` serves the Analyzer service on 127.0.0.1 and
prints its port as the first line of stdout. `pulumi.policy` parses the engine address but never
dials it (pulumi 3.272, pulumi-policy 1.21.0), so no fake engine is needed.

Calls (pulumi/pulumi `pkg/engine/update.go`, `pkg/resource/plugin/analyzer_plugin.go`):
Handshake (unimplemented by the Python SDK: the engine falls back), ConfigureStack,
GetAnalyzerInfo, Configure (every policy at its announced level), then `Analyze` per resource
(its checked inputs) and `AnalyzeStack` once (every resource's outputs; under synth's mocks the
outputs are the inputs echoed back).

Properties (`MarshalOptions{KeepUnknowns: true, KeepSecrets: true, SkipInternalKeys: true}`):
top-level `__` keys (a dynamic resource's pickled `__provider`) are dropped; a secret travels as
`{sig: secret, value: <plaintext>}`, which the SDK unwraps, unmarked (pulumi/pulumi-policy#241);
an unknown is the string sentinel `04da6b54-...`; every number is a double in the Struct. A
custom resource that names no provider gets the package's default provider.
"""

from __future__ import annotations

import functools
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from tests.sdk.wire import OUTPUT_SIG, RESOURCE_SIG, SECRET_SIG, SIG, UNKNOWN
from tools import synth

REPO = Path(__file__).resolve().parents[2]
PACK_DIR = REPO / "policy"
PROJECT = "smoker-infra"
START_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0
# Nothing listens here: the pack is handed an engine address it does not use.
UNUSED_ENGINE_ADDRESS = "127.0.0.1:1"


# --- the engine's view of a stack ---------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    urn: str
    type: str
    name: str
    props: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineResource:
    """One resource as the engine hands it to an analyzer; `props` are wire-encoded."""

    urn: str
    type: str
    name: str
    custom: bool
    props: Mapping[str, Any]
    provider: Provider | None
    parent: str
    protect: bool = False
    ignore_changes: tuple[str, ...] = ()
    delete_before_replace: bool | None = None
    additional_secret_outputs: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    property_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def engine_value(value: Any) -> Any:
    """A property as the SDK sent it (MessageToDict of the Struct) -> as the engine re-sends it."""
    if isinstance(value, dict):
        sig = value.get(SIG)
        if sig == SECRET_SIG:
            return {SIG: SECRET_SIG, "value": engine_value(value.get("value"))}
        if sig == OUTPUT_SIG:  # KeepOutputValues is false: its element, or an unknown
            inner = engine_value(value["value"]) if "value" in value else UNKNOWN
            return {SIG: SECRET_SIG, "value": inner} if value.get("secret") else inner
        if sig == RESOURCE_SIG:  # KeepResources is false: its ID, else its URN
            return value.get("id") or value.get("urn")
        return {k: engine_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [engine_value(v) for v in value]
    return value


def _unknown_like(value: Any) -> Any:
    """An unknown in place of `value`, still secret if it was."""
    if isinstance(value, dict) and value.get(SIG) == SECRET_SIG:
        return {SIG: SECRET_SIG, "value": UNKNOWN}
    return UNKNOWN


def _provider_urn(reference: str) -> str:
    """`urn:pulumi:<stack>::<project>::<type>::<name>[::<id>]` -> the URN (the first four parts)."""
    return "::".join(reference.split("::")[:4])


def _urn_type_and_name(urn: str) -> tuple[str, str]:
    _, _, qualified, name = urn.split("::", 3)
    return qualified.rsplit("$", 1)[-1], name


def engine_stack(synthesis: synth.Synthesis, preview: bool) -> list[EngineResource]:
    """The synthesized stack as the engine sends it to analyzers.

    `preview`: a first preview of the stack, where every input computed from another custom
    resource (property dependencies on anything but providers and components) is unknown.
    """
    by_urn = {r.urn: r for r in synthesis.resources}
    outputs_unknown = {
        r.urn
        for r in synthesis.resources
        if r.custom and not r.type.startswith("pulumi:providers:")
    }

    def props(r: synth.Resource) -> dict[str, Any]:
        wire = {k: v for k, v in r.wire_inputs.items() if not k.startswith("__")}
        if preview:
            for key, deps in r.property_dependencies.items():
                if key in wire and set(deps) & outputs_unknown:
                    wire[key] = _unknown_like(wire[key])
        return {k: engine_value(v) for k, v in wire.items()}

    def provider(r: synth.Resource) -> Provider | None:
        if not r.custom or r.type.startswith("pulumi:providers:"):
            return None
        if r.provider:
            urn = _provider_urn(r.provider)
        else:  # the engine fills in the package's default provider
            package = r.type.split(":", 1)[0]
            urn = f"urn:pulumi:{synthesis.stack}::{PROJECT}::pulumi:providers:{package}::default"
        type_, name = _urn_type_and_name(urn)
        explicit = by_urn.get(urn)
        return Provider(urn, type_, name, props(explicit) if explicit else {})

    return [
        EngineResource(
            urn=r.urn,
            type=r.type,
            name=r.name,
            custom=r.custom,
            props=props(r),
            provider=provider(r),
            parent=r.parent or "",
            protect=r.protect,
            ignore_changes=tuple(r.ignore_changes),
            delete_before_replace=True if r.delete_before_replace else None,
            additional_secret_outputs=tuple(r.additional_secret_outputs),
            aliases=tuple(a["urn"] for a in r.aliases if "urn" in a),
            dependencies=tuple(r.depends_on),
            property_dependencies={k: tuple(v) for k, v in r.property_dependencies.items() if v},
        )
        for r in synthesis.resources
    ]


def with_provider(r: EngineResource, reference: str | None, stack: str) -> EngineResource:
    """`r` with another provider reference; None leaves the engine's default provider."""
    package = r.type.split(":", 1)[0]
    default = f"urn:pulumi:{stack}::{PROJECT}::pulumi:providers:{package}::default"
    urn = _provider_urn(reference) if reference else default
    return replace(r, provider=Provider(urn, *_urn_type_and_name(urn)))


# --- protobuf ------------------------------------------------------------------------------------


def _struct(props: Mapping[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(dict(props))  # every number becomes a double, as in the engine's Struct
    return s


def _options(r: EngineResource) -> analyzer_pb2.AnalyzerResourceOptions:
    return analyzer_pb2.AnalyzerResourceOptions(
        protect=r.protect,
        ignoreChanges=list(r.ignore_changes),
        deleteBeforeReplace=bool(r.delete_before_replace),
        deleteBeforeReplaceDefined=r.delete_before_replace is not None,
        additionalSecretOutputs=list(r.additional_secret_outputs),
        aliases=list(r.aliases),
        customTimeouts=analyzer_pb2.AnalyzerResourceOptions.CustomTimeouts(),
        parent=r.parent,
    )


def _provider(p: Provider | None) -> analyzer_pb2.AnalyzerProviderResource | None:
    if p is None:
        return None
    return analyzer_pb2.AnalyzerProviderResource(
        urn=p.urn, type=p.type, name=p.name, properties=_struct(p.props)
    )


def analyze_request(r: EngineResource) -> analyzer_pb2.AnalyzeRequest:
    return analyzer_pb2.AnalyzeRequest(
        urn=r.urn,
        type=r.type,
        name=r.name,
        properties=_struct(r.props),
        options=_options(r),
        provider=_provider(r.provider),
    )


def stack_request(resources: Sequence[EngineResource]) -> analyzer_pb2.AnalyzeStackRequest:
    return analyzer_pb2.AnalyzeStackRequest(
        resources=[
            analyzer_pb2.AnalyzerResource(
                urn=r.urn,
                type=r.type,
                name=r.name,
                properties=_struct(r.props),
                options=_options(r),
                provider=_provider(r.provider),
                parent=r.parent,
                dependencies=list(r.dependencies),
                propertyDependencies={
                    k: analyzer_pb2.AnalyzerPropertyDependencies(urns=list(v))
                    for k, v in r.property_dependencies.items()
                },
            )
            for r in resources
        ]
    )


# --- the pack's server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Diagnostic:
    policy: str
    urn: str
    message: str
    level: str

    def __str__(self) -> str:
        return f"[{self.policy}] {self.level} {self.urn}: {self.message}"


class PolicyPackServer:
    """The pack's analyzer process and a client of it. Use as a context manager."""

    def __init__(self, pack_dir: Path = PACK_DIR) -> None:
        self.pack_dir = pack_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None
        self.stub: Any = None
        self.info: Any = None

    def __enter__(self) -> PolicyPackServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-u",
                "-m",
                "pulumi.policy",
                UNUSED_ENGINE_ADDRESS,
                str(self.pack_dir),
            ],
            cwd=self.pack_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            port = self._read_port()
            self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            grpc.channel_ready_future(self.channel).result(timeout=START_TIMEOUT)
            self.stub = analyzer_pb2_grpc.AnalyzerStub(self.channel)
            self._handshake()
            self.info = self.stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=CALL_TIMEOUT)
            self.stub.Configure(
                analyzer_pb2.ConfigureAnalyzerRequest(
                    policyConfig={
                        p.name: analyzer_pb2.PolicyConfig(enforcementLevel=p.enforcementLevel)
                        for p in self.info.policies
                    }
                ),
                timeout=CALL_TIMEOUT,
            )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_port(self) -> int:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if ready:
                line = self.process.stdout.readline()
                if line.strip().isdigit():
                    return int(line)
                if not line:
                    break  # the process closed stdout: it exited
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=10)
        raise RuntimeError(
            f"the policy pack announced no port (stdout {line!r}):\n{stderr.decode()}"
        )

    def _handshake(self) -> None:
        request = analyzer_pb2.AnalyzerHandshakeRequest(
            engine_address=UNUSED_ENGINE_ADDRESS,
            root_directory=str(self.pack_dir),
            program_directory=str(self.pack_dir),
        )
        try:
            self.stub.Handshake(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:  # the engine falls back on this
                raise

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()

    def configure_stack(self, stack: str, dry_run: bool) -> None:
        values, secret_keys = _stack_config(stack)
        self.stub.ConfigureStack(
            analyzer_pb2.AnalyzerStackConfigureRequest(
                stack=stack,
                project=PROJECT,
                organization="organization",
                dry_run=dry_run,
                config=values,
                config_secret_keys=sorted(secret_keys),
            ),
            timeout=CALL_TIMEOUT,
        )

    def analyze(
        self, resources: Sequence[EngineResource], stack: str, dry_run: bool
    ) -> list[Diagnostic]:
        """Every diagnostic of one operation: Analyze for each resource, then AnalyzeStack."""
        self.configure_stack(stack, dry_run)
        found: list[Diagnostic] = []
        # The engine analyzes resources as it steps through them, in parallel.
        calls = [
            self.stub.Analyze.future(analyze_request(r), timeout=CALL_TIMEOUT) for r in resources
        ]
        responses = [call.result() for call in calls]
        responses.append(self.stub.AnalyzeStack(stack_request(resources), timeout=CALL_TIMEOUT))
        level = analyzer_pb2.EnforcementLevel.Name
        for response in responses:
            found.extend(
                Diagnostic(d.policyName, d.urn, d.message, level(d.enforcementLevel))
                for d in response.diagnostics
            )
        return found


@functools.cache
def _stack_config(stack: str) -> tuple[dict[str, str], set[str]]:
    return synth.stack_file_config(stack)


def mutated(
    engine: Sequence[EngineResource],
    before: Sequence[Any],
    after: Sequence[Any],
    stack: str,
) -> list[EngineResource]:
    """Carry a mutation of the policy view of a stack (`policy.smoker_policies.Resource`s, in
    synth order) over to the engine view: dropped and added resources, changed inputs (plain
    values), protect and provider."""
    after_by_urn = {r.urn: r for r in after}
    before_urns = {r.urn for r in before}
    result: list[EngineResource] = []
    for r, old in zip(engine, before, strict=True):
        assert r.urn == old.urn, (r.urn, old.urn)
        new = after_by_urn.get(r.urn)
        if new is None:
            continue
        if new is old:
            result.append(r)
            continue
        props = {k: v for k, v in r.props.items() if k in new.props}
        props.update(
            (k, v) for k, v in new.props.items() if k not in old.props or old.props[k] != v
        )
        changed = replace(r, props=props, protect=new.protect)
        if new.provider != old.provider:
            changed = with_provider(changed, new.provider, stack)
        result.append(changed)
    for new in after:
        if new.urn not in before_urns:  # a custom resource the program does not have
            added = EngineResource(new.urn, new.type, new.name, True, dict(new.props), None, "")
            result.append(with_provider(replace(added, protect=new.protect), new.provider, stack))
    return result
