"""The dev stack rehearsed on test guests: what maps to what, and the config a test guest needs.

Shared by tests/tier3/test_rehearsal.py and `make bench`. The program (`stacks.platform.build`)
runs under the engine model of `tests.sdk.rehearsal`; its resources are applied like this:

* `proxmoxve:index/containerLegacy:ContainerLegacy` dev-cloud and
  `proxmoxve:index/vmLegacy:VmLegacy` virtual-smoker-device: a fresh systemd test guest each, at a
  fixed address on a harness network (so a rebuilt guest gets the address of the old one, as a
  rebuilt LXC keeps its configured IP). Creating the resource claims the guest; deleting it
  removes the guest; a replacement rebuilds it (delete-then-create only with
  deleteBeforeReplace: create-before-delete starts a second guest at the same address, which the
  harness network refuses, exactly the collision it would be on Proxmox).
* What Proxmox does for a new guest before the program's commands reach it is done here by the
  harness: the LXC's `ssh_keys` and the VM's cloud-init user `smoker` (passwordless sudo) with
  the stack's guest key.
* Every other Proxmox resource, the explicit providers, and the NAT command on the Proxmox host:
  not applied ("skipped: needs Proxmox"); their inputs are still diffed like any resource.
* Device-VM steps that cannot run in a container guest: see `DEVICE_SKIPS`.
* Commands: pulumi-command's remote Command over real SSH; the Release, MongoUsers and the
  device VM's DesiredRelease: the SDK's dynamic provider host. The DesiredRelease publishes on
  dev-cloud and pushes to the device guest, whose agent (installed by the program's own steps)
  deploys it. Two STAND-INs there: the device images are the registry stand-in's (the device
  service is the backend stand-in on 3003, the smoker UI the frontend stand-in on 8080), and the
  published compose file's `platform: linux/arm/v7` is swapped to `linux/amd64` in the
  registration's inputs (`Amd64Device`) before the provider signs it: the guest is x86-64 and
  cannot emulate arm/v7 (see `ARM`). The agent's `https://` source (dev-cloud's tailnet name)
  does not resolve here: the agent takes the pushed copy.
* The registry stand-in is plain HTTP: right after the program's own Docker daemon config step,
  the harness adds it to the guest daemon's insecure registries (production pulls from Docker
  Hub over TLS and needs no such setting).
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config import StackConfig
from stacks.platform import load_stack_config
from testbed.harness import Engine, Guest, HarnessError
from testbed.harness.lifecycle import ensure_network, remove_network
from testbed.registry.push import trust_registry
from tests.configs import Raw, evolve, set_path, stack_raw
from tests.sdk.provider_host import ProviderHost
from tests.sdk.rehearsal import Engine as RehearsalEngine
from tests.sdk.rehearsal_providers import (
    DynamicProvider,
    NotApplied,
    Overrides,
    RemoteCommand,
    provider_map,
    ssh_runner,
)
from tests.sdk.rehearsal_state import (
    CREATE,
    REPLACE,
    Provider,
    Registration,
    ResourceState,
    Run,
    State,
    StepFailedError,
    StepRecord,
)
from tests.sdk.wire import UNKNOWN
from tests.tier3.baseline_env import docker_versions
from tests.tier3.release_env import (
    DEVICE_SERVICE,
    SMOKER_UI,
    N,
    Releases,
    publish_device_images,
    release_config,
)
from tools.registry import resolve, stand_in_digest
from tools.synth import SYNTH_HOST_KEY

NETWORK = "smoker-rehearsal"
SUBNET, GATEWAY = "169.254.78.0/24", "169.254.78.1"
CLOUD, DEVICE = "dev-cloud", "virtual-smoker-device"
ADDRESSES = {CLOUD: "169.254.78.20", DEVICE: "169.254.78.40"}
VM_USER = "smoker"
NEEDS_PROXMOX = "needs Proxmox"
# Steps of the device VM a container guest cannot run, and why (everything else runs for real).
ARM = (
    "arm/v7 emulation registers qemu in binfmt_misc, which is not namespaced: it would change "
    "the build machine's kernel for every container (and the VM's arm/v7 image is on Docker Hub, "
    "out of this sandbox's reach)"
)
DEVICE_SKIPS = {
    f"{DEVICE}-packages": "its package list is the qemu/binfmt arm emulation packages, which the "
    "test guest image lacks and cannot download (no mirror): " + ARM,
    f"{DEVICE}-swapfile": "swapon in a container guest would add swap to the build machine's "
    "kernel (a VM has its own)",
    f"{DEVICE}-arm-emulation": ARM,
    f"{DEVICE}-arm-check": ARM,
}
ARM_PLATFORM, TEST_PLATFORM = "platform: linux/arm/v7\n", "platform: linux/amd64\n"


# What the VM's readiness check asks cloud-init; the harness has done its first boot's work.
CLOUD_INIT_STANDIN = """#!/bin/sh
# STAND-IN for cloud-init in a test guest (smoker-infra rehearsal): the harness created the
# user and its key, as the VM template's cloud-init does on first boot; nothing else runs.
if [ "$1" = status ]; then echo "status: done"; fi
exit 0
"""


@dataclass
class RehearsalKey:
    """The stack's guest SSH key for the rehearsal (`guestSshPrivateKey`), test-only."""

    private_path: Path
    public: str

    @property
    def private(self) -> str:
        return self.private_path.read_text()


