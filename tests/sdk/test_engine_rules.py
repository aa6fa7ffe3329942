"""The Pulumi engine's own rules, checked on the graph the program registers.

Mocks enforce none of them, so each rule is restated here from the engine's source (pulumi/pulumi,
pkg/resource/deploy) and applied to every resource both stacks register, with the options the
engine receives (`tools.synth` records the RegisterResource requests as they are sent).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from tests.configs import set_path, stack_raw
from tests.sdk.wire import connection, plain
from tools.synth import REPO, Resource, Synthesis, synthesize

LXC = "proxmoxve:index/containerLegacy:ContainerLegacy"
VM = "proxmoxve:index/vmLegacy:VmLegacy"
GUESTS = (LXC, VM)
COMMAND = "command:remote:Command"
DYNAMIC = "pulumi-python:dynamic"
ROOT_TYPE = "pulumi:pulumi:Stack"
STACKS = ("host", "dev", "prod")


@pytest.fixture(scope="module")
def stacks() -> dict[str, Synthesis]:
    """The three stacks, and dev with the optional features on (tailscale.mintKeys: the
    explicit `tailscale` provider and one TailnetKey per guest)."""
    minted = set_path(stack_raw("dev"), "tailscale.mintKeys", True)
    return {stack: synthesize(stack) for stack in STACKS} | {
        "dev (mintKeys)": synthesize("dev", *minted)
    }


def each(stacks: dict[str, Synthesis]) -> Iterator[tuple[str, Resource]]:
    for stack, synthesis in stacks.items():
        for resource in synthesis.resources:
            yield stack, resource


def package_of(type_token: str) -> str:
    return type_token.split(":", 1)[0]


def denied_default_provider(package: str, disabled: list[str]) -> bool:
    """`shouldDenyRequest` (default_providers.go): every package but `pulumi` is denied when
    `pulumi:disable-default-providers` lists "*" or its name."""
    if package == "pulumi":
        return False
    return any(entry.strip() in ("*", package) for entry in disabled)


def disabled_default_providers() -> list[str]:
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    value = project["config"]["pulumi:disable-default-providers"]["value"]
    assert isinstance(value, list)
    return [str(entry) for entry in value]


def test_the_deny_rule_as_restated_denies_dynamic_resources_under_a_star() -> None:
    """The restated rule itself: "*" denies pulumi-python (the first real preview's failure)."""
    assert denied_default_provider("pulumi-python", ["*"])
    assert not denied_default_provider("pulumi", ["*"])
    assert not denied_default_provider("pulumi-python", ["proxmoxve", "command"])


def test_every_custom_resource_gets_a_provider_the_engine_allows(
    stacks: dict[str, Synthesis],
) -> None:
    disabled = disabled_default_providers()
    for stack, r in each(stacks):
        if not r.custom or r.type.startswith("pulumi:providers:"):
            continue
        if r.provider is None:
            assert not denied_default_provider(package_of(r.type), disabled), (
                f"{stack}: {r.name} ({r.type}) has no explicit provider and the default "
                f"provider of {package_of(r.type)!r} is disabled in Pulumi.yaml"
            )


def test_every_package_with_an_explicit_provider_denies_its_default(
    stacks: dict[str, Synthesis],
) -> None:
    """The deny list is meaningful: a resource of these packages that forgot its provider fails
    the preview instead of silently creating a default provider."""
    disabled = disabled_default_providers()
    explicit = {
        r.type.removeprefix("pulumi:providers:")
        for _, r in each(stacks)
        if r.type.startswith("pulumi:providers:")
    }
    assert explicit and explicit <= set(disabled)
    assert "tailscale" in explicit  # the mintKeys variant: keys never use a default provider
    assert "*" not in disabled


def test_urns_and_alias_urns_are_unique(stacks: dict[str, Synthesis]) -> None:
    for synthesis in stacks.values():
        urns = [r.urn for r in synthesis.resources]
        assert len(urns) == len(set(urns))
        for r in synthesis.resources:
            for alias in alias_urns(r):
                assert alias not in urns, f"{r.name}: alias {alias} is another resource's URN"


def alias_urns(r: Resource) -> list[str]:
    """The URNs an alias spec names (source_eval.go: an empty parentUrn means the same parent,
    the SDKs' way of saying "unchanged"; noParent means the stack root)."""
    prefix, name = r.urn.rsplit("::", 1)
    head, qualified_type = prefix.rsplit("::", 1)
    parent_types = qualified_type.rsplit("$", 1)[0] + "$" if "$" in qualified_type else ""
    urns = []
    for alias in r.aliases:
        spec = alias.get("spec", {})
        if spec.get("noParent"):
            types = f"{ROOT_TYPE}$"  # the mocks' form of a root resource's URN
        elif spec.get("parentUrn"):
            types = spec["parentUrn"].rsplit("::", 2)[1] + "$"
        else:
            types = parent_types
        alias_type = spec.get("type") or r.type
        urns.append(f"{head}::{types}{alias_type}::{spec.get('name') or name}")
    return urns


def test_dynamic_resources_have_their_own_type_and_keep_their_old_state(
    stacks: dict[str, Synthesis],
) -> None:
    dynamic = [r for _, r in each(stacks) if r.type.startswith(DYNAMIC)]
    assert {r.type for r in dynamic} == {
        "pulumi-python:dynamic/app:Release",
        "pulumi-python:dynamic/app:MongoUsers",
        "pulumi-python:dynamic/device:DesiredRelease",
    }
    for r in dynamic:
        if r.type.endswith(":DesiredRelease"):
            assert alias_urns(r) == []  # new with its own type: no older state to move
            continue
        # the URN it had as `pulumi-python:dynamic:Resource`, so `pulumi up` moves the state
        parent_type = r.urn.split("::")[2].rsplit("$", 1)[0]
        old = f"urn:pulumi:{r.urn.split('::')[0].split(':')[-1]}::smoker-infra::{parent_type}$"
        old += f"pulumi-python:dynamic:Resource::{r.name}"
        assert alias_urns(r) == [old]


def pinned_identity(r: Resource) -> str | None:
    """Why a replacement created before the old one is deleted would collide with it."""
    inputs = r.inputs
    for key in ("vmId", "poolId", "resourceId", "fileName"):
        if key in inputs:
            return f"{key}={inputs[key]}"
    if "fileName" in (inputs.get("sourceRaw") or {}):
        return f"fileName={inputs['sourceRaw']['fileName']}"
    if r.type == COMMAND and inputs.get("delete"):
        return "a delete script that undoes what its replacement's create converged"
    return None


def test_every_resource_with_a_pinned_identity_is_replaced_delete_first(
    stacks: dict[str, Synthesis],
) -> None:
    """Replacements are create-before-delete unless deleteBeforeReplace (step_generator.go)."""
    pinned = [(s, r, why) for s, r in each(stacks) if (why := pinned_identity(r))]
    assert {r.type for _, r, _ in pinned} >= {LXC, VM, COMMAND}
    for stack, r, why in pinned:
        assert r.delete_before_replace, f"{stack}: {r.name} ({why}) is not deleteBeforeReplace"


def connects_to(r: Resource) -> str | None:
    if r.type == COMMAND:
        return connection(r).get("host")
    if r.type.startswith(DYNAMIC):
        return r.inputs.get("host")
    return None


def test_everything_that_configures_a_guest_is_redone_when_the_guest_is_rebuilt(
    stacks: dict[str, Synthesis],
) -> None:
    """A guest's ID is its VMID: it does not change on a rebuild, so triggers on it never fire.
    The engine replaces a resource whose deletedWith (or replaceWith) resource is replaced
    (step_generator.go, diff: "its DeletedWith resource is being replaced"), so every resource
    that reaches a guest names it."""
    for stack, synthesis in stacks.items():
        for host in synthesis.config.hosts:  # an existing machine: the program never rebuilds it
            configuring = [r for r in synthesis.resources if connects_to(r) == host.ssh_host]
            assert len(configuring) > 10
            assert not [r for r in configuring if r.deleted_with or r.replace_with], stack
        for spec in synthesis.config.proxmox_guests:
            guest = synthesis.one(LXC if spec.kind == "lxc" else VM, spec.name)
            configuring = [r for r in synthesis.resources if connects_to(r) == spec.ssh_host]
            assert len(configuring) > 10
            for r in configuring:
                assert r.deleted_with == guest.urn or guest.urn in r.replace_with, (
                    f"{stack}: {r.name} configures {guest.name} but would stay 'unchanged' "
                    "on a rebuilt guest"
                )


def test_the_readiness_deadline_is_the_create_timeout(stacks: dict[str, Synthesis]) -> None:
    """pulumi-command retries refused dials with a backoff capped at 5 s, so a dial limit ends
    long before or after any deadline; unlimited dials end when the Create context does, and
    the provider derives it from customTimeouts (pulumi-go-provider middleware/cancel)."""
    for stack, synthesis in stacks.items():
        deadline = synthesis.config.readiness_timeout_seconds
        for ready in (r for r in synthesis.resources if r.name.endswith("-ready")):
            assert connection(ready)["dialErrorLimit"] == -1, stack
            assert ready.custom_timeouts == {"create": f"{deadline}s", "update": f"{deadline}s"}


def test_changing_the_readiness_deadline_reruns_only_the_readiness_gates() -> None:
    """pulumi-command has no custom Diff: any input change is an update, which runs `create`
    again. So no step may carry the readiness deadline in its inputs."""
    before = synthesize("dev")
    after = synthesize("dev", *set_path(stack_raw("dev"), "readinessTimeoutSeconds", 900))
    changed = {
        r.name
        for r, s in zip(before.resources, after.resources, strict=True)
        if json.dumps(plain(r.wire_inputs), sort_keys=True)
        != json.dumps(plain(s.wire_inputs), sort_keys=True)
    }
    assert changed == {"dev-cloud-ready", "virtual-smoker-device-ready"}


def ancestors(synthesis: Synthesis, urn: str) -> set[str]:
    by_urn = {r.urn: r for r in synthesis.resources}
    seen: set[str] = set()
    todo = [urn]
    while todo:
        for dep in by_urn[todo.pop()].depends_on:
            if dep not in seen and dep in by_urn:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_no_image_pull_runs_beside_tailscale_up_and_serve_exists_before_the_release(
    stacks: dict[str, Synthesis],
) -> None:
    """`tailscale up --accept-dns` rewrites resolv.conf; the app chain (which pulls images)
    starts after the whole Tailscale chain, which also puts the serve mappings in place before
    a release is verified through them."""
    for synthesis in stacks.values():
        for guest in synthesis.config.guests:
            if guest.tailscale is None or synthesis.config.environment == "host":
                continue  # the host stack deploys no release
            serve = synthesis.one(COMMAND, f"{guest.name}-tailscale-serve").urn
            app = [
                r
                for r in synthesis.resources
                if r.parent and r.parent.endswith(f"::{guest.name}-app")
            ]
            # an existing machine has no app files before its release: the release alone
            assert len(app) >= (1 if guest.kind == "host" else 2)
            for r in app:
                assert serve in ancestors(synthesis, r.urn), f"{r.name} may run beside Tailscale"
