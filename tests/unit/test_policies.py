"""The policy pack over both stacks as synthesized under mocks, and over mutated copies."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from policy import check
from policy.crossguard import crossguard_policies, from_policy_args
from policy.model import LXC, Resource, Violation, is_dynamic
from policy.smoker_policies import POLICIES, violations
from tests.configs import set_path, stack_raw
from tests.policy_mutations import MUTATIONS, Stack, find, no_vzdump, plain_password, replace
from tools.synth import synthesize


@pytest.fixture(scope="module")
def stacks() -> dict[str, Stack]:
    return {name: check.from_synth(synthesize(name).resources) for name in ("host", "dev", "prod")}


def only(found: list[Violation], policy: str) -> list[Violation]:
    assert found, "expected a violation"
    assert {v.policy for v in found} == {policy}, found
    return found


@pytest.mark.parametrize("stack", ["host", "dev", "prod"])
def test_every_stack_passes_every_policy(stacks: dict[str, Stack], stack: str) -> None:
    assert violations(stacks[stack]) == []
    assert violations(stacks[stack], secrets_visible=False) == []


@pytest.mark.parametrize(
    ("mutate", "policy", "resource", "fix"), MUTATIONS, ids=[m[0].__name__ for m in MUTATIONS]
)
def test_a_mutated_stack_fails_naming_the_resource_and_the_fix(
    stacks: dict[str, Stack],
    mutate: Callable[[dict[str, Stack]], Stack],
    policy: str,
    resource: str,
    fix: str,
) -> None:
    for v in only(violations(mutate(stacks)), policy):
        assert f"{resource} (" in v.message and v.urn.endswith(f"::{resource}")
        assert "fix: " in v.message and fix in v.message


def test_every_policy_has_a_failing_mutation() -> None:
    config_mutated = {"cloud-nic-firewall"}  # test_a_config_change_that_turns_the_nic_firewall_off
    assert {m[1] for m in MUTATIONS} | config_mutated == {p.name for p in POLICIES}


def test_a_config_change_that_turns_the_nic_firewall_off_fails() -> None:
    raw = set_path(stack_raw("dev"), "guests.dev-cloud.firewall", False)
    found = only(
        violations(check.from_synth(synthesize("dev", *raw).resources)), "cloud-nic-firewall"
    )
    assert [v.urn.rsplit("::", 1)[1] for v in found] == ["dev-cloud"]
    assert "guests.dev-cloud.firewall: true" in found[0].message


def test_a_credential_in_a_command_line_fails_even_when_secrets_are_not_visible(
    stacks: dict[str, Stack],
) -> None:
    # Inside the pack secrets arrive decrypted and unmarked: the leak is what can be seen.
    stack = plain_password(stacks)
    step = find(stack, "prod-cloud-mongo-bootstrap")
    leaked = replace(stack, step, props={"create": "echo plain-root-password | login"})
    assert violations(stack, secrets_visible=False) == []
    (v,) = only(violations(leaked, secrets_visible=False), "secret-inputs")
    assert "prod-cloud-mongo-bootstrap (" in v.message and "proxmox-provider" in v.message
    assert "plain-root-password" not in v.message


def test_unknown_types_and_unknown_values_are_not_violations(stacks: dict[str, Stack]) -> None:
    unknown = Resource(
        "pulumi-python:dynamic:Resource",
        "prod-cloud-something",
        "urn:pulumi:prod::smoker-infra::pulumi-python:dynamic:Resource::prod-cloud-something",
        {"images": {"backend": "[unknown]"}, "manifest": "[secret]"},
    )
    stack = [*stacks["prod"], unknown]
    for name, props in [
        ("prod-cloud-mongo-bootstrap-file", {"stdin": "[unknown]"}),
        ("prod-cloud-release", {"compose": "[unknown]"}),
        ("prod-cloud-sshd-config", {"stdin": "[unknown]"}),
        ("prod-cloud", {"networkInterfaces": "[unknown]", "tags": "[unknown]"}),
        ("vzdump-prod", {"vmids": "[unknown]"}),
    ]:
        (old,) = [r for r in stack if r.name == name and not r.type.startswith("smoker:")]
        stack = replace(stack, old, props=props)
    assert violations(stack) == []


@pytest.mark.parametrize(
    ("type_", "dynamic"),
    [
        ("pulumi-python:dynamic:Resource", True),
        ("pulumi-python:dynamic/app:Release", True),
        ("pulumi-python:dynamic/app:MongoUsers", True),
        ("pulumi-python:index:Other", False),
        ("pulumi:providers:pulumi-python", False),
        ("command:remote:Command", False),
    ],
)
def test_dynamic_resources_are_recognised_by_their_prefix(type_: str, dynamic: bool) -> None:
    assert is_dynamic(type_) is dynamic


def test_only_provider_backed_packages_need_an_explicit_provider(stacks: dict[str, Stack]) -> None:
    default = "urn:pulumi:prod::smoker-infra::pulumi:providers:{}::default"
    release = find(stacks["prod"], "prod-cloud-release")
    for type_ in ("pulumi-python:dynamic:Resource", "pulumi-python:dynamic/app:Release"):
        retyped = dataclasses.replace(release, type=type_, provider=default.format("pulumi-python"))
        assert violations([retyped]) == []
    component = find(stacks["prod"], "prod-cloud-app")
    assert component.type.startswith("smoker:") and component.provider is None
    assert violations([component]) == []
    for package, type_ in [("tailscale", "tailscale:index/tailnetKey:TailnetKey")]:
        key = Resource(type_, "k", f"urn:pulumi:prod::smoker-infra::{type_}::k", {})
        for provider in (None, default.format(package)):
            (v,) = only(
                violations([dataclasses.replace(key, provider=provider)]), "explicit-provider"
            )
            assert f"list {package} in pulumi:disable-default-providers" in v.message


# --- the CrossGuard objects the pack is built from --------------------------------------------


def _args(r: Resource, props: Any = None) -> SimpleNamespace:
    provider = SimpleNamespace(urn=r.provider.rsplit("::", 1)[0]) if r.provider else None
    return SimpleNamespace(
        resource_type=r.type,
        name=r.name,
        urn=r.urn,
        props=unknown_checking_proxy(dict(r.props) if props is None else props),
        opts=SimpleNamespace(protect=r.protect),
        provider=provider,
    )


def test_crossguard_policies_are_mandatory_and_match_the_checks() -> None:
    built = crossguard_policies()
    assert [p.name for p in built] == [p.name for p in POLICIES]
    for policy, check_ in zip(built, POLICIES, strict=True):
        assert policy.enforcement_level == EnforcementLevel.MANDATORY
        kind = ResourceValidationPolicy if check_.per_resource else StackValidationPolicy
        assert isinstance(policy, kind)


def test_resource_policy_callback_reports_the_violation(stacks: dict[str, Stack]) -> None:
    policy = {p.name: p for p in crossguard_policies()}["lxc-unprivileged"]
    lxc = find(stacks["dev"], "dev-cloud", LXC)
    reports: list[tuple[str, str | None]] = []
    policy.validate(_args(lxc), lambda m, urn=None: reports.append((m, urn)))
    assert reports == []
    policy.validate(
        _args(lxc, {**lxc.props, "unprivileged": False}),
        lambda m, urn=None: reports.append((m, urn)),
    )
    assert len(reports) == 1 and reports[0][1] == lxc.urn and "unprivileged=True" in reports[0][0]


def test_struct_numbers_read_as_the_synthesized_ints(stacks: dict[str, Stack]) -> None:
    # Inside the pack every number is a float from the protobuf Struct: 106 arrives as 106.0.
    guest = find(stacks["prod"], "prod-cloud", LXC)
    struct_shaped = {**guest.props, "vmId": float(guest.props["vmId"])}
    assert from_policy_args(_args(guest, struct_shaped)).props["vmId"] == guest.props["vmId"]
    stack = replace(stacks["prod"], guest, props={"vmId": f"{guest.props['vmId']}.0"})
    assert violations(stack) == []  # prod-backups compares VMIDs however they are spelled


def test_resource_policy_callback_reads_through_unknowns(stacks: dict[str, Stack]) -> None:
    policy = {p.name: p for p in crossguard_policies()}["sshd-no-passwords"]
    step = find(stacks["prod"], "prod-cloud-sshd-config")
    reports: list[str] = []
    policy.validate(
        _args(step, {**step.props, "stdin": UNKNOWN_STRING_VALUE}),
        lambda m, urn=None: reports.append(m),
    )
    assert reports == []


def test_stack_policy_callback_reports_the_violation(stacks: dict[str, Stack]) -> None:
    policy = {p.name: p for p in crossguard_policies()}["prod-backups"]
    reports: list[tuple[str, str | None]] = []

    def validate(stack: Stack) -> None:
        args = SimpleNamespace(resources=[_args(r) for r in stack])
        policy.validate(args, lambda m, urn=None: reports.append((m, urn)))

    validate(stacks["prod"])
    assert reports == []
    validate(no_vzdump(stacks))
    assert [urn for _, urn in reports] == [find(stacks["prod"], "prod-cloud", LXC).urn]


def test_check_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert check.main([]) == 2
    assert check.main(["prod"]) == 0
    assert "prod: 0 policy violation(s)" in capsys.readouterr().out
