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
from policy.model import LXC, VZDUMP, Resource, Violation
from policy.smoker_policies import POLICIES, is_dynamic, violations
from tests.configs import set_path, stack_raw
from tools.synth import synthesize

Stack = list[Resource]
PROVIDER = "pulumi:providers:proxmoxve"


@pytest.fixture(scope="module")
def stacks() -> dict[str, Stack]:
    return {name: check.from_synth(synthesize(name).resources) for name in ("dev", "prod")}


def find(stack: Stack, name: str, type_: str | None = None) -> Resource:
    (found,) = [r for r in stack if r.name == name and type_ in (None, r.type)]
    return found


def replace(stack: Stack, old: Resource, **changes: Any) -> Stack:
    """A copy of the stack with one resource changed; `props` changes merge into its inputs."""
    props = {**old.props, **changes.pop("props", {})}
    new = dataclasses.replace(old, props=props, **changes)
    return [new if r is old else r for r in stack]


def without(stack: Stack, *names: str) -> Stack:
    return [r for r in stack if r.name not in names]


def only(found: list[Violation], policy: str) -> list[Violation]:
    assert found, "expected a violation"
    assert {v.policy for v in found} == {policy}, found
    return found


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_both_stacks_pass_every_policy(stacks: dict[str, Stack], stack: str) -> None:
    assert violations(stacks[stack]) == []
    assert violations(stacks[stack], secrets_visible=False) == []


def _privileged(s: dict[str, Stack]) -> Stack:
    return replace(s["dev"], find(s["dev"], "dev-cloud", LXC), props={"unprivileged": False})


def _unprotected(s: dict[str, Stack]) -> Stack:
    return replace(s["prod"], find(s["prod"], "prod-cloud", LXC), protect=False)


def _no_proxmox_protection(s: dict[str, Stack]) -> Stack:
    return replace(s["prod"], find(s["prod"], "prod-cloud", LXC), props={"protection": False})


def _default_provider(s: dict[str, Stack]) -> Stack:
    default = "urn:pulumi:prod::smoker-infra::pulumi:providers:proxmoxve::default_8_6_0"
    return replace(s["prod"], find(s["prod"], "vzdump-prod", VZDUMP), provider=default)


def _no_provider(s: dict[str, Stack]) -> Stack:
    return replace(s["dev"], find(s["dev"], "dev-cloud-sshd-config"), provider=None)


def _docker_default_provider(s: dict[str, Stack]) -> Stack:
    # A package missing from pulumi:disable-default-providers gets a default provider silently.
    name, type_ = "prod-cloud-backend-image", "docker:index/remoteImage:RemoteImage"
    image = Resource(
        type_,
        name,
        f"urn:pulumi:prod::smoker-infra::{type_}::{name}",
        {"name": "ghcr.io/example/backend:1"},
        provider="urn:pulumi:prod::smoker-infra::pulumi:providers:docker::default",
    )
    return [*s["prod"], image]


def _plain_password(s: dict[str, Stack]) -> Stack:
    provider = find(s["prod"], "proxmox-provider", PROVIDER)
    return replace(s["prod"], provider, props={"password": "plain-root-password"})


def _plain_auth_key_stdin(s: dict[str, Stack]) -> Stack:
    step = find(s["prod"], "prod-cloud-tailscale-up")
    return replace(s["prod"], step, props={"stdin": "tskey-auth-plain"})


def _plain_env_files(s: dict[str, Stack]) -> Stack:
    release = find(s["prod"], "prod-cloud-release")
    plain = {"mongo.env": "MONGO_INITDB_ROOT_PASSWORD=plain-mongo-password\n"}
    return replace(s["prod"], release, props={"envFiles": plain})


def _password_authentication(s: dict[str, Stack]) -> Stack:
    step = find(s["prod"], "prod-cloud-sshd-config")
    text = step.props["stdin"].replace("PasswordAuthentication no", "PasswordAuthentication yes")
    return replace(s["prod"], step, props={"stdin": text})


def _root_password_login(s: dict[str, Stack]) -> Stack:
    step = find(s["dev"], "virtual-smoker-device-sshd-config")
    text = step.props["stdin"].replace("PermitRootLogin prohibit-password", "PermitRootLogin yes")
    return replace(s["dev"], step, props={"stdin": text})


