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
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import wait_for_rpcs

from config import PROJECT
from tests.sdk.rehearsal_state import (
    COMMAND_TYPE,
    CREATE,
    PARALLEL,
    REPLACE,
    SAME,
    UPDATE,
    Provider,
    Registration,
    ResourceState,
    Run,
    State,
    StepRecord,
)
from tests.sdk.wire import plain
from tools.registry import stand_in_digest
from tools.synth import ReadsAndLookups


class Engine:
    """The engine model: one `up` (or preview) of the program against `state`."""

    def __init__(
        self,
        providers: Callable[[Registration], Provider],
        state: State,
        parallel: int = PARALLEL,
        digest_of: Callable[[str], str] = stand_in_digest,
    ) -> None:
        self.providers = providers
        self.state = state
        self.parallel = parallel
        self.digest_of = digest_of  # the registry lookups (pulumi-docker's, at preview too)

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
                ReadsAndLookups(digest_of=self.digest_of),
                project=PROJECT,
                stack=stack,
                preview=preview,
                monitor=monitor,
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


class EngineMonitor(pulumi_mocks.MockMonitor):
    """The resource monitor of the engine model: a registration answers when its step is done."""

    def __init__(self, engine: Engine, run: Run, preview: bool, replace: set[str]) -> None:
        # the program's reads and invokes go to these (its registrations to `step`)
        super().__init__(ReadsAndLookups(digest_of=engine.digest_of))
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

    def ReadResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        """A read step (the stack reference): the engine answers it at once, in preview too."""
        with self.lock:
            response = super().ReadResource(request)
            self.done.add(response.urn)
            return response

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


@contextlib.contextmanager
def timed(phases: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = time.perf_counter() - t0
