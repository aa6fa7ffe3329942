"""Rehearsal: apply a whole stack the way `pulumi up` applies it, with no Pulumi CLI.

The program itself runs (`stacks.platform.build`, the same path as `__main__.py`, under
`pulumi.runtime.set_mocks`), but its resource monitor is an engine model, `EngineMonitor`, instead
of an echo: every custom resource registration is turned into a step (same, create, update or
replace) by the engine's rules, the step is executed by the resource's provider (a real SSH command,
the SDK's dynamic provider host, or a mapping to a test guest), and only then does the registration
answer, with the real ID and outputs. That is how the real engine answers `RegisterResource`
(pulumi/pulumi pkg/resource/deploy/source_eval.go: the response waits for the step), so:

* Order. The SDK sends a registration only when everything it waits for is resolved: every input
  `Output` (the propertyDependencies), every `depends_on` URN (a custom resource's URN resolves
  with the registration answer, i.e. when its step is done) and the parent's URN. Nothing else
  orders steps in `pulumi up` (the step generator issues a step per registration event as it
  arrives). The monitor still checks the invariant on every step: all of the registration's
  dependencies (dependencies + propertyDependencies) are done in this run.
* Parallelism. `pulumi up` defaults to `--parallel` = 4 x GOMAXPROCS (pulumi/pulumi
  pkg/cmd/pulumi/operations/up.go `defaultParallel`): at most that many steps run at once in the
  step executor's workers. The Python language host runs the program's RPCs on a
  `ThreadPoolExecutor(max_workers=4 x parallel)` (sdk/python/cmd/pulumi-language-python-exec
  `_set_default_executor`). Both are modelled: `PARALLEL` workers, `4 x PARALLEL` SDK threads.
* Values. Dependents register with the real outputs of their dependencies (a guest's real host
  key, a command's random ID), so triggers and pinned host keys behave exactly as in Pulumi.
* Preview. `preview=True` runs the same program and rules without executing anything: a created
  or replaced resource's outputs are unknown, an updated command keeps its old outputs (its
  `Update` returns `BaseOutputs: olds.BaseOutputs` in a preview), and dependents diff against
  those. That is the expected plan of the next `up`.

Engine rules modelled (pulumi/pulumi pkg/resource/deploy/step_generator.go, `diff`):
  1. a targeted replace (`pulumi up --replace URN`) replaces (`isTargetedReplace`);
  2. a resource is replaced when a resource in its `replaceWith` is being replaced;
  3. a resource is replaced when its `deletedWith` resource is being replaced ("marked for
     replacement because ... (its DeletedWith resource) is being replaced"); `sg.replaces` is
     filled when the step is generated, which is before any dependent registers;
  4. otherwise the provider's Diff decides, then `replaceOnChanges` is applied
     (`applyReplaceOnChanges`: a changed path under a replace-on-changes path becomes a replace).
  Replacements are create-before-delete unless `deleteBeforeReplace`: with it the old resource is
  deleted first (`NewDeleteReplacementStep`, which also marks it in `sg.deletes`); without it the
  old copy is deleted after every registration is done ("delete-replaced", dependents first). For
  a guest mapped to a test guest that is the difference between rebuilding at the same address
  and colliding with itself.
  A delete step does not call the provider's Delete when the resource's deletedWith resource is
  deleted in the same run (pulumi/pulumi pkg/resource/deploy/step.go `DeleteStep.Apply`,
  `isDeletedWith(s.old.DeletedWith, s.otherDeletions)`): what lived on a rebuilt guest went with it.

pulumi-command `remote.Command` (pulumi/pulumi-command provider/pkg/provider/remote/):
  * Diff is pulumi-go-provider's default (pulumi/pulumi-go-provider infer/resource.go `diff`):
    old inputs vs new inputs, every changed input is an update because Command implements
    `CustomUpdate`, except fields tagged `replaceOnChanges` (common/inputs.go: only `triggers`);
    the generated SDK also registers `replace_on_changes=["triggers[*]"]`
    (pulumi_command/remote/command.py). So a changed trigger element replaces; a changed `create`,
    `stdin`, `connection` or `logging` updates.
  * Create (commandController.go `Create`): ID = `resource.NewUniqueHex(name, 8, 0)` (the name plus
    8 random hex digits: a new ID on every create, so a dependent whose triggers hold it is
    replaced too); runs `create` in one SSH session with `stdin` on the session's stdin when
    non-empty; outputs are the inputs plus stdout and stderr, each with one trailing newline
    trimmed (commandOutputs.go `run`).
  * Update (`Update`): runs `update` if set, else `create`, keeps the ID.
  * Delete (`Delete`): runs `delete` if set, else nothing.
  * Connection (connection.go): `hostKey` pins the server key, none accepts any key; dials are
    retried `dialErrorLimit` times (default 10), each `perDialTimeout` seconds (default 15).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import wait_for_rpcs

from config import PROJECT

SIG = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
OUTPUT_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

# `pulumi up --parallel` default (pkg/cmd/pulumi/operations/up.go defaultParallel: GOMAXPROCS * 4)
PARALLEL = 4 * (os.cpu_count() or 1)
COMMAND_TYPE = "command:remote:Command"
DYNAMIC_PREFIX = "pulumi-python:dynamic"
# The generated pulumi_command SDK registers this (pulumi_command/remote/command.py).
COMMAND_REPLACE_ON_CHANGES = ("triggers",)

SAME, CREATE, UPDATE, REPLACE, SKIP = "same", "create", "update", "replace", "skip"


# -- values ---------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """Wire value -> plain value: secrets unwrapped, resource references as their URN, output
    values as their value (unknown if they have none), unknowns kept as the UNKNOWN sentinel."""
    if isinstance(value, dict):
        sig = value.get(SIG)
        if sig == SECRET_SIG:
            return plain(value.get("value"))
        if sig == RESOURCE_SIG:
            return value.get("id") or value.get("urn")
        if sig == OUTPUT_SIG:
            return plain(value["value"]) if "value" in value else UNKNOWN
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def has_unknown(value: Any) -> bool:
    if isinstance(value, dict):
        return any(has_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(has_unknown(v) for v in value)
    return value == UNKNOWN


def _norm(value: Any) -> Any:
    """Numbers as the engine compares them (a protobuf Struct holds doubles)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def changed_paths(olds: Mapping[str, Any], news: Mapping[str, Any]) -> list[str]:
    """The changed property paths, as `ObjectDiff` + `NewDetailedDiffFromObjectDiff` name them
    (`a.b`, `list[2]`); internal `__` keys are ignored (infer/resource.go `diff`)."""
    out: list[str] = []

    def walk(path: str, old: Any, new: Any) -> None:
        old, new = _norm(old), _norm(new)
        if old == new and not has_unknown(new):
            return
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                walk(f"{path}.{key}" if path else key, old.get(key), new.get(key))
        elif isinstance(old, list) and isinstance(new, list):
            for i in range(max(len(old), len(new))):
                walk(
                    f"{path}[{i}]",
                    old[i] if i < len(old) else None,
                    new[i] if i < len(new) else None,
                )
        else:
            out.append(path)

    keys = {k for k in set(olds) | set(news) if not k.startswith("__")}
    for key in sorted(keys):
        walk(key, olds.get(key), news.get(key))
    return out


