"""The policy pack through its own Analyzer gRPC server, fed engine-shaped payloads.

Inside `pulumi preview --policy-pack policy` the pack sees what the SDK makes of the engine's
Structs: numbers as floats, secrets decrypted and unmarked, unknown sentinels during preview. These
tests send exactly that (see tests/sdk/analyzer.py) for both shipped stacks, as a first preview
(unknowns) and as an update, and every mutation of tests/unit/test_policies.py.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pulumi.runtime.proto import analyzer_pb2

from policy import check
from policy.model import Resource
from policy.smoker_policies import POLICIES, violations
from tests.policy_mutations import MUTATIONS, Stack
from tests.sdk.analyzer import (
    SECRET_SIG,
    UNKNOWN,
    Diagnostic,
    EngineResource,
    PolicyPackServer,
    engine_stack,
    mutated,
)
from tools.synth import Synthesis, synthesize

STACKS = ("host", "dev", "prod")
# Their violation is that an input is not secret: the SDK unwraps secrets without a mark
# (pulumi/pulumi-policy#241), so inside the pack they pass. `python -m policy.check` (CI, next to
# the preview) catches them on the synthesized stacks, where secrets are visible.
SECRETNESS_ONLY = {"plain_password", "plain_auth_key_stdin", "plain_env_files"}
# The per-resource type tokens of the dynamic resources (replacing pulumi-python:dynamic:Resource).
DYNAMIC_TOKENS = {
    "-release": "pulumi-python:dynamic/app:Release",
    "-mongo-users": "pulumi-python:dynamic/app:MongoUsers",
}


@pytest.fixture(scope="module")
def pack() -> Iterator[PolicyPackServer]:
    with PolicyPackServer() as server:
        yield server


@pytest.fixture(scope="module")
def syntheses() -> dict[str, Synthesis]:
    return {stack: synthesize(stack) for stack in STACKS}


@pytest.fixture(scope="module")
def policy_stacks(syntheses: dict[str, Synthesis]) -> dict[str, Stack]:
    return {stack: check.from_synth(s.resources) for stack, s in syntheses.items()}


def _show(found: list[Diagnostic]) -> str:
    return "\n".join(str(d) for d in found)


def _retyped(resources: list[EngineResource]) -> list[EngineResource]:
    """The dynamic resources under their per-resource type tokens."""
    result = []
    for r in resources:
        token = next((t for s, t in DYNAMIC_TOKENS.items() if r.name.endswith(s)), None)
        if r.type.startswith("pulumi-python:dynamic") and token:
            urn = r.urn.replace(f"{r.type}::", f"{token}::")
            r = dataclasses.replace(r, type=token, urn=urn)
        result.append(r)
    return result


def test_the_pack_serves_every_policy_as_mandatory(pack: PolicyPackServer) -> None:
    assert pack.info.name == "smoker-infra"
    assert [p.name for p in pack.info.policies] == [p.name for p in POLICIES]
    assert {p.enforcementLevel for p in pack.info.policies} == {analyzer_pb2.MANDATORY}
    kinds = {p.name: p.policy_type for p in pack.info.policies}
    for p in POLICIES:
        resource = analyzer_pb2.POLICY_TYPE_RESOURCE
        assert kinds[p.name] == (resource if p.per_resource else analyzer_pb2.POLICY_TYPE_STACK)


def test_the_payloads_carry_the_engine_shape(syntheses: dict[str, Synthesis]) -> None:
    """Guards the harness: doubles, wrapped plaintext secrets, unknowns only in preview."""
    for preview in (False, True):
        resources = {r.name: r for r in engine_stack(syntheses["prod"], preview)}
        text = json.dumps([r.props for r in resources.values()])
        assert (UNKNOWN in text) is preview
        assert "__provider" not in text
        guest = resources["prod-cloud"]
        assert guest.props["vmId"] == 106.0 and isinstance(guest.props["vmId"], float)
        password = resources["proxmox-provider"].props["password"]
        assert password["value"].startswith("synth-placeholder-")
        assert SECRET_SIG in password.values()
        release = resources["prod-cloud-release"]
        assert release.provider is not None and release.provider.name == "default"
        assert release.provider.type == "pulumi:providers:pulumi-python"


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "up"])
@pytest.mark.parametrize("stack", STACKS)
def test_the_shipped_stacks_pass_inside_the_pack(
    pack: PolicyPackServer, syntheses: dict[str, Synthesis], stack: str, preview: bool
) -> None:
    found = pack.analyze(engine_stack(syntheses[stack], preview), stack, dry_run=preview)
    assert found == [], _show(found)


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "up"])
@pytest.mark.parametrize("stack", ["dev", "prod"])  # the host stack has no dynamic resource
def test_per_resource_dynamic_type_tokens_pass_too(
    pack: PolicyPackServer, syntheses: dict[str, Synthesis], stack: str, preview: bool
) -> None:
    resources = _retyped(engine_stack(syntheses[stack], preview))
    assert {r.type for r in resources} >= set(DYNAMIC_TOKENS.values())
    found = pack.analyze(resources, stack, dry_run=preview)
    assert found == [], _show(found)


def _params(secretness_only: bool) -> Iterator[Any]:
    for mutate, policy, resource, fix in MUTATIONS:
        if (mutate.__name__ in SECRETNESS_ONLY) is not secretness_only:
            continue
        for preview in (True, False):
            mode = "preview" if preview else "up"
            yield pytest.param(
                mutate, policy, resource, fix, preview, id=f"{mutate.__name__}-{mode}"
            )


@pytest.mark.parametrize(("mutate", "policy", "resource", "fix", "preview"), list(_params(False)))
def test_a_mutated_stack_fails_its_policy_inside_the_pack(
    pack: PolicyPackServer,
    syntheses: dict[str, Synthesis],
    policy_stacks: dict[str, Stack],
    mutate: Callable[[dict[str, Stack]], Stack],
    policy: str,
    resource: str,
    fix: str,
    preview: bool,
) -> None:
    after = mutate(policy_stacks)
    stack = _stack_of(after)
    resources = mutated(engine_stack(syntheses[stack], preview), policy_stacks[stack], after, stack)
    found = pack.analyze(resources, stack, dry_run=preview)
    assert found, f"{mutate.__name__} passed the pack"
    assert {d.policy for d in found} == {policy}, _show(found)
    for d in found:
        assert d.level == "MANDATORY", _show(found)
        assert d.urn.endswith(f"::{resource}") and f"{resource} (" in d.message, _show(found)
        assert "fix: " in d.message and fix in d.message, _show(found)


@pytest.mark.parametrize(("mutate", "policy", "resource", "fix", "preview"), list(_params(True)))
def test_a_secretness_mutation_passes_the_pack_and_fails_the_synthesized_check(
    pack: PolicyPackServer,
    syntheses: dict[str, Synthesis],
    policy_stacks: dict[str, Stack],
    mutate: Callable[[dict[str, Stack]], Stack],
    policy: str,
    resource: str,
    fix: str,
    preview: bool,
) -> None:
    after = mutate(policy_stacks)
    stack = _stack_of(after)
    resources = mutated(engine_stack(syntheses[stack], preview), policy_stacks[stack], after, stack)
    found = pack.analyze(resources, stack, dry_run=preview)
    assert found == [], (
        "the pack now tells secret inputs from plain ones (pulumi/pulumi-policy#241 fixed?): "
        f"move {mutate.__name__} out of SECRETNESS_ONLY\n{_show(found)}"
    )
    assert {v.policy for v in violations(after)} == {policy}
    assert {v.policy for v in violations(after, secrets_visible=False)} == set()


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "up"])
def test_a_mutated_release_fails_under_its_per_resource_token(
    pack: PolicyPackServer,
    syntheses: dict[str, Synthesis],
    policy_stacks: dict[str, Stack],
    preview: bool,
) -> None:
    (mutate,) = [m for m, *_ in MUTATIONS if m.__name__ == "release_mongo_on_all_interfaces"]
    after = mutate(policy_stacks)
    resources = mutated(engine_stack(syntheses["dev"], preview), policy_stacks["dev"], after, "dev")
    found = pack.analyze(_retyped(resources), "dev", dry_run=preview)
    assert {d.policy for d in found} == {"loopback-ports"}, _show(found)
    assert all("dynamic/app:Release" in d.urn for d in found), _show(found)


def _stack_of(resources: list[Resource]) -> str:
    (stack,) = {r.stack for r in resources}
    return stack
