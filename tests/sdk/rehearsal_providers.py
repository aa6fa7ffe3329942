"""The rehearsal's resource providers: how each kind of resource is diffed and applied.

`RemoteCommand` is pulumi-command's remote Command (its rules are in `tests.sdk.rehearsal`'s
docstring, with their sources), `DynamicProvider` drives the SDK's own provider host,
`NotApplied` plans a resource that cannot be applied here (it needs Proxmox); `provider_map`
chooses one per registration.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.sdk.rehearsal_state import (
    COMMAND_REPLACE_ON_CHANGES,
    COMMAND_TYPE,
    DYNAMIC_PREFIX,
    REPLACE,
    SAME,
    UPDATE,
    Provider,
    Registration,
    ResourceState,
    StepFailedError,
    StepRecord,
    changed_paths,
    command_diff,
    has_unknown,
)
from tests.sdk.wire import UNKNOWN


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