def command_diff(
    olds: Mapping[str, Any],
    news: Mapping[str, Any],
    replace_on_changes: tuple[str, ...] = COMMAND_REPLACE_ON_CHANGES,
) -> str:
    """SAME, UPDATE or REPLACE for a remote Command (see the module docstring for the sources).

    A replace-on-changes path `triggers[*]` contains `triggers[0]` but not `triggers` itself
    (PropertyPath.Contains): adding or removing the whole list is an update."""
    paths = changed_paths(olds, news)
    if not paths:
        return SAME
    for path in paths:
        for key in replace_on_changes:
            if path.startswith(f"{key}["):
                return REPLACE
    return UPDATE


# -- state ----------------------------------------------------------------------------------------


@dataclass
class ResourceState:
    urn: str
    type: str
    id: str
    inputs: dict[str, Any]  # plain (secrets unwrapped)
    outputs: dict[str, Any]
    delete: str | None = None  # a Command's delete command, run when it is deleted/replaced
    deleted_with: str | None = None


@dataclass
class State:
    """Pulumi's checkpoint, reduced to what the steps need: inputs and outputs per URN."""

    resources: dict[str, ResourceState] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({u: vars(r) for u, r in self.resources.items()}, indent=1))
        path.chmod(0o600)  # test-only secrets, but secrets

    @classmethod
    def load(cls, path: Path) -> State:
        data = json.loads(path.read_text())
        return cls({u: ResourceState(**r) for u, r in data.items()})