def _match_block_password(s: dict[str, Stack]) -> Stack:
    step = find(s["prod"], "prod-cloud-sshd-config")
    text = step.props["stdin"] + "Match User smoker\n  PasswordAuthentication yes\n"
    return replace(s["prod"], step, props={"stdin": text})


def _mongo_on_all_interfaces(s: dict[str, Stack]) -> Stack:
    step = find(s["prod"], "prod-cloud-mongo-bootstrap-file")
    text = step.props["stdin"].replace("127.0.0.1:27017:27017", "27017:27017")
    return replace(s["prod"], step, props={"stdin": text})


def _backend_on_all_interfaces(s: dict[str, Stack]) -> Stack:
    release = find(s["dev"], "dev-cloud-release")
    text = release.props["compose"].replace("127.0.0.1:3001:3001", "0.0.0.0:3001:3001")
    return replace(s["dev"], release, props={"compose": text})


def _no_vzdump(s: dict[str, Stack]) -> Stack:
    return without(s["prod"], "vzdump-prod")


def _vzdump_disabled(s: dict[str, Stack]) -> Stack:
    return replace(s["prod"], find(s["prod"], "vzdump-prod", VZDUMP), props={"enabled": False})


def _no_backup_timers(s: dict[str, Stack]) -> Stack:
    return without(s["prod"], "prod-cloud-backup-timers")


def _funnel_on_dev(s: dict[str, Stack]) -> Stack:
    step = find(s["dev"], "dev-cloud-tailscale-serve")
    script = step.props["create"].replace("tailscale serve --bg", "tailscale funnel --bg")
    assert script != step.props["create"]
    return replace(s["dev"], step, props={"create": script})


MUTATIONS: list[tuple[Callable[[dict[str, Stack]], Stack], str, str, str]] = [
    # (mutation, policy, resource named in the message, fix named in the message)
    (_privileged, "lxc-unprivileged", "dev-cloud", "unprivileged=True"),
    (_unprotected, "prod-guests-protected", "prod-cloud", "protect: true"),
    (_no_proxmox_protection, "prod-guests-protected", "prod-cloud", "protection=True"),
    (_default_provider, "explicit-provider", "vzdump-prod", "provider="),
    (_no_provider, "explicit-provider", "dev-cloud-sshd-config", "provider="),
    (_docker_default_provider, "explicit-provider", "prod-cloud-backend-image", "list docker in"),
    (_plain_password, "secret-inputs", "proxmox-provider", "pulumi.Output.secret"),
    (_plain_auth_key_stdin, "secret-inputs", "prod-cloud-tailscale-up", "wrap stdin"),
    (_plain_env_files, "secret-inputs", "prod-cloud-release", "wrap envFiles"),
    (_password_authentication, "sshd-no-passwords", "prod-cloud-sshd-config", "passwordauth"),
    (
        _root_password_login,
        "sshd-no-passwords",
        "virtual-smoker-device-sshd-config",
        "permitrootlogin no",
    ),
    (_match_block_password, "sshd-no-passwords", "prod-cloud-sshd-config", "remove it"),
    (_mongo_on_all_interfaces, "loopback-ports", "prod-cloud-mongo-bootstrap-file", "127.0.0.1:"),
    (_backend_on_all_interfaces, "loopback-ports", "dev-cloud-release", "127.0.0.1:"),
    (_no_vzdump, "prod-backups", "prod-cloud", "app.vzdump"),
    (_vzdump_disabled, "prod-backups", "prod-cloud", "app.vzdump"),
    (_no_backup_timers, "prod-backups", "prod-cloud", "app.backups"),
    (_funnel_on_dev, "funnel-prod-only", "dev-cloud-tailscale-serve", "funnel: false"),
]


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
    stack = _plain_password(stacks)
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
    validate(_no_vzdump(stacks))
    assert [urn for _, urn in reports] == [find(stacks["prod"], "prod-cloud", LXC).urn]


def test_check_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert check.main([]) == 2
    assert check.main(["prod"]) == 0
    assert "prod: 0 policy violation(s)" in capsys.readouterr().out
