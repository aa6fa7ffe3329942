"""The rehearsal's vocabulary: wire values, the diff of a remote Command, state, registrations,
steps and runs (the rules and their sources are in `tests.sdk.rehearsal`'s docstring)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tests.sdk.wire import UNKNOWN

# `pulumi up --parallel` default (pkg/cmd/pulumi/operations/up.go defaultParallel: GOMAXPROCS * 4)
PARALLEL = 4 * (os.cpu_count() or 1)
COMMAND_TYPE = "command:remote:Command"
DYNAMIC_PREFIX = "pulumi-python:dynamic"
# The generated pulumi_command SDK registers this (pulumi_command/remote/command.py).
COMMAND_REPLACE_ON_CHANGES = ("triggers",)

SAME, CREATE, UPDATE, REPLACE, SKIP = "same", "create", "update", "replace", "skip"


# -- values ---------------------------------------------------------------------------------------


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


class StepFailedError(RuntimeError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


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