def make_key(directory: Path) -> RehearsalKey:
    path = directory / "guest_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rehearsal-test-only", "-f", path],
        check=True,
    )
    return RehearsalKey(path, path.with_suffix(".pub").read_text().strip())


@dataclass
class Slot:
    """The test guest standing in for one Proxmox guest resource."""

    name: str
    start_guest: Callable[..., Guest]
    key: RehearsalKey
    vm_user: str | None = None
    guest: Guest | None = None
    claimed: bool = False  # a create step has taken the current guest
    history: list[str] = field(default_factory=list)

    def start(self) -> Guest:
        guest = self.start_guest(
            hostname=self.name, network=NETWORK, ip=ADDRESSES[self.name], with_client=False
        )
        # what Proxmox puts in a new guest: the LXC's ssh_keys / the VM's cloud-init user
        pub = self.key.public
        guest.exec(f"echo '{pub}' >> /root/.ssh/authorized_keys")
        if self.vm_user:
            u = self.vm_user
            guest.exec(
                f"id {u} >/dev/null 2>&1 || useradd -m -s /bin/bash {u}; "
                f"install -d -m 700 -o {u} -g {u} /home/{u}/.ssh; "
                f"echo '{pub}' > /home/{u}/.ssh/authorized_keys; "
                f"chown {u}:{u} /home/{u}/.ssh/authorized_keys; "
                f"chmod 600 /home/{u}/.ssh/authorized_keys; "
                f"echo '{u} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users; "
                "chmod 440 /etc/sudoers.d/90-cloud-init-users"
            )
            guest.write_file("/usr/local/bin/cloud-init", CLOUD_INIT_STANDIN.encode(), 0o755)
        guest.key_path = self.key.private_path  # the harness reaches it with the stack's key
        self.guest = guest
        self.claimed = False
        self.history.append(guest.name)
        return guest

    def stop(self) -> None:
        if self.guest is not None:
            self.guest.stop()
            self.guest = None


class TestGuest:
    """A Proxmox guest resource mapped to a test guest (see the module docstring)."""

    def __init__(self, slot: Slot) -> None:
        self.slot = slot

    def diff(self, reg: Registration, old: ResourceState) -> tuple[str, str]:
        return NotApplied(NEEDS_PROXMOX).diff(reg, old)

    def create(
        self, reg: Registration, preview: bool, record: StepRecord
    ) -> tuple[str, dict[str, Any]]:
        vmid = str(int(reg.inputs["vmId"]))
        if preview:
            return vmid, dict(reg.inputs)
        if self.slot.guest is None or self.slot.claimed:
            old = self.slot.guest
            try:
                self.slot.start()
            except HarnessError as exc:
                if old is None:
                    raise
                raise StepFailedError(
                    reg.name,
                    f"a create-before-delete replacement starts the new guest while the old "
                    f"{old.name} still holds {old.host} (on Proxmox: its VMID and IP), and it "
                    f"collides: the guest needs deleteBeforeReplace ({exc})",
                ) from exc
        self.slot.claimed = True
        assert self.slot.guest is not None
        record.reason = f"test guest {self.slot.guest.name} at {self.slot.guest.host}"
        return vmid, dict(reg.inputs)

    def update(
        self, reg: Registration, old: ResourceState, preview: bool, record: StepRecord
    ) -> dict[str, Any]:
        record.reason = f"skipped: {NEEDS_PROXMOX} (a guest setting change)"
        return dict(reg.inputs)

    def delete(self, old: ResourceState, record: StepRecord) -> None:
        self.slot.stop()