# -- steps ----------------------------------------------------------------------------------------


@dataclass
class Registration:
    urn: str
    type: str
    name: str
    parent: str | None
    custom: bool
    provider: str | None
    wire: dict[str, Any]
    inputs: dict[str, Any]
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    delete_before_replace: bool
    deleted_with: str | None
    replace_with: list[str]
    replace_on_changes: list[str]
    additional_secret_outputs: list[str]

    @property
    def all_dependencies(self) -> set[str]:
        deps = set(self.dependencies)
        for urns in self.property_dependencies.values():
            deps |= set(urns)
        return deps


@dataclass
class StepRecord:
    urn: str
    name: str
    type: str
    op: str  # SAME/CREATE/UPDATE/REPLACE/SKIP
    reason: str = ""
    start: float = 0.0
    end: float = 0.0
    commands: int = 0  # SSH sessions / provider create-update-delete calls made
    deps: frozenset[str] = frozenset()  # dependencies + propertyDependencies (URNs)


class Provider(Protocol):
    """How one kind of resource is diffed and applied (a resource provider)."""

    def diff(self, reg: Registration, old: ResourceState) -> tuple[str, str]:
        """(SAME/UPDATE/REPLACE, reason)."""

    def create(
        self, reg: Registration, preview: bool, record: StepRecord
    ) -> tuple[str, dict[str, Any]]:
        """-> (id, outputs); in a preview, nothing runs and unknown values may be returned."""

    def update(
        self, reg: Registration, old: ResourceState, preview: bool, record: StepRecord
    ) -> dict[str, Any]: ...

    def delete(self, old: ResourceState, record: StepRecord) -> None: ...


class NotApplied:
    """A resource this rehearsal cannot apply (e.g. needs Proxmox): planned like any other (its
    inputs are diffed) but never executed; its state is its inputs."""

    def __init__(self, reason: str, outputs: Mapping[str, Any] | None = None) -> None:
        self.reason = reason
        self.outputs = dict(outputs or {})  # stand-ins for outputs dependents read

    def diff(self, reg: Registration, old: ResourceState) -> tuple[str, str]:
        paths = changed_paths(old.inputs, reg.inputs)
        return (UPDATE, ", ".join(paths)) if paths else (SAME, "")

    def create(
        self, reg: Registration, preview: bool, record: StepRecord
    ) -> tuple[str, dict[str, Any]]:
        record.reason = f"skipped: {self.reason}"
        return f"{reg.name}-not-applied", {**reg.inputs, **self.outputs}

    def update(
        self, reg: Registration, old: ResourceState, preview: bool, record: StepRecord
    ) -> dict[str, Any]:
        record.reason = f"skipped: {self.reason}"
        return {**reg.inputs, **self.outputs}

    def delete(self, old: ResourceState, record: StepRecord) -> None:
        return None


Runner = Callable[[dict[str, Any], str, str | None], tuple[int, str, str]]


def _unique_hex(name: str) -> str:
    """resource.NewUniqueHex(name, 8, 0): the prefix plus 8 random hex digits."""
    return name + secrets.token_hex(4)


