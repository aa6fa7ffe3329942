"""Offline synth: evaluate a stack under Pulumi mocks, with no CLI, credentials or network.

`python -m tools.synth dev` writes `build/dev/resources.json` (every resource with its type,
name, parent, provider, options and inputs, each secret replaced by a marker), every rendered host
file under `build/dev/`, and prints a readable tree. Secrets are placeholders: synth never needs
the real ones, and the placeholders never reach the output (they are secret outputs, so they
become markers).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.stack import wait_for_rpcs

from config import PROJECT, CommonConfig, HostStackConfig, parse_config
from config.stack_file import placeholder_secret, stack_file_config
from tools.registry import RegistryError, resolve, stand_in_digest

REPO = Path(__file__).resolve().parent.parent
__all__ = ["placeholder_secret", "stack_file_config", "synthesize"]
SECRET_MARKER = "[secret]"
# What a guest's readiness check reports in synth (a real guest prints its own host key).
SYNTH_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAISynthHostKeyPlaceholder00000000000000000"
# What the node's CA read reports in synth (a real node prints /etc/pve/pve-root-ca.pem).
SYNTH_NODE_CA = (
    "-----BEGIN CERTIFICATE-----\nU3ludGhQdmVSb290Q2VydGlmaWNhdGVQbGFjZWhvbGRlcg==\n"
    "-----END CERTIFICATE-----\n"
)
UNKNOWN_MARKER = "[unknown]"
# Commands whose output ends with a host key (guest readiness, the node's key on first use).
HOST_KEY_READERS = ("-ready", "-node-host-key")

# Pulumi's wire encoding, as the SDK itself names it (sdk/python/lib/pulumi/runtime/rpc.py).
_SIG = rpc._special_sig_key
_SECRET_SIG = rpc._special_secret_sig
_RESOURCE_SIG = rpc._special_resource_sig
_OUTPUT_SIG = rpc._special_output_value_sig
_UNKNOWN = rpc.UNKNOWN


def _mark(value: Any) -> Any:
    """Wire-encoded property values -> plain JSON, with secrets and unknowns as markers."""
    if isinstance(value, dict):
        sig = value.get(_SIG)
        if sig == _SECRET_SIG:
            return SECRET_MARKER
        if sig == _RESOURCE_SIG:
            return {"resource": value.get("urn")}
        if sig == _OUTPUT_SIG:
            if value.get("secret"):
                return SECRET_MARKER
            return _mark(value["value"]) if "value" in value else UNKNOWN_MARKER
        return {k: _mark(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mark(v) for v in value]
    if value == _UNKNOWN:
        return UNKNOWN_MARKER
    if isinstance(value, float) and value.is_integer():
        return int(value)  # protobuf Structs carry every number as a double
    return value


@dataclass
class Resource:
    urn: str
    type: str
    name: str
    parent: str | None
    custom: bool
    provider: str | None
    protect: bool
    ignore_changes: list[str]
    depends_on: list[str]
    inputs: dict[str, Any]
    delete_before_replace: bool = False
    deleted_with: str | None = None
    replace_with: list[str] = field(default_factory=list)
    aliases: list[dict[str, Any]] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    additional_secret_outputs: list[str] = field(default_factory=list)
    retain_on_delete: bool = False
    custom_timeouts: dict[str, str] = field(default_factory=dict)
    read_id: str | None = None  # a resource the program reads (e.g. a stack reference)
    # The inputs exactly as the engine receives them (protobuf Struct: numbers are doubles,
    # secrets and unknowns in Pulumi's wire encoding). In memory only, never written out.
    wire_inputs: dict[str, Any] = field(default_factory=dict, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "name": self.name,
            "urn": self.urn,
            "parent": self.parent,
            "provider": self.provider,
            "protect": self.protect,
            "ignoreChanges": self.ignore_changes,
            "dependsOn": self.depends_on,
            "deleteBeforeReplace": self.delete_before_replace,
            "deletedWith": self.deleted_with,
            "replaceWith": self.replace_with,
            "aliases": self.aliases,
            "additionalSecretOutputs": self.additional_secret_outputs,
            "retainOnDelete": self.retain_on_delete,
            "customTimeouts": self.custom_timeouts,
            "readId": self.read_id,
            "inputs": self.inputs,
        }


def host_stack_outputs() -> dict[str, Any]:
    """What the host stack exports, as its own synth would (dev and prod read it)."""
    from components.proxmox_host import SHARED_OUTPUT

    values, secret_keys = stack_file_config("host")
    host = parse_config(values, secret_keys, "host")
    assert isinstance(host, HostStackConfig)
    shared = host.host_shared
    return {
        SHARED_OUTPUT: {
            "lxcTemplateFileId": shared.lxc_template_file_id,
            "vendorDataFileId": shared.vendor_data_file_id,
            "vmTemplateId": shared.vm_template_id,
            "pool": shared.pool,
            "vmDatastore": shared.vm_datastore,
        }
    }


REGISTRY_LOOKUP = "docker:index/getRegistryImage:getRegistryImage"


class ReadsAndLookups(pulumi.runtime.Mocks):
    """What the engine answers a program besides its registrations: a stack reference reads
    `stack_outputs` (default: the host stack's, as its own synth exports them), a registry
    lookup answers with `digest_of` (default: the stand-in table). Other resources echo."""

    def __init__(
        self,
        stack_outputs: dict[str, Any] | None = None,
        digest_of: Callable[[str], str] = stand_in_digest,
    ) -> None:
        self.stack_outputs = stack_outputs
        self.digest_of = digest_of

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        if args.typ == "pulumi:pulumi:StackReference":
            outputs = host_stack_outputs() if self.stack_outputs is None else self.stack_outputs
            name = args.resource_id or args.name
            return name, {"name": name, "outputs": outputs, "secretOutputNames": []}
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        # (a bare dict: the SDK's mock monitor cannot take a tuple with no failures)
        if args.token == REGISTRY_LOOKUP:
            name = str(args.args["name"])
            return {"id": name, "name": name, "sha256Digest": self.digest_of(name)}
        return {}


class _Mocks(ReadsAndLookups):
    """Besides reads and lookups, the IDs real providers would return, and what the commands
    that read a host key or the node's CA print."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        inputs = args.inputs
        if args.typ == "pulumi:pulumi:StackReference":
            return super().new_resource(args)
        if args.typ.endswith("/fileLegacy:FileLegacy"):
            name = inputs.get("fileName") or inputs.get("sourceRaw", {}).get("fileName", args.name)
            return f"{inputs['datastoreId']}:{inputs['contentType']}/{name}", state
        if "vmId" in inputs:
            return str(int(inputs["vmId"])), state
        if args.typ == "command:remote:Command" and args.name.endswith(HOST_KEY_READERS):
            state["stdout"] = f"{SYNTH_HOST_KEY} root@{args.name}\n"
        if args.typ == "command:remote:Command" and args.name.endswith("-node-ca"):
            state["stdout"] = SYNTH_NODE_CA
        return f"{args.name}-id", state


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, plus a record of every registration as the engine would see it."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.recorded: list[Resource] = []
        self.invokes: list[Invoke] = []

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.recorded.append(
                Resource(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent or None,
                    custom=bool(request.custom),
                    provider=request.provider or None,
                    protect=bool(request.protect),
                    ignore_changes=list(request.ignoreChanges),
                    depends_on=sorted(request.dependencies),
                    inputs=_mark(json_format.MessageToDict(request.object)),
                    delete_before_replace=bool(request.deleteBeforeReplace),
                    deleted_with=request.deletedWith or None,
                    replace_with=sorted(request.replace_with),
                    aliases=[json_format.MessageToDict(a) for a in request.aliases],
                    property_dependencies={
                        key: sorted(deps.urns) for key, deps in request.propertyDependencies.items()
                    },
                    additional_secret_outputs=sorted(request.additionalSecretOutputs),
                    retain_on_delete=bool(request.retainOnDelete),
                    custom_timeouts=json_format.MessageToDict(request.customTimeouts),
                    wire_inputs=json_format.MessageToDict(request.object),
                )
            )
        return response

    def Invoke(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        response = super().Invoke(request)
        args = json_format.MessageToDict(request.args)
        self.invokes.append(Invoke(request.tok, args, request.provider or None))
        return response

    def ReadResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        response = super().ReadResource(request)
        self.recorded.append(
            Resource(
                urn=response.urn,
                type=request.type,
                name=request.name,
                parent=request.parent or None,
                custom=True,
                provider=request.provider or None,
                protect=False,
                ignore_changes=[],
                depends_on=sorted(request.dependencies),
                inputs=_mark(json_format.MessageToDict(request.properties)),
                read_id=request.id,
                wire_inputs=json_format.MessageToDict(request.properties),
            )
        )
        return response


@dataclass(frozen=True)
class Invoke:
    """A provider function the program called (e.g. a registry lookup), as the engine gets it."""

    token: str
    args: dict[str, Any]
    provider: str | None


@dataclass
class Synthesis:
    stack: str
    config: CommonConfig
    resources: list[Resource]
    outputs: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    invokes: list[Invoke] = field(default_factory=list)

    def by_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str) -> Resource:
        matches = [r for r in self.resources if r.type == type_ and r.name == name]
        assert len(matches) == 1, f"expected one {type_} named {name}, found {len(matches)}"
        return matches[0]


def synthesize(
    stack: str,
    values: dict[str, str] | None = None,
    secret_keys: set[str] | None = None,
    stack_outputs: dict[str, Any] | None = None,
    digest_of: Callable[[str], str] = stand_in_digest,
) -> Synthesis:
    """Evaluate the program for `stack` under mocks (a fresh Pulumi runtime every call); a stack
    reference reads `stack_outputs` (default: what the host stack's synth exports), a registry
    lookup `digest_of` (default: the stand-in table, tools/synth_registry.json)."""
    from rendering.files import host_files
    from stacks.platform import build, load_stack_config

    if values is None or secret_keys is None:
        values, secret_keys = stack_file_config(stack)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pulumi_settings.ROOT.set(None)
        mocks = _Mocks(stack_outputs, digest_of)
        monitor = _RecordingMonitor(mocks)
        pulumi.runtime.set_mocks(
            mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor
        )
        set_all_config(values, sorted(secret_keys))
        config = load_stack_config()  # the same path as __main__.py
        build(config)
        loop.run_until_complete(wait_for_rpcs())
        outputs = loop.run_until_complete(_resolve_outputs())
    finally:
        # a failed program leaves its pending outputs and RPCs on this loop: drop them, as the
        # SDK's own `pulumi.runtime.test` does before each test
        pulumi_settings.SETTINGS.rpc_manager.clear()
        pulumi_settings.SETTINGS.outputs.clear()
        pulumi_settings.ROOT.set(None)
        asyncio.set_event_loop(None)
        loop.close()
    resources = sorted(monitor.recorded, key=lambda r: r.urn)
    return Synthesis(stack, config, resources, outputs, host_files(config), monitor.invokes)


def record(stack: str, build: Callable[[], None]) -> list[Resource]:
    """The registrations `build` makes under mocks (a fresh Pulumi runtime), as the engine
    would see them: for a resource the stacks do not build yet, or alone."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pulumi_settings.ROOT.set(None)
        mocks = ReadsAndLookups()
        monitor = _RecordingMonitor(mocks)
        pulumi.runtime.set_mocks(
            mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor
        )
        build()
        loop.run_until_complete(wait_for_rpcs())
    finally:
        pulumi_settings.SETTINGS.rpc_manager.clear()
        pulumi_settings.SETTINGS.outputs.clear()
        pulumi_settings.ROOT.set(None)
        asyncio.set_event_loop(None)
        loop.close()
    return sorted(monitor.recorded, key=lambda r: r.urn)


async def _resolve_outputs() -> dict[str, Any]:
    root = pulumi.runtime.get_root_resource()
    resolved: dict[str, Any] = {}
    for name, value in getattr(root, "outputs", {}).items():
        output = pulumi.Output.from_input(value)
        secret = await output.is_secret()
        resolved[name] = SECRET_MARKER if secret else await output.future()
    return resolved


def write(synthesis: Synthesis, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "stack": synthesis.stack,
        "outputs": synthesis.outputs,
        "resources": [r.as_json() for r in synthesis.resources],
    }
    (out_dir / "resources.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for rel_path, text in synthesis.files.items():
        path = out_dir / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def tree(synthesis: Synthesis) -> str:
    """The resources as an indented tree by parent, one line each."""
    children: dict[str | None, list[Resource]] = {}
    urns = {r.urn for r in synthesis.resources}
    for r in synthesis.resources:
        parent = r.parent if r.parent in urns else None
        children.setdefault(parent, []).append(r)
    lines = [f"stack {PROJECT}/{synthesis.stack}"]

    def walk(parent: str | None, depth: int) -> None:
        for r in children.get(parent, []):
            flags = " [protected]" if r.protect else ""
            lines.append(f"{'  ' * depth}├─ {r.type}  {r.name}{flags}")
            walk(r.urn, depth + 1)

    walk(None, 1)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--resolve"]
    if len(args) != 1:
        print("usage: python -m tools.synth STACK [--resolve]", file=sys.stderr)
        print(
            "  --resolve: ask the registries for the digests (default: stand-ins)", file=sys.stderr
        )
        return 2
    stack = args[0]
    try:
        synthesis = synthesize(stack, digest_of=resolve if "--resolve" in argv else stand_in_digest)
    except RegistryError as err:
        print(f"synth: {err}", file=sys.stderr)
        return 1
    out_dir = REPO / "build" / stack
    write(synthesis, out_dir)
    print(tree(synthesis))
    print(f"\n{len(synthesis.resources)} resources, {len(synthesis.files)} host files -> {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