class AfterStep:
    """A provider that calls `hook` after its create/update ran (harness adaptations)."""

    def __init__(self, inner: Provider, hook: Callable[[], None]) -> None:
        self.inner, self.hook = inner, hook

    def diff(self, reg: Registration, old: ResourceState) -> tuple[str, str]:
        return self.inner.diff(reg, old)

    def create(
        self, reg: Registration, preview: bool, record: StepRecord
    ) -> tuple[str, dict[str, Any]]:
        result = self.inner.create(reg, preview, record)
        if not preview:
            self.hook()
        return result

    def update(
        self, reg: Registration, old: ResourceState, preview: bool, record: StepRecord
    ) -> dict[str, Any]:
        result = self.inner.update(reg, old, preview, record)
        if not preview:
            self.hook()
        return result

    def delete(self, old: ResourceState, record: StepRecord) -> None:
        self.inner.delete(old, record)


@dataclass
class Rehearsal:
    """A rehearsal of the dev stack: test guests, the engine model, its state, the config."""

    engine: Engine
    slots: dict[str, Slot]
    key: RehearsalKey
    releases: Releases
    crun: Any
    host: ProviderHost
    state: State = field(default_factory=State)
    raw: Raw = field(default_factory=lambda: stack_raw("dev"))
    runs: list[Run] = field(default_factory=list)

    @property
    def cloud(self) -> Guest:
        guest = self.slots[CLOUD].guest
        assert guest is not None
        return guest

    @property
    def device(self) -> Guest:
        guest = self.slots[DEVICE].guest
        assert guest is not None
        return guest

    def base_config(self) -> Raw:
        """The dev stack's config for these test guests (what can be said in config)."""
        engine, compose = docker_versions(self.cloud)
        raw = stack_raw("dev")
        raw = set_path(raw, "sshAuthorizedKeys", [self.key.public])
        raw = set_path(raw, "guestSshPrivateKey", self.key.private, secret=True)
        raw = set_path(raw, "baseline.docker.engineVersion", engine)
        raw = set_path(raw, "baseline.docker.composeVersion", compose)
        raw = set_path(raw, "baseline.docker.bridgeIp", "169.254.90.1/24")
        raw = set_path(
            raw, "baseline.docker.addressPools", [{"base": "169.254.96.0/20", "size": 24}]
        )
        for name, address in ADDRESSES.items():
            raw = set_path(raw, f"guests.{name}.sshHost", address)
        return raw

    def adapt(self, cfg: StackConfig) -> StackConfig:
        """What config cannot say (its validation is production's): Debian's crun served over
        http from the test host, the release of version N from the registry stand-in, quick
        health checks (as `baseline_env.guest_stack_config` and `release_env.release_config`)."""
        docker = evolve(cfg.baseline.docker, crun=self.crun)
        cfg = evolve(cfg, baseline=evolve(cfg.baseline, docker=docker))
        cfg = release_config(cfg, self.releases, N)
        images = {
            **cfg.app.images,
            "deviceService": self.releases.ref(DEVICE_SERVICE),
            "smokerUi": self.releases.ref(SMOKER_UI),
        }
        return evolve(cfg, app=evolve(cfg.app, images=images))

    def build(self) -> None:
        from stacks.platform import build

        cfg = load_stack_config()
        assert isinstance(cfg, StackConfig)
        build(self.adapt(cfg))

    def providers(self) -> Callable[[Registration], Provider]:
        command = RemoteCommand(ssh_runner)
        skip = NotApplied(NEEDS_PROXMOX)
        by_name: dict[str, Provider] = {name: NotApplied(why) for name, why in DEVICE_SKIPS.items()}
        registry = self.releases.registry.address
        by_name[f"{CLOUD}-docker-config"] = AfterStep(
            command, lambda: trust_registry(self.cloud, registry)
        )
        by_name[f"{DEVICE}-docker-config"] = AfterStep(
            command, lambda: trust_registry(self.device, registry)
        )
        by_name[f"{DEVICE}-desired-release"] = Amd64Device(DynamicProvider(self.host))
        overrides = Overrides(
            by_name=by_name,
            by_type_prefix={
                "proxmoxve:index/containerLegacy:": TestGuest(self.slots[CLOUD]),
                "proxmoxve:index/vmLegacy:VmLegacy": _VmGuests(TestGuest(self.slots[DEVICE])),
                "proxmoxve:": skip,
                "pulumi:providers:": NotApplied("an explicit provider: no plugin here"),
            },
        )
        # A command on the Proxmox node does not run; what it would print (the node's host key,
        # read by the NAT step) is the synth stand-in, stable from run to run.
        on_node = NotApplied(NEEDS_PROXMOX, {"stdout": f"{SYNTH_HOST_KEY} root@pve", "stderr": ""})
        return provider_map(OnGuestsOnly(command, on_node), DynamicProvider(self.host), overrides)

    def digest_of(self, ref: str) -> str:
        """The digest a preview plans: the registry stand-in's for the images it serves (every
        release's here), the stand-in table's for any other."""
        if ref.startswith(f"{self.releases.registry.address}/"):
            return resolve(ref, insecure=True)
        return stand_in_digest(ref)

    def up(
        self, preview: bool = False, replace: tuple[str, ...] = (), raw: Raw | None = None
    ) -> Run:
        engine = RehearsalEngine(self.providers(), self.state, digest_of=self.digest_of)
        run = engine.up(self.build, raw or self.raw, preview=preview, replace=replace)
        if not preview:
            self.runs.append(run)
        return run

    def urn(self, name: str, type_prefix: str = "") -> str:
        (found,) = [
            u
            for u, r in self.state.resources.items()
            if u.endswith(f"::{name}") and r.type.startswith(type_prefix)
        ]
        return found