class RemoteCommand:
    """pulumi-command's remote Command (see the module docstring)."""

    def __init__(self, run: Runner) -> None:
        self.run = run  # (connection, command, stdin) -> (exit status, stdout, stderr)

    def diff(self, reg: Registration, old: ResourceState) -> tuple[str, str]:
        roc = tuple(
            p.removesuffix("[*]") for p in (reg.replace_on_changes or COMMAND_REPLACE_ON_CHANGES)
        )
        op = command_diff(old.inputs, reg.inputs, roc)
        return op, ", ".join(changed_paths(old.inputs, reg.inputs))

    def _exec(self, reg: Registration, command: str, record: StepRecord) -> dict[str, Any]:
        inputs = reg.inputs
        record.commands += 1
        stdin = inputs.get("stdin") or None
        status, out, err = self.run(inputs["connection"], command, stdin)
        if status != 0:
            raise StepFailedError(reg.name, f"exit status {status}:\n{err.strip()[-3000:]}")
        return {**inputs, "stdout": out.removesuffix("\n"), "stderr": err.removesuffix("\n")}

    def create(
        self, reg: Registration, preview: bool, record: StepRecord
    ) -> tuple[str, dict[str, Any]]:
        if preview:  # a preview's create outputs are not known until it runs
            return UNKNOWN, {**reg.inputs, "stdout": UNKNOWN, "stderr": UNKNOWN}
        id_ = _unique_hex(reg.name)
        if reg.inputs.get("create") is None:
            return id_, dict(reg.inputs)
        return id_, self._exec(reg, reg.inputs["create"], record)

    def update(
        self, reg: Registration, old: ResourceState, preview: bool, record: StepRecord
    ) -> dict[str, Any]:
        base: dict[str, Any] = {k: old.outputs[k] for k in ("stdout", "stderr") if k in old.outputs}
        if preview:  # Update in a preview: the new inputs, the old BaseOutputs
            return {**reg.inputs, **base}
        command = reg.inputs.get("update") or reg.inputs.get("create")
        if command is None:
            return {**reg.inputs, **base}
        return self._exec(reg, command, record)

    def delete(self, old: ResourceState, record: StepRecord) -> None:
        if old.delete:
            record.commands += 1
            status, _, err = self.run(old.inputs["connection"], old.delete, None)
            if status != 0:
                raise StepFailedError(old.urn, f"delete failed ({status}): {err.strip()[-2000:]}")


class StepFailedError(RuntimeError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


def ssh_runner(connection: dict[str, Any], command: str, stdin: str | None) -> tuple[int, str, str]:
    """Run `command` in one SSH session as pulumi-command does: the connection's user, host, port
    and private key; the host key pinned when given; dials retried dialErrorLimit times."""
    with tempfile.TemporaryDirectory(prefix="rehearsal-ssh-") as tmp:
        key = Path(tmp) / "key"
        key.write_text(connection["privateKey"])
        key.chmod(0o600)
        host, port = connection["host"], int(connection.get("port") or 22)
        opts = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        if connection.get("hostKey"):
            known = Path(tmp) / "known_hosts"
            name = host if port == 22 else f"[{host}]:{port}"
            known.write_text(f"{name} {connection['hostKey']}\n")
            opts = ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}"]
        per_dial = int(connection.get("perDialTimeout") or 15)
        argv = [
            "ssh", "-F", "/dev/null", "-i", str(key), "-p", str(port),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"ConnectTimeout={per_dial}", "-o", "LogLevel=ERROR", *opts,
            f"{connection.get('user') or 'root'}@{host}", command,
        ]  # fmt: skip
        limit = int(connection.get("dialErrorLimit") or 10)
        for attempt in range(max(limit, 1)):
            result = subprocess.run(
                argv, input=(stdin or "").encode(), capture_output=True, timeout=1800
            )
            err = result.stderr.decode(errors="replace")
            dial_failed = result.returncode == 255 and (
                "Connection refused" in err
                or "timed out" in err
                or "Connection reset" in err
                or "No route to host" in err
                or "closed by remote host" in err
            )
            if not dial_failed or attempt == limit - 1:
                return result.returncode, result.stdout.decode(errors="replace"), err
            time.sleep(1)
    raise AssertionError("unreachable")


# -- the engine -----------------------------------------------------------------------------------


