"""A test client that drives the dynamic providers exactly as the Pulumi engine does.

It starts the SDK's own provider host, `python -m pulumi.dynamic` (what the engine's
`pulumi-resource-pulumi-python` plugin runs), from the project directory with the venv's
python, reads the port the host prints, and speaks the ResourceProvider gRPC protocol to it:
Handshake (the host does not implement it, so the engine falls back to Configure), Configure,
then Check, Diff, Create, Update, Read and Delete.

Inputs are converted as the engine converts them (pulumi/pulumi pkg/resource/plugin/
provider_plugin.go and sdk/go/common/resource/plugin/rpc.go): the host answers Configure with
acceptSecrets=false, acceptResources=false and supportsPreview=false, so secrets are sent as their
plain values, resource references as their ID (or URN), output values as their value, and
unknowns are kept only in preview calls (dropped otherwise). Without supportsPreview the engine
never calls Create or Update during a preview: it takes the inputs as the planned state, and so
does this client.

A provider exception reaches the caller as `ProviderError` (a `grpc.RpcError` carrying the
host's message: the provider's traceback), the way the engine sees a failed step and keeps the
previous state.
"""

from __future__ import annotations

import atexit
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import grpc
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from tests.sdk.wire import OUTPUT_SIG, RESOURCE_SIG, SECRET_SIG, SIG, UNKNOWN

REPO = Path(__file__).resolve().parents[2]
DYNAMIC_TYPE_PREFIX = "pulumi-python:dynamic"
PROVIDER_KEY = "__provider"
# The engine's typed unknown sentinels (rpc.go): every one is an unknown on the wire.
UNKNOWNS = frozenset(
    {
        UNKNOWN,
        "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7",  # bool
        "3eeb2bf0-c639-47a8-9e75-3b44932eb421",  # number
        "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2",  # array
        "030794c1-ac77-496b-92df-f27374a8bd58",  # asset
        "e48ece36-62e2-4504-bad9-02848725956a",  # archive
        "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",  # object
    }
)
START_TIMEOUT = 60.0
CALL_TIMEOUT = 900.0  # a deploy verifies with its own deadlines; this only stops a hung test
_DROP = object()


class ProviderError(grpc.RpcError):
    """A provider call failed: the host's status code and message (the provider's traceback)."""

    def __init__(self, method: str, error: grpc.RpcError) -> None:
        self.method = method
        self._code: grpc.StatusCode = error.code()
        self._details: str = error.details() or ""
        super().__init__(f"{method} failed ({self._code.name}): {self._details}")

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    @property
    def message(self) -> str:
        """The provider's own message: the last line of the traceback the host sends back."""
        lines = [line for line in self._details.strip().splitlines() if line.strip()]
        return lines[-1] if lines else ""


@dataclass(frozen=True)
class DiffOutcome:
    changes: bool
    replaces: list[str] = field(default_factory=list)
    delete_before_replace: bool = False
    diffs: list[str] = field(default_factory=list)


def is_dynamic(type_: str) -> bool:
    return type_.startswith(DYNAMIC_TYPE_PREFIX)


def _convert(value: Any, preview: bool) -> Any:
    if isinstance(value, dict):
        sig = value.get(SIG)
        if sig == SECRET_SIG:  # acceptSecrets=false: the plain value
            return _convert(value.get("value"), preview)
        if sig == RESOURCE_SIG:  # acceptResources=false: the ID if there is one, else the URN
            return _convert(value["id"], preview) if value.get("id") else value.get("urn")
        if sig == OUTPUT_SIG:  # no acceptOutputs: a known output is its value, else unknown
            return _convert(value["value"], preview) if "value" in value else _unknown(preview)
        converted = {key: _convert(item, preview) for key, item in value.items()}
        return {key: item for key, item in converted.items() if item is not _DROP}
    if isinstance(value, list):
        items = [_convert(item, preview) for item in value]
        return [item for item in items if item is not _DROP]
    if isinstance(value, str) and value in UNKNOWNS:
        return _unknown(preview, value)
    return value


def _unknown(preview: bool, sentinel: str = UNKNOWN) -> Any:
    return sentinel if preview else _DROP


def engine_inputs(wire_inputs: dict[str, Any], preview: bool) -> dict[str, Any]:
    """The program's registered inputs (wire form) -> what the engine sends the dynamic host.

    Secrets are unwrapped, resource references become their ID or URN, output values their value;
    unknowns are kept (as the sentinel) only when `preview`, else dropped, as the engine marshals
    with KeepUnknowns = preview (Check/Diff: AllowUnknowns = DryRun; Create/Update: Preview).
    """
    converted = _convert(wire_inputs, preview)
    assert isinstance(converted, dict)
    return converted