class Amd64Device:
    """The device VM's DesiredRelease with its compose file's arm/v7 platform swapped to the
    test guest's (see the module docstring); otherwise the dynamic provider as it is."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner

    @staticmethod
    def _swapped(reg: Registration) -> Registration:
        """(idempotent: diff and create see the same registration)"""
        for props in (reg.wire, reg.inputs, reg.wire.get("compose")):
            if not isinstance(props, dict):  # the wire's compose: a string or an output value
                continue
            key = "compose" if "compose" in props else "value"
            compose = props.get(key)
            if isinstance(compose, str) and ARM_PLATFORM in compose:
                assert compose.count(ARM_PLATFORM) == 2, compose  # the device service and UI
                props[key] = compose.replace(ARM_PLATFORM, TEST_PLATFORM)
        return reg

    def diff(self, reg: Registration, old: ResourceState) -> tuple[str, str]:
        return self.inner.diff(self._swapped(reg), old)

    def create(
        self, reg: Registration, preview: bool, record: StepRecord
    ) -> tuple[str, dict[str, Any]]:
        return self.inner.create(self._swapped(reg), preview, record)

    def update(
        self, reg: Registration, old: ResourceState, preview: bool, record: StepRecord
    ) -> dict[str, Any]:
        return self.inner.update(self._swapped(reg), old, preview, record)

    def delete(self, old: ResourceState, record: StepRecord) -> None:
        self.inner.delete(old, record)


class OnGuestsOnly:
    """Commands run on the test guests; a command on any other host (the Proxmox node: its NAT,
    its host key) is not applied."""

    def __init__(self, command: Provider, skip: Provider) -> None:
        self.command, self.skip = command, skip

    def _for(self, inputs: dict[str, Any]) -> Provider:
        connection = inputs.get("connection")
        if not isinstance(connection, dict) or connection.get("host") == UNKNOWN:
            # unknown in a preview: a guest's connection waits on its readiness output; the
            # node's (pinned from a command that is not run) never is
            return self.command
        return self.command if connection.get("host") in ADDRESSES.values() else self.skip

    def diff(self, reg: Registration, old: ResourceState) -> tuple[str, str]:
        return self._for(reg.inputs).diff(reg, old)

    def create(
        self, reg: Registration, preview: bool, record: StepRecord
    ) -> tuple[str, dict[str, Any]]:
        return self._for(reg.inputs).create(reg, preview, record)

    def update(
        self, reg: Registration, old: ResourceState, preview: bool, record: StepRecord
    ) -> dict[str, Any]:
        return self._for(reg.inputs).update(reg, old, preview, record)

    def delete(self, old: ResourceState, record: StepRecord) -> None:
        self._for(old.inputs).delete(old, record)


class _VmGuests:
    """The VM template (`proxmox-vm-template`) is a VmLegacy too: only the device is a guest."""

    def __init__(self, device: TestGuest) -> None:
        self.device = device
        self.skip = NotApplied(NEEDS_PROXMOX)

    def _for(self, name: str) -> Provider:
        return self.device if name == DEVICE else self.skip

    def diff(self, reg: Registration, old: ResourceState) -> tuple[str, str]:
        return self._for(reg.name).diff(reg, old)

    def create(
        self, reg: Registration, preview: bool, record: StepRecord
    ) -> tuple[str, dict[str, Any]]:
        return self._for(reg.name).create(reg, preview, record)

    def update(
        self, reg: Registration, old: ResourceState, preview: bool, record: StepRecord
    ) -> dict[str, Any]:
        return self._for(reg.name).update(reg, old, preview, record)

    def delete(self, old: ResourceState, record: StepRecord) -> None:
        self._for(old.urn.rsplit("::", 1)[-1]).delete(old, record)


@contextlib.contextmanager
def rehearsal(
    engine: Engine, start_guest: Callable[..., Guest], releases: Releases, crun: Any
) -> Iterator[Rehearsal]:
    """Test guests for both Proxmox guests (started, not yet configured) and the engine model."""
    ensure_network(engine, NETWORK, SUBNET, GATEWAY)
    publish_device_images(engine, releases.registry, (N,))
    with tempfile.TemporaryDirectory(prefix="rehearsal-") as tmp, ProviderHost() as host:
        key = make_key(Path(tmp))
        slots = {
            CLOUD: Slot(CLOUD, start_guest, key),
            DEVICE: Slot(DEVICE, start_guest, key, vm_user=VM_USER),
        }
        try:
            for slot in slots.values():
                slot.start()
            r = Rehearsal(engine, slots, key, releases, crun, host)
            r.raw = r.base_config()
            yield r
        finally:
            for slot in slots.values():
                slot.stop()
            remove_network(engine, NETWORK)


def summary(run: Run) -> str:
    lines = [f"{len(run.steps)} steps, {run.commands} commands, {run.seconds:.1f} s"]
    for step in sorted(run.steps.values(), key=lambda s: s.start):
        if step.op in (CREATE, REPLACE) or step.commands or step.reason:
            lines.append(
                f"  {step.start:7.1f} {step.end:7.1f}  {step.op:8} {step.name}  {step.reason}"
            )
    return "\n".join(lines)


# Groups of steps whose wall-clock windows are worth reporting (first start, last end).
PHASES = {
    "dev-cloud baseline": (f"{CLOUD}-ready", f"{CLOUD}-logrotate"),
    "dev-cloud Tailscale": (f"{CLOUD}-tailscale-install", f"{CLOUD}-tailscale-serve"),
    "dev-cloud app files + MongoDB": (f"{CLOUD}-mongo-env", f"{CLOUD}-mongo-bootstrap"),
    "dev-cloud users + release": (f"{CLOUD}-mongo-users", f"{CLOUD}-release"),
    "device baseline": (f"{DEVICE}-ready", f"{DEVICE}-logrotate"),
    "device Tailscale": (f"{DEVICE}-tailscale-install", f"{DEVICE}-tailscale-serve"),
}


def phase_windows(run: Run) -> dict[str, tuple[float, float]]:
    """{phase: (start, end)} in seconds from the run's start, for the phases that ran."""
    by_name = {s.name: s for s in run.steps.values()}
    windows = {}
    for phase, (first, last) in PHASES.items():
        if first in by_name and last in by_name and by_name[last].end > 0:
            windows[phase] = (by_name[first].start, by_name[last].end)
    return windows