@dataclass
class Run:
    steps: dict[str, StepRecord] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0
    max_concurrent: int = 0

    def ops(self, *ops: str) -> dict[str, str]:
        """{name: op} of the steps with one of `ops` (all steps that are not SAME by default)."""
        wanted = set(ops) or {CREATE, UPDATE, REPLACE}
        return {s.name: s.op for s in self.steps.values() if s.op in wanted}

    @property
    def commands(self) -> int:
        return sum(s.commands for s in self.steps.values())

    def depends(self, later: str, earlier: str) -> bool:
        """Whether step `later` (a name) transitively depends on step `earlier` in this run."""
        by_urn = self.steps
        target = self.by_name(earlier).urn
        seen: set[str] = set()
        todo = list(self.by_name(later).deps)
        while todo:
            urn = todo.pop()
            if urn == target:
                return True
            if urn not in seen and urn in by_urn:
                seen.add(urn)
                todo.extend(by_urn[urn].deps)
        return False

    def by_name(self, name: str) -> StepRecord:
        (step,) = [s for s in self.steps.values() if s.name == name]
        return step


class Engine:
    """The engine model: one `up` (or preview) of the program against `state`."""

    def __init__(
        self,
        providers: Callable[[Registration], Provider],
        state: State,
        parallel: int = PARALLEL,
    ) -> None:
        self.providers = providers
        self.state = state
        self.parallel = parallel

    def up(
        self,
        build: Callable[[], object],
        config: tuple[dict[str, str], set[str]],
        stack: str = "dev",
        preview: bool = False,
        replace: tuple[str, ...] = (),
    ) -> Run:
        run = Run()
        monitor = EngineMonitor(self, run, preview, set(replace))
        loop = asyncio.new_event_loop()
        # pulumi-language-python-exec _set_default_executor: 4 x parallel SDK threads
        executor = ThreadPoolExecutor(max_workers=4 * self.parallel)
        loop.set_default_executor(executor)
        asyncio.set_event_loop(loop)
        t0 = time.perf_counter()
        try:
            pulumi_settings.ROOT.set(None)
            pulumi.runtime.set_mocks(
                _NoMocks(), project=PROJECT, stack=stack, preview=preview, monitor=monitor
            )
            values, secret_keys = config
            set_all_config(values, sorted(secret_keys))
            build()
            loop.run_until_complete(wait_for_rpcs())
        except BaseException:
            if monitor.failure is None:
                raise
        finally:
            # Steps in flight finish (as the engine lets running steps finish after a failure);
            # what waits on them is cancelled before the loop closes.
            executor.shutdown(wait=True)
            if monitor.failure is not None:  # reported once, below; not per waiting future
                loop.set_exception_handler(lambda _loop, _context: None)
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            with pulumi_settings.SETTINGS.lock:  # tasks of this loop must not outlive it
                pulumi_settings.SETTINGS.outputs.clear()
            pulumi_settings.ROOT.set(None)
            asyncio.set_event_loop(None)
            loop.close()
            run.seconds = time.perf_counter() - t0
        if monitor.failure is not None:
            raise monitor.failure
        if preview:  # a preview deletes nothing (DeleteStep.Apply in a dry run)
            return run
        # After every registration: the old copies of create-before-delete replacements
        # ("delete-replaced"), dependents first, then what the program no longer registers.
        for old, prov, record in reversed(monitor.pending_deletes):
            monitor.delete(old, prov, record)
        registered = set(run.steps)
        for urn in sorted(set(self.state.resources) - registered, reverse=True):
            old = self.state.resources[urn]
            record = StepRecord(urn, urn.rsplit("::", 1)[-1], old.type, "delete")
            monitor.delete(old, self.providers(_registration_of(old)), record)
            del self.state.resources[urn]
            run.steps[urn] = record
        return run


def _registration_of(old: ResourceState) -> Registration:
    return Registration(
        old.urn, old.type, old.urn.rsplit("::", 1)[-1], None, True, None, {}, old.inputs,
        [], {}, False, None, [], [], [],
    )  # fmt: skip


class _NoMocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