def _struct(props: dict[str, Any]) -> struct_pb2.Struct:
    return json_format.ParseDict(props, struct_pb2.Struct())


def _dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(struct)


def urn_parts(urn: str) -> tuple[str, str]:
    """(type, name) of a URN `urn:pulumi:stack::project::[parent$]type::name`."""
    _, _, qualified, name = urn.split("::", 3)
    return qualified.rsplit("$", 1)[-1], name


def venv_python(cwd: Path) -> str:
    python = cwd / "venv" / "bin" / "python"
    return str(python) if python.exists() else sys.executable


class ProviderHost:
    """`python -m pulumi.dynamic` in `cwd`, configured as the engine configures it.

    Use as a context manager: the host starts on enter and is stopped by its PID on exit.
    """

    def __init__(self, cwd: Path = REPO) -> None:
        self.cwd = Path(cwd)
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.configure_response: provider_pb2.ConfigureResponse | None = None
        self.timeout = CALL_TIMEOUT
        self._stderr = ""
        self._channel: grpc.Channel | None = None
        self._stub: provider_pb2_grpc.ResourceProviderStub | None = None
        self._log: IO[bytes] | None = None

    # lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> ProviderHost:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        # What the engine gives a provider plugin: the project directory as cwd, the project
        # name and the runtime options as environment (provider_plugin.go).
        env = {
            **os.environ,
            "PULUMI_PROJECT": "smoker-infra",
            "PULUMI_RUNTIME_TOOLCHAIN": "pip",
            "PULUMI_RUNTIME_VIRTUALENV": "venv",
        }
        atexit.register(self.stop)  # a safety net if the test run dies before `stop`
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (the host's stderr until stop)
        self.process = subprocess.Popen(
            [venv_python(self.cwd), "-u", "-m", "pulumi.dynamic"],
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        try:
            self.port = self._read_port()
            self._channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
            grpc.channel_ready_future(self._channel).result(timeout=START_TIMEOUT)
            self._stub = provider_pb2_grpc.ResourceProviderStub(self._channel)
            self._configure()
        except BaseException:
            self.stop()
            raise

    def _read_port(self) -> int:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.process.stdout], [], [], max(left, 0))
            if not ready:
                raise RuntimeError(f"the provider host printed no port in {START_TIMEOUT:.0f} s")
            chunk = os.read(self.process.stdout.fileno(), 64)
            if not chunk:
                raise RuntimeError(f"the provider host exited early:\n{self.log()}")
            line += chunk
        return int(line.decode().strip())

    def _configure(self) -> None:
        stub = self.stub
        try:  # the engine tries the handshake first; the Python host does not implement it
            stub.Handshake(provider_pb2.ProviderHandshakeRequest(), timeout=10)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
        stub.GetPluginInfo(empty_pb2.Empty(), timeout=10)
        self.configure_response = stub.Configure(
            provider_pb2.ConfigureRequest(
                variables={},
                args=_struct({}),  # no `pulumi-python:*` config in this project
                acceptSecrets=True,
                acceptResources=True,
                sends_old_inputs=True,
                sends_old_inputs_to_delete=True,
                type="pulumi:providers:pulumi-python",
                name="default",
            ),
            timeout=10,
        )

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()  # by PID
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process is not None and process.stdout is not None:
            process.stdout.close()
        self._stderr = self.log()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        """What the host wrote to stderr (so far, or until it was stopped)."""
        if self._log is None:
            return self._stderr
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    @property
    def stub(self) -> provider_pb2_grpc.ResourceProviderStub:
        if self._stub is None:
            raise RuntimeError("the provider host is not running (use it as a context manager)")
        return self._stub

    @property
    def accepts_secrets(self) -> bool:
        return bool(self.configure_response and self.configure_response.acceptSecrets)

    @property
    def supports_preview(self) -> bool:
        return bool(self.configure_response and self.configure_response.supportsPreview)

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise ProviderError(method, exc) from None

    # ResourceProvider ------------------------------------------------------------------------

    def check(
        self, urn: str, olds: dict[str, Any], news: dict[str, Any]
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """Check(old inputs, new inputs) -> (checked inputs, [(property, reason)])."""
        type_, name = urn_parts(urn)
        response = self._call(
            "Check",
            provider_pb2.CheckRequest(
                urn=urn, name=name, type=type_, olds=_struct(olds), news=_struct(news)
            ),
        )
        failures = [(f.property, f.reason) for f in response.failures]
        return _dict(response.inputs), failures

    def diff(
        self,
        urn: str,
        id_: str,
        olds: dict[str, Any],
        news: dict[str, Any],
        old_inputs: dict[str, Any] | None = None,
    ) -> DiffOutcome:
        """Diff(old state, new inputs); the engine also sends the old inputs (the host ignores
        them). An unknown diff counts as changes when the inputs differ, as in the engine."""
        type_, name = urn_parts(urn)
        old_inputs = olds if old_inputs is None else old_inputs
        response = self._call(
            "Diff",
            provider_pb2.DiffRequest(
                id=id_,
                urn=urn,
                name=name,
                type=type_,
                olds=_struct(olds),
                news=_struct(news),
                old_inputs=_struct(old_inputs),
            ),
        )
        kinds = provider_pb2.DiffResponse
        if response.changes == kinds.DIFF_UNKNOWN:
            changes = old_inputs != news
        else:
            changes = response.changes == kinds.DIFF_SOME
        return DiffOutcome(
            changes=changes,
            replaces=list(response.replaces),
            delete_before_replace=bool(response.deleteBeforeReplace),
            diffs=list(response.diffs),
        )

    def create(
        self, urn: str, props: dict[str, Any], preview: bool = False
    ) -> tuple[str, dict[str, Any]]:
        """Create(checked inputs) -> (id, outputs). In a preview, a host without supportsPreview
        is not called: the engine plans the inputs as the state (and no ID)."""
        if preview and not self.supports_preview:
            return "", dict(props)
        type_, name = urn_parts(urn)
        response = self._call(
            "Create",
            provider_pb2.CreateRequest(
                urn=urn, name=name, type=type_, properties=_struct(props), preview=preview
            ),
        )
        return response.id, _dict(response.properties)

    def update(
        self,
        urn: str,
        id_: str,
        olds: dict[str, Any],
        news: dict[str, Any],
        preview: bool = False,
        old_inputs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Update(old state, new inputs) -> new outputs (see `create` for previews)."""
        if preview and not self.supports_preview:
            return dict(news)
        type_, name = urn_parts(urn)
        response = self._call(
            "Update",
            provider_pb2.UpdateRequest(
                id=id_,
                urn=urn,
                name=name,
                type=type_,
                olds=_struct(olds),
                news=_struct(news),
                old_inputs=_struct(olds if old_inputs is None else old_inputs),
                preview=preview,
            ),
        )
        return _dict(response.properties)

    def read(
        self, urn: str, id_: str, props: dict[str, Any], inputs: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Read (refresh) with the recorded state -> (id, state read back)."""
        type_, name = urn_parts(urn)
        response = self._call(
            "Read",
            provider_pb2.ReadRequest(
                id=id_,
                urn=urn,
                name=name,
                type=type_,
                properties=_struct(props),
                inputs=_struct(props if inputs is None else inputs),
            ),
        )
        return response.id, _dict(response.properties)

    def delete(
        self,
        urn: str,
        id_: str,
        props: dict[str, Any],
        old_inputs: dict[str, Any] | None = None,
    ) -> None:
        """Delete with the recorded state."""
        type_, name = urn_parts(urn)
        self._call(
            "Delete",
            provider_pb2.DeleteRequest(
                id=id_,
                urn=urn,
                name=name,
                type=type_,
                properties=_struct(props),
                old_inputs=_struct(props if old_inputs is None else old_inputs),
            ),
        )


# the program's wire inputs ---------------------------------------------------------------------


def dynamic_resource(resources: list[Any], name: str) -> Any:
    """The one dynamic resource called `name` (by type prefix, not by token) of a synthesis."""
    found = [r for r in resources if is_dynamic(r.type) and r.name == name]
    assert len(found) == 1, f"expected one dynamic resource named {name}, found {len(found)}"
    return found[0]


def _normalized(value: Any) -> Any:
    """A value as it comes out of a protobuf Struct (every number a double)."""
    return _dict(_struct({"v": value}))["v"]


def substitute(wire_inputs: dict[str, Any], **values: Any) -> dict[str, Any]:
    """The wire inputs with the values of some keys replaced, keeping the wire shape: a secret
    stays secret, numbers become doubles, and only keys the program registers can be replaced."""
    unknown = sorted(set(values) - set(wire_inputs))
    assert not unknown, f"the program registers no {unknown}: the input shape would differ"
    result = dict(wire_inputs)
    for key, value in values.items():
        old = wire_inputs[key]
        plain = _normalized(value)
        if isinstance(old, dict) and old.get(SIG) == SECRET_SIG and value != UNKNOWN:
            result[key] = {SIG: SECRET_SIG, "value": plain}
        else:
            result[key] = plain
    return result


def plain(wire_value: Any) -> Any:
    """A wire value with its secret wrapping removed (for reading a registered input)."""
    return _convert(wire_value, preview=True)
