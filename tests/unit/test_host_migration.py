"""Moving the host-wide objects of a lab whose dev stack owns them into the host stack.

The fixture is dev as it was before the host stack existed. `state_move` applies what
`pulumi state move --source dev --dest host URN...` does to those URNs, as the engine's source
does it (pkg/cmd/pulumi/state/state_move.go): a moved resource whose parent stays behind is put
under the destination's root stack, its URN rewritten to the new stack with its own type only;
providers are never moved but copied, and a copy whose parent stays behind goes under the
destination's root too. The tests then show that the host program finds every moved object at
that URN (directly or by an alias) with the same inputs and provider, and that dev, reading the
IDs from the host stack, leaves its guests unchanged: the first `up` of each stack replaces and
deletes nothing (docs/operations.md, "Migrating to the host stack").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tools.synth import Resource, Synthesis, synthesize

FIXTURE = (
    Path(__file__).resolve().parents[1] / "fixtures" / "migration" / "dev-before-host-stack.json"
)
PROJECT_PREFIX = "urn:pulumi:{stack}::smoker-infra::"
ROOT_TYPE = "pulumi:pulumi:Stack$"
# The URNs the runbook moves (docs/operations.md): the component's children, not the component
# (dev keeps a `proxmox` component for its provider and the stack reference).
MOVED = (
    "proxmox-pool",
    "proxmox-lxc-template",
    "proxmox-cloud-image",
    "proxmox-vendor-data",
    "proxmox-vm-template",
    "proxmox-node-host-key",
    "proxmox-guest-nat",
)
# Inputs that change on purpose: an in-place update (the command runs its create again, which
# converges, and now also gives the bridge its gateway address), never a replacement.
UPDATED_IN_PLACE = {"proxmox-guest-nat": {"create"}}


def engine_urn(urn: str) -> str:
    """The engine leaves the root stack's type out of its children's URNs; the mocks keep it."""
    return urn.replace(f"::{ROOT_TYPE}", "::")


def old_dev() -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = json.loads(FIXTURE.read_text())["resources"]
    for r in resources:
        r["urn"] = engine_urn(r["urn"])
        r["provider"] = r["provider"] and engine_urn(r["provider"])
        r["parent"] = r["parent"] and engine_urn(r["parent"])
    return resources


def _at_root(resource: dict[str, Any], stack: str) -> str:
    return f"{PROJECT_PREFIX.format(stack=stack)}{resource['type']}::{resource['name']}"


def state_move(resources: list[dict[str, Any]], urns: list[str], dest: str) -> dict[str, str]:
    """Old URN -> URN in `dest` of every moved resource and every copied provider."""
    by_urn = {r["urn"]: r for r in resources}
    moving = set(urns)
    for r in resources:  # children move with their parent
        if r["parent"] in moving:
            moving.add(r["urn"])
    renamed = {urn: _at_root(by_urn[urn], dest) for urn in moving}
    for urn in moving:
        reference = by_urn[urn]["provider"]
        if reference:
            provider = reference.rsplit("::", 1)[0]
            # in this fixture every provider's parent stays behind: each copy goes to the root
            renamed[provider] = _at_root(by_urn[provider], dest)
    return renamed


def _host_urns(resource: Resource) -> set[str]:
    """The URNs the engine matches a host resource's old state by: its own and its aliases'."""
    urns = {engine_urn(resource.urn)}
    for alias in resource.aliases:
        if alias.get("spec", {}).get("noParent"):
            urns.add(f"{PROJECT_PREFIX.format(stack='host')}{resource.type}::{resource.name}")
    return urns


def _without_id(provider_reference: str | None) -> str:
    return engine_urn(provider_reference or "").rsplit("::", 1)[0]


@pytest.fixture(scope="module")
def host() -> Synthesis:
    return synthesize("host")


@pytest.fixture(scope="module")
def moved() -> dict[str, str]:
    resources = old_dev()
    urns = [r["urn"] for r in resources if r["name"] in MOVED]
    assert len(urns) == len(MOVED)
    return state_move(resources, urns, "host")


@pytest.mark.parametrize("name", MOVED)
def test_the_host_program_finds_each_moved_object_unchanged(
    name: str, host: Synthesis, moved: dict[str, str]
) -> None:
    (old,) = [r for r in old_dev() if r["name"] == name]
    (new,) = [r for r in host.resources if r.name == name and r.type == old["type"]]
    assert moved[old["urn"]] in _host_urns(new), "the host program would create it anew"
    assert moved[old["provider"].rsplit("::", 1)[0]] == _without_id(new.provider)
    assert new.protect == old["protect"]
    changed = {
        k
        for k in old["inputs"].keys() | new.inputs.keys()
        if old["inputs"].get(k) != new.inputs.get(k)
    }
    assert changed == UPDATED_IN_PLACE.get(name, set())


def test_the_copied_providers_are_the_host_programs_providers(
    host: Synthesis, moved: dict[str, str]
) -> None:
    providers = {
        engine_urn(r.urn) for r in host.resources if r.type.startswith("pulumi:providers:")
    }
    copies = {new for old, new in moved.items() if "pulumi:providers:" in old}
    assert copies == {
        "urn:pulumi:host::smoker-infra::pulumi:providers:proxmoxve::proxmox-provider",
        "urn:pulumi:host::smoker-infra::pulumi:providers:command::command",
    }
    assert copies <= providers


def test_dev_deletes_nothing_and_keeps_its_guests_unchanged() -> None:
    dev = synthesize("dev")
    assert not {r.name for r in dev.resources} & set(MOVED)  # moved out of dev's state: no delete
    for old in old_dev():
        if old["type"].startswith("proxmoxve:index/") and old["name"] not in MOVED:
            (new,) = [r for r in dev.resources if r.name == old["name"] and r.type == old["type"]]
            assert new.inputs == old["inputs"], f"{old['name']} would change"
            assert engine_urn(new.urn) == old["urn"]
    # dev's provider moved to the stack root; its alias is the URN it had under the component
    (provider,) = dev.by_type("pulumi:providers:proxmoxve")
    (old_provider,) = [r for r in old_dev() if r["type"] == "pulumi:providers:proxmoxve"]
    assert engine_urn(provider.urn) != old_provider["urn"]
    (alias,) = provider.aliases
    assert engine_urn(alias["spec"]["parentUrn"]) == old_provider["parent"]