class EngineMonitor(pulumi_mocks.MockMonitor):
    """The resource monitor of the engine model: a registration answers when its step is done."""

    def __init__(self, engine: Engine, run: Run, preview: bool, replace: set[str]) -> None:
        super().__init__(_NoMocks())
        self.engine = engine
        self.run = run
        self.preview = preview
        self.targeted = replace
        self.replaces: set[str] = set()  # sg.replaces
        self.deletes: set[str] = set()  # sg.deletes
        self.pending_deletes: list[tuple[ResourceState, Provider, StepRecord]] = []
        self.done: set[str] = set()
        self.lock = threading.Lock()
        self.workers = threading.BoundedSemaphore(engine.parallel)
        self.active = 0
        self.failure: BaseException | None = None
        self.t0 = time.perf_counter()

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        if request.type == "pulumi:pulumi:Stack" or not request.custom:
            with self.lock:
                response = super().RegisterResource(request)
                self.done.add(response.urn)
                return response
        pulumi_mocks._ensure_event_loop()
        urn = self.make_urn(request.parent, request.type, request.name)
        wire = json_format.MessageToDict(request.object)
        reg = Registration(
            urn=urn,
            type=request.type,
            name=request.name,
            parent=request.parent or None,
            custom=True,
            provider=request.provider or None,
            wire=wire,
            inputs=plain(wire),
            dependencies=list(request.dependencies),
            property_dependencies={
                k: list(v.urns) for k, v in request.propertyDependencies.items()
            },
            delete_before_replace=bool(request.deleteBeforeReplace),
            deleted_with=request.deletedWith or None,
            replace_with=list(request.replace_with),
            replace_on_changes=list(request.replaceOnChanges),
            additional_secret_outputs=list(request.additionalSecretOutputs),
        )
        try:
            id_, outputs = self.step(reg)
        except BaseException as exc:
            with self.lock:
                if self.failure is None:
                    self.failure = exc
            raise
        obj = pulumi_mocks._sync_await(rpc.serialize_properties(outputs, {}))
        with self.lock:
            self.resources[urn] = pulumi_mocks.MockMonitor.ResourceRegistration(urn, id_, outputs)
        return resource_pb2.RegisterResourceResponse(urn=urn, id=id_, object=obj)

    def _decide(
        self, reg: Registration, old: ResourceState | None, prov: Provider
    ) -> tuple[str, str]:
        if old is None:
            return CREATE, ""
        if reg.urn in self.targeted:
            return REPLACE, "targeted replace (--replace)"
        for other in reg.replace_with:
            if other in self.replaces:
                return REPLACE, f"replaceWith {other.rsplit('::', 1)[-1]} is being replaced"
        if reg.deleted_with and reg.deleted_with in self.replaces:
            return (
                REPLACE,
                f"its deletedWith {reg.deleted_with.rsplit('::', 1)[-1]} is being replaced",
            )
        return prov.diff(reg, old)

    def step(self, reg: Registration) -> tuple[str, dict[str, Any]]:
        prov = self.engine.providers(reg)
        record = StepRecord(reg.urn, reg.name, reg.type, SAME, deps=frozenset(reg.all_dependencies))
        with self.lock:
            if self.failure is not None:
                raise RuntimeError(f"not started: an earlier step failed ({self.failure})")
            missing = sorted(reg.all_dependencies - self.done)
            if missing:
                self.run.violations.append(f"{reg.name} started before {missing}")
            old = self.engine.state.resources.get(reg.urn)
            op, reason = self._decide(reg, old, prov)
            if op == REPLACE:
                self.replaces.add(reg.urn)  # before the step runs, as sg.replaces
            record.op, record.reason = op, reason
            self.run.steps[reg.urn] = record
        with self.workers:
            with self.lock:
                self.active += 1
                self.run.max_concurrent = max(self.run.max_concurrent, self.active)
            record.start = time.perf_counter() - self.t0
            try:
                id_, outputs = self._apply(reg, old, op, prov, record)
            finally:
                record.end = time.perf_counter() - self.t0
                with self.lock:
                    self.active -= 1
        with self.lock:
            if not self.preview:
                delete = reg.inputs.get("delete") if reg.type == COMMAND_TYPE else None
                self.engine.state.resources[reg.urn] = ResourceState(
                    reg.urn, reg.type, id_, reg.inputs, outputs, delete, reg.deleted_with
                )
            self.done.add(reg.urn)
        return id_, outputs

    def _apply(
        self,
        reg: Registration,
        old: ResourceState | None,
        op: str,
        prov: Provider,
        record: StepRecord,
    ) -> tuple[str, dict[str, Any]]:
        if op == SAME:
            assert old is not None
            return old.id, old.outputs
        if op == CREATE:
            return prov.create(reg, self.preview, record)
        if op == UPDATE:
            assert old is not None
            return old.id, prov.update(reg, old, self.preview, record)
        assert old is not None and op == REPLACE
        if self.preview:
            return prov.create(reg, True, record)
        if reg.delete_before_replace:
            self.delete(old, prov, record)
            return prov.create(reg, False, record)
        created = prov.create(reg, False, record)
        with self.lock:  # create-before-delete: the old one is deleted at the end of the run
            self.pending_deletes.append((old, prov, record))
        return created

    def delete(self, old: ResourceState, prov: Provider, record: StepRecord) -> None:
        """A delete step (step.go DeleteStep.Apply): no provider Delete when the resource's
        deletedWith resource is deleted in this run (`isDeletedWith(old.DeletedWith, ...)`)."""
        with self.lock:
            self.deletes.add(old.urn)  # sg.deletes
            skip = old.deleted_with is not None and old.deleted_with in self.deletes
        if skip:
            assert old.deleted_with is not None
            with_ = old.deleted_with.rsplit("::", 1)[-1]
            record.reason += f"; old one not deleted: its deletedWith {with_} was deleted"
            return
        prov.delete(old, record)


