"""The host stack owns every host-wide Proxmox object and the runner guest; dev and prod read the
host-wide IDs from its outputs through a stack reference, and no two stacks own one object."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from components.proxmox_host import SHARED_KEYS, SHARED_OUTPUT
from config import HostStackConfig
from rendering.proxmox_host import NODE_CA_FILE, ca_certificate_of
from tests.configs import set_path, stack_raw
from tests.sdk.wire import connection
from tools.synth import (
    SECRET_MARKER,
    SYNTH_HOST_KEY,
    SYNTH_NODE_CA,
    Resource,
    Synthesis,
    synthesize,
)

LXC = "proxmoxve:index/containerLegacy:ContainerLegacy"
VM = "proxmoxve:index/vmLegacy:VmLegacy"
COMMAND = "command:remote:Command"
STACK_REFERENCE = "pulumi:pulumi:StackReference"
HOST_WIDE = {
    "proxmoxve:index/poolLegacy:PoolLegacy",
    "proxmoxve:download/fileLegacy:FileLegacy",
    "proxmoxve:index/fileLegacy:FileLegacy",
}


@pytest.fixture(scope="module")
def host() -> Synthesis:
    return synthesize("host")


@pytest.fixture(scope="module")
def dev() -> Synthesis:
    return synthesize("dev")


@pytest.fixture(scope="module")
def prod() -> Synthesis:
    return synthesize("prod")


def test_only_the_host_stack_creates_host_wide_objects(
    host: Synthesis, dev: Synthesis, prod: Synthesis
) -> None:
    assert {r.type for r in host.resources} >= HOST_WIDE
    for other in (dev, prod):
        assert not HOST_WIDE & {r.type for r in other.resources}
        names = {r.name for r in other.resources}
        assert not names & {"proxmox-vm-template", "proxmox-guest-nat", "proxmox-node-ca"}
    template = host.one(VM, "proxmox-vm-template")
    assert template.inputs["vmId"] == 9000 and template.inputs["template"] is True
    assert template.inputs["agent"] == {"enabled": True}
    assert template.inputs["initialization"]["vendorDataFileId"].startswith("local:snippets/")
    host_wide = [r for r in host.resources if r.type in HOST_WIDE or r.type == VM]
    assert host_wide and all(r.protect for r in host_wide)
    assert host.one(COMMAND, "proxmox-guest-nat").protect
    downloads = {r.name: r.inputs for r in host.by_type("proxmoxve:download/fileLegacy:FileLegacy")}
    assert downloads["proxmox-lxc-template"]["contentType"] == "vztmpl"
    assert downloads["proxmox-lxc-template"]["checksumAlgorithm"] == "sha256"
    assert len(downloads["proxmox-lxc-template"]["checksum"]) == 64
    assert downloads["proxmox-cloud-image"]["contentType"] == "import"


def test_kept_on_delete_exactly_where_losing_them_strands_the_other_stacks(
    host: Synthesis,
) -> None:
    # NAT: every guest's way out; the snippet: the device VM boots with it. The others have a
    # pinned identity that a replacement must free first, and the engine skips the provider's
    # Delete of a retained resource in a replacement too (deploy/step.go, DeleteStep.Apply).
    retained = {r.name for r in host.resources if r.retain_on_delete}
    assert retained == {"proxmox-guest-nat", "proxmox-vendor-data"}


def test_nat_is_idempotent_persistent_and_gives_the_bridge_its_gateway(host: Synthesis) -> None:
    nat = host.one(COMMAND, "proxmox-guest-nat").inputs
    assert "iptables -t nat -C" in nat["create"] and "systemctl enable --now" in nat["create"]
    assert "net.ipv4.ip_forward = 1" in nat["create"]
    assert 'grep -qF " 10.20.0.1/24 "' in nat["create"]
    assert "ip addr add 10.20.0.1/24 dev vmbr0" in nat["create"]
    assert "systemctl disable --now" in nat["delete"]


def test_commands_on_the_node_pin_its_host_key(host: Synthesis) -> None:
    seen = host.one(COMMAND, "proxmox-node-host-key")
    assert connection(seen).get("hostKey") is None  # trust on first use, read-only
    for name in ("proxmox-guest-nat", "proxmox-node-ca"):
        command = host.one(COMMAND, name)
        assert connection(command)["hostKey"] == SYNTH_HOST_KEY and seen.urn in command.depends_on
    configured = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5vZGVIb3N0S2V5RnJvbUNvbmZpZzAwMDAwMDAwMDAw"
    pinned = synthesize("host", *set_path(stack_raw("host"), "proxmox.sshHostKey", configured))
    assert not [r for r in pinned.by_type(COMMAND) if r.name == "proxmox-node-host-key"]
    assert connection(pinned.one(COMMAND, "proxmox-guest-nat"))["hostKey"] == configured


def test_the_node_ca_is_read_from_the_node_and_checked(host: Synthesis) -> None:
    assert host.one(COMMAND, "proxmox-node-ca").inputs["create"] == f"cat {NODE_CA_FILE}"
    assert ca_certificate_of(SYNTH_NODE_CA.replace("\n", "\r\n")) == SYNTH_NODE_CA
    for garbage in ("", "cat: /etc/pve/pve-root-ca.pem: No such file", SYNTH_NODE_CA * 2):
        with pytest.raises(ValueError, match="not one PEM certificate"):
            ca_certificate_of(garbage)


def test_the_host_stack_exports_the_ids_dev_and_prod_read(host: Synthesis) -> None:
    shared = host.outputs[SHARED_OUTPUT]
    assert set(shared) == set(SHARED_KEYS)
    assert shared == {
        "lxcTemplateFileId": "local:vztmpl/ubuntu-22.04-server-cloudimg-amd64-root.tar.xz",
        "vendorDataFileId": "local:snippets/smart-smoker-vendor-data.yaml",
        "vmTemplateId": 9000,
        "pool": "smart-smoker",
        "vmDatastore": "local-lvm",
    }
    assert host.outputs["environment"] == "host"
    assert host.outputs["guests"]["github-runner"]["vmid"] == 105


def _reference(synthesis: Synthesis) -> Resource:
    (reference,) = synthesis.by_type(STACK_REFERENCE)
    return reference


def _from_reference(resource: Resource, reference: Resource, key: str) -> bool:
    return reference.urn in resource.property_dependencies.get(key, [])


def test_dev_and_prod_take_host_ids_only_from_the_host_stack(
    host: Synthesis, dev: Synthesis, prod: Synthesis
) -> None:
    shared = host.outputs[SHARED_OUTPUT]
    for synthesis, lxc_name in ((dev, "dev-cloud"), (prod, "prod-cloud")):
        reference = _reference(synthesis)
        assert reference.read_id == "organization/smoker-infra/host"
        lxc = synthesis.one(LXC, lxc_name)
        assert lxc.inputs["operatingSystem"]["templateFileId"] == shared["lxcTemplateFileId"]
        assert lxc.inputs["poolId"] == shared["pool"]
        assert lxc.inputs["disk"]["datastoreId"] == shared["vmDatastore"]
        for key in ("operatingSystem", "poolId", "disk"):
            assert _from_reference(lxc, reference, key), f"{lxc_name}.{key} is not from the host"
    vm = dev.one(VM, "virtual-smoker-device")
    # the stack output crossed the engine as a float (protobuf Struct); the clone needs an int
    assert vm.wire_inputs["clone"]["vmId"] == 9000 and vm.inputs["clone"]["vmId"] == 9000
    assert vm.inputs["initialization"]["vendorDataFileId"] == shared["vendorDataFileId"]
    assert _from_reference(vm, _reference(dev), "clone")


def test_the_host_stack_name_is_configurable() -> None:
    raw = set_path(stack_raw("prod"), "hostStack", {"organization": "acme", "stack": "lab-host"})
    assert _reference(synthesize("prod", *raw)).read_id == "acme/smoker-infra/lab-host"


@pytest.mark.parametrize("stack", ["dev", "prod"])
@pytest.mark.parametrize(
    ("outputs", "missing"),
    [
        ({}, SHARED_KEYS),
        ({SHARED_OUTPUT: {"pool": "smart-smoker", "vmDatastore": "local-lvm"}}, SHARED_KEYS[:3]),
    ],
    ids=["host-never-applied", "host-outputs-partial"],
)
def test_a_missing_host_output_stops_the_program_with_the_fix(
    stack: str, outputs: dict[str, Any], missing: tuple[str, ...]
) -> None:
    with pytest.raises(pulumi.RunError) as caught:  # printed without a traceback
        synthesize(stack, stack_outputs=outputs)
    message = str(caught.value)
    assert "the host stack 'organization/smoker-infra/host' has no output" in message
    assert all(f"hostShared.{key}" in message for key in missing)
    assert "`pulumi up --stack host`" in message and "hostStack" in message


def _owned(synthesis: Synthesis) -> set[tuple[str, str]]:
    """Every Proxmox object a stack manages, by the identity Proxmox knows it by."""
    owned: set[tuple[str, str]] = set()
    for r in synthesis.resources:
        i = r.inputs
        if r.type in (LXC, VM):
            owned.add(("vmid", str(i["vmId"])))
            owned.add(("name", i.get("name") or i["initialization"]["hostname"]))
            for config in i.get("initialization", {}).get("ipConfigs", []):
                owned.add(("address", config["ipv4"]["address"].split("/")[0]))
        elif r.type == "proxmoxve:index/poolLegacy:PoolLegacy":
            owned.add(("pool", i["poolId"]))
        elif r.type == "proxmoxve:download/fileLegacy:FileLegacy":
            owned.add(("file", f"{i['datastoreId']}:{i['contentType']}/{i['fileName']}"))
        elif r.type == "proxmoxve:index/fileLegacy:FileLegacy":
            name = i["sourceRaw"]["fileName"]
            owned.add(("file", f"{i['datastoreId']}:{i['contentType']}/{name}"))
        elif r.type == "proxmoxve:backup/job:Job":
            owned.add(("backup job", i["resourceId"]))
        elif r.type == COMMAND and r.parent and r.parent.endswith("::proxmox"):
            owned.add(("node command", r.name))
    return owned


def test_no_two_stacks_own_the_same_proxmox_object(
    host: Synthesis, dev: Synthesis, prod: Synthesis
) -> None:
    stacks = {"host": _owned(host), "dev": _owned(dev), "prod": _owned(prod)}
    assert ("vmid", "105") in stacks["host"] and ("vmid", "9000") in stacks["host"]
    assert ("address", "10.20.0.10") in stacks["host"] and ("pool", "smart-smoker") in stacks[
        "host"
    ]
    assert ("vmid", "104") in stacks["dev"] and ("vmid", "106") in stacks["prod"]
    names = sorted(stacks)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not stacks[a] & stacks[b], f"{a} and {b} both manage {stacks[a] & stacks[b]}"


def test_the_runner_guest(host: Synthesis) -> None:
    lxc = host.one(LXC, "github-runner")
    i = lxc.inputs
    assert i["vmId"] == 105 and i["unprivileged"] is True and lxc.protect
    assert i["initialization"]["hostname"] == "github-runner"
    assert i["initialization"]["ipConfigs"][0]["ipv4"]["address"] == "10.20.0.10/24"
    assert i["tags"] == ["github", "runner"]
    assert i["features"] == {"nesting": True, "keyctl": True}
    assert i["devicePassthroughs"] == [{"path": "/dev/net/tun"}]
    depends = set(lxc.depends_on)
    for name in ("proxmox-vm-template", "proxmox-guest-nat", "proxmox-pool"):
        assert any(urn.endswith(f"::{name}") for urn in depends)
    assert not host.by_type("pulumi-python:dynamic:Resource"), "the host stack deploys no release"
    assert not [r for r in host.resources if r.type == "smoker:app:AppStack"]


def test_the_runner_is_set_up_after_tailscale_with_the_token_kept_secret(host: Synthesis) -> None:
    from rendering.runner import CA_STEP

    runner = [r for r in host.resources if r.parent and r.parent.endswith("::github-runner-runner")]
    names = [r.name.removeprefix("github-runner-") for r in runner]
    assert {CA_STEP, "runner-install", "pulumi-cli", "runner-token", "runner-register"} <= set(
        names
    )
    serve = host.one(COMMAND, "github-runner-tailscale-serve").urn
    assert all(serve in r.depends_on for r in runner), "a runner step may run beside Tailscale"
    token = host.one(COMMAND, "github-runner-runner-token")
    assert token.inputs["stdin"] == SECRET_MARKER and token.inputs["logging"] == "none"
    assert {"stdin", "stdout", "stderr"} <= set(token.additional_secret_outputs)
    manifest = json.dumps([r.as_json() for r in host.resources]) + json.dumps(host.files)
    assert "synth_placeholder_githubRunnerToken" not in manifest
    # the node's CA, read over the node's pinned SSH, is the CA step's stdin
    ca = host.one(COMMAND, f"github-runner-{CA_STEP}")
    assert ca.inputs["stdin"] == SYNTH_NODE_CA
    assert host.one(COMMAND, "proxmox-node-ca").urn in ca.property_dependencies["stdin"]
    assert host.outputs["guests"]["github-runner"]["runner"] == {
        "name": "github-runner",
        "labels": ["self-hosted", "linux", "x64", "smart-smoker"],
        "version": "2.329.0",
        "pulumiVersion": "3.272.0",
    }


def test_the_runner_cli_is_the_version_the_workflows_pin(host: Synthesis) -> None:
    """The deploy jobs check `pulumi version` on the runner against their pin, which is the
    SDK's version in requirements.txt (tests/static/test_workflows.py)."""
    from pathlib import Path

    requirements = (Path(__file__).resolve().parents[2] / "requirements.txt").read_text()
    (sdk,) = [
        line.split("==")[1] for line in requirements.splitlines() if line.startswith("pulumi==")
    ]
    assert isinstance(host.config, HostStackConfig)
    assert host.config.runner.pulumi.version == sdk


def test_a_guest_on_the_templates_vmid_stops_before_any_guest_registers() -> None:
    raw = set_path(stack_raw("dev"), "guests.dev-cloud.vmid", 9000)
    with pytest.raises(pulumi.RunError, match=r"guests.dev-cloud.vmid = 9000 is the VMID of the"):
        synthesize("dev", *raw)