# -- a ready-made provider map ---------------------------------------------------------------


@dataclass
class Overrides:
    """Per resource name: a provider to use instead of the type's own (test guests, skips)."""

    by_name: dict[str, Provider] = field(default_factory=dict)
    by_type_prefix: dict[str, Provider] = field(default_factory=dict)


def provider_map(
    command: Provider, dynamic: Provider | None, overrides: Overrides
) -> Callable[[Registration], Provider]:
    def choose(reg: Registration) -> Provider:
        if reg.name in overrides.by_name:
            return overrides.by_name[reg.name]
        for prefix, prov in overrides.by_type_prefix.items():
            if reg.type.startswith(prefix):
                return prov
        if reg.type == COMMAND_TYPE:
            return command
        if reg.type.startswith(DYNAMIC_PREFIX) and dynamic is not None:
            return dynamic
        return NotApplied(f"no provider for {reg.type} in the rehearsal")

    return choose


@contextlib.contextmanager
def timed(phases: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = time.perf_counter() - t0


class DynamicProvider:
    """Dynamic resources through the SDK's own provider host (`python -m pulumi.dynamic`, gRPC),
    with the inputs converted as the engine converts them (`engine_inputs`)."""

    def __init__(self, host: Any) -> None:
        self.host = host  # tests.sdk.provider_host.ProviderHost (started)

    def _checked(self, reg: Registration, old: ResourceState | None) -> dict[str, Any]:
        from tests.sdk.provider_host import engine_inputs

        news = engine_inputs(reg.wire, has_unknown(reg.inputs))
        checked, failures = self.host.check(reg.urn, old.inputs if old else {}, news)
        if failures:
            raise StepFailedError(reg.name, f"check failures: {failures}")
        return dict(checked)

    def diff(self, reg: Registration, old: ResourceState) -> tuple[str, str]:
        checked = self._checked(reg, old)
        outcome = self.host.diff(reg.urn, old.id, old.outputs, checked, old_inputs=old.inputs)
        if not outcome.changes:
            return SAME, ""
        if outcome.replaces:
            return REPLACE, ", ".join(outcome.replaces)
        return UPDATE, ", ".join(outcome.diffs)

    def create(
        self, reg: Registration, preview: bool, record: StepRecord
    ) -> tuple[str, dict[str, Any]]:
        checked = self._checked(reg, None)
        if not preview:
            record.commands += 1
        id_, outs = self.host.create(reg.urn, checked, preview=preview)
        reg.inputs = checked
        return (id_ or UNKNOWN), dict(outs)

    def update(
        self, reg: Registration, old: ResourceState, preview: bool, record: StepRecord
    ) -> dict[str, Any]:
        checked = self._checked(reg, old)
        if not preview:
            record.commands += 1
        outs = self.host.update(
            reg.urn, old.id, old.outputs, checked, preview=preview, old_inputs=old.inputs
        )
        reg.inputs = checked
        return dict(outs)

    def delete(self, old: ResourceState, record: StepRecord) -> None:
        record.commands += 1
        self.host.delete(old.urn, old.id, old.outputs, old_inputs=old.inputs)
