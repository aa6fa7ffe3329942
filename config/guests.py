"""The guests (`guests.<name>`): Proxmox guests (sizes, address, access, LXC features, VM
settings) and existing machines (`kind: host`, the physical smoker: no Proxmox resource)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, ClassVar

from pydantic import Field, ValidationInfo, model_validator
from pydantic.json_schema import SkipJsonSchema

from config.app import IMAGE_REFERENCE
from config.errors import REQUIRED, Problem, fail, problem
from config.fields import (
    Bool,
    HostKey,
    Hostname,
    Int,
    Interface,
    Model,
    Text,
    TextList,
    UserName,
    one_of,
    ranged,
    rule,
)
from config.proxmox import HostShared, NetworkSettings, Vmid
from config.tailscale import TailscaleSettings

GUEST_NAME = r"[a-z0-9][a-z0-9-]{0,62}"


def _tags(tags: tuple[str, ...]) -> tuple[str, ...]:
    bad = [t for t in tags if not re.fullmatch(r"[a-z0-9_-]+", t)]
    if bad:
        raise fail(
            f"tags {bad} are not lower-case [a-z0-9_-] (Proxmox lower-cases and sorts tags, "
            "so anything else shows a permanent diff)",
            "use lower-case tags",
        )
    return tuple(sorted(set(tags)))


def _port_rules(rules: tuple[str, ...]) -> tuple[str, ...]:
    for item in rules:
        match = re.fullmatch(r"(\d{1,5})/(tcp|udp)", item)
        if not match or not 1 <= int(match.group(1)) <= 65535:
            raise fail(f"'{item}' is not PORT/tcp or PORT/udp", "write e.g. 8080/tcp")
    return rules


class LxcFeatures(Model):
    nesting: Bool = Field(True, description="nested containers (Docker needs it)")
    keyctl: Bool = Field(True, description="keyctl syscalls (Docker needs it; root@pam only)")
    tun: Bool = Field(True, description="pass /dev/net/tun through (Tailscale; root@pam only)")


LXC_ONLY = ("features",)
VM_ONLY = ("user", "machine", "bios")


class GuestSpec(Model):
    """One Proxmox guest: an LXC container (`kind: lxc`) or a VM cloned from the template."""

    FIXES: ClassVar[dict[str, str]] = {
        "kind": "set kind to lxc or vm (or host: an existing machine)",
        "vmid": "pin vmid to a free VMID (100..999999)",
        "hostname": "use e.g. smart-smoker-dev-cloud",
        "ipv4": "set ipv4 like 10.20.0.20/24",
        "cores": "set cores",
        "memoryMb": "set memoryMb",
        "swapMb": "set swapMb",
    }
    name: SkipJsonSchema[str] = Field(alias="<name>")
    kind: Annotated[Text, one_of("lxc", "vm", fix="set kind to lxc, vm or host")] = Field(
        description="lxc: a container from the template; vm: a clone of the VM template"
    )
    vmid: Vmid = Field(description="the guest's VMID, pinned", examples=[104])
    hostname: Hostname = Field(
        description="the guest's host name", examples=["smart-smoker-dev-cloud"]
    )
    ipv4: Interface = Field(
        description="static address with the guest network's prefix", examples=["10.20.0.20/24"]
    )
    cores: Annotated[Int, ranged(1, 64, "cores")] = Field(description="CPU cores", examples=[2])
    memory_mb: Annotated[Int, ranged(256, 262_144, "MB")] = Field(
        description="memory in MB", examples=[4096]
    )
    swap_mb: Annotated[Int, ranged(0, 65_536, "MB")] = Field(
        description="swap in MB (a VM: a swapfile inside it)", examples=[1024]
    )
    disk_gb: Annotated[Int, ranged(4, 4_096, "GB")] | None = Field(
        None, description="root disk in GB (required for lxc; a VM keeps its template's unless set)"
    )
    tags: Annotated[TextList, rule(_tags)] = Field((), description="Proxmox tags (lower-case)")
    protect: Bool = Field(
        False, description="protect from deletion (default and required: true in prod)"
    )
    firewall: Bool = Field(True, description="enable the Proxmox firewall on the NIC")
    start_on_boot: Bool = Field(True, description="start with the node")
    ssh_host: Text = Field("", description="address to reach the guest over SSH (default: ipv4's)")
    ssh_host_key: HostKey | None = Field(
        None, description="the guest's SSH host key (pinned); unset: the key the guest reports"
    )
    firewall_allow: Annotated[TextList, rule(_port_rules)] = Field(
        (), description="extra ports opened in ufw", examples=[["8080/tcp"]]
    )
    tailscale: TailscaleSettings | None = Field(None, description="join the tailnet")
    lxc_features: LxcFeatures | None = Field(
        None, alias="features", description="lxc only: container features"
    )
    vm_user: UserName | None = Field(
        None, alias="user", description="vm only: the cloud-init user (default smoker)"
    )
    machine: Annotated[Text, one_of("q35", "pc")] | None = Field(
        None, description="vm only: machine type (default q35)"
    )
    bios: Annotated[Text, one_of("ovmf", "seabios")] | None = Field(
        None, description="vm only: firmware (default ovmf)"
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        environment = (info.context or {}).get("environment")
        if data.get("protect") is None:
            data["protect"] = environment == "prod"
        kind = data.get("kind")
        if kind == "lxc" and data.get("features") is None:
            data["features"] = {}
        if kind == "vm":
            for key, default in (("user", "smoker"), ("machine", "q35"), ("bios", "ovmf")):
                if data.get(key) is None:
                    data[key] = default
        if data.get("sshHost") is None and isinstance(data.get("ipv4"), str):
            data["sshHost"] = data["ipv4"].split("/")[0].strip() or None
        return {k: v for k, v in data.items() if v is not None}

    @property
    def ssh_user(self) -> str:
        return "root" if self.kind == "lxc" else (self.vm_user or "smoker")

    def check(
        self,
        key: str,
        raw: dict[str, Any],
        environment: str,
        network: NetworkSettings | None,
        host_shared: HostShared | None,
    ) -> Iterator[Problem]:
        if environment == "prod" and not self.protect:
            yield problem(
                f"{key}.protect",
                False,
                "prod guests are always protected from deletion",
                "remove the setting (or set it to true)",
            )
        if self.kind == "lxc" and self.disk_gb is None:
            yield problem(f"{key}.diskGb", REQUIRED, "is required", "set diskGb")
        other = VM_ONLY if self.kind == "lxc" else LXC_ONLY
        for name in other:
            if name in raw:
                yield problem(
                    f"{key}.{name}",
                    raw[name],
                    f"is not a setting of a kind: {self.kind} guest",
                    "remove it",
                )
        if self.tailscale is not None:
            yield from self.tailscale.check(f"{key}.tailscale", environment)
        if network is not None:
            yield from _check_address(f"{key}.ipv4", self.ipv4, network)
        if host_shared is not None and self.vmid == host_shared.vm_template_id:
            yield problem(
                f"{key}.vmid",
                self.vmid,
                "is the VM template's VMID (hostShared.vmTemplateId)",
                "pick another VMID",
            )


def _check_address(
    key: str, ipv4: ipaddress.IPv4Interface, network: NetworkSettings
) -> Iterator[Problem]:
    cidr = network.cidr
    if ipv4.ip not in cidr:
        yield problem(
            key, str(ipv4), f"is outside the guest network {cidr}", f"pick a free address in {cidr}"
        )
    elif ipv4.network != cidr:
        yield problem(
            key,
            str(ipv4),
            f"has prefix /{ipv4.network.prefixlen} but the guest network is {cidr}",
            f"write it as {ipv4.ip}/{cidr.prefixlen}",
        )
    elif ipv4.ip in (cidr.network_address, cidr.broadcast_address):
        yield problem(key, str(ipv4), "is the network or broadcast address", "pick a host address")
    elif ipv4.ip == network.gateway:
        yield problem(
            key, str(ipv4), "is the gateway's address (the Proxmox host)", "pick another address"
        )


# ---------------------------------------------------------------------------------------------
# kind: host, an existing machine (the physical smoker)

# What only a Proxmox guest has; refused on a kind: host guest (the loader reports each).
PROXMOX_ONLY = (
    "vmid",
    "ipv4",
    "cores",
    "memoryMb",
    "swapMb",
    "diskGb",
    "features",
    "machine",
    "bios",
    "firewall",
    "startOnBoot",
    "protect",
)
ARCH_PLATFORMS = {"armhf": "linux/arm/v7", "arm64": "linux/arm64"}
HOST_KEY_FIX = (
    "pin the machine's own key: run `ssh-keyscan -t ed25519 <host>` and set sshHostKey to its "
    "last two fields (the machine already exists: its key is never trusted on first use)"
)


SERIAL_DEVICE = r"/dev/[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*"


def _serial_device(value: str) -> str:
    if not re.fullmatch(SERIAL_DEVICE, value) or ".." in value:
        raise fail(
            "is not an absolute /dev path",
            "give the serial device's node, e.g. /dev/ttyS0 (the GPIO UART) or /dev/ttyACM0",
        )
    return value


def _kiosk_image(value: str) -> str:
    match = IMAGE_REFERENCE.fullmatch(value)
    if match is None or not (match.group("tag") or "@sha256:" in value):
        raise fail(
            "is not an image pinned by a tag or a digest",
            "write repo:tag@sha256:<digest> (or at least repo:tag)",
        )
    return value


class KioskSettings(Model):
    """The kiosk (`electron_shell`): the smoker UI full-screen on the device's display."""

    enabled: Bool = Field(False, description="run the kiosk service")
    image: Annotated[Text, rule(_kiosk_image)] | None = Field(
        None,
        description="the kiosk image, repo:tag@sha256:<digest> or at least repo:tag "
        "(required when enabled)",
        examples=["benjr70/smart-smoker-electron-shell:v1.0.0"],
    )

    @model_validator(mode="after")
    def _image_when_enabled(self) -> KioskSettings:
        if self.enabled and self.image is None:
            raise fail(
                "is required when the kiosk is enabled",
                "set image to repo:tag@sha256:<digest> (or at least repo:tag), "
                "or set enabled: false",
                at="image",
            )
        return self


class DeviceSettings(Model):
    """What the device service needs of the machine."""

    serial_device: Annotated[Text, rule(_serial_device, pattern=f"^{SERIAL_DEVICE}$")] = Field(
        "/dev/ttyS0",
        description="the Arduino's serial device on the machine, passed to the device service "
        "as /dev/ttyS0 (a test machine: a stand-in node)",
        examples=["/dev/ttyS0"],
    )
    kiosk: KioskSettings = Field(default_factory=KioskSettings, description="the kiosk")


class HostSpec(Model):
    """An existing machine (`kind: host`, the physical smoker): SSH only, no Proxmox resource."""

    FIXES: ClassVar[dict[str, str]] = {
        "sshHost": "set sshHost to the machine's tailnet name or address, e.g. smoker",
        "sshHostKey": HOST_KEY_FIX,
        "hostname": "use the machine's host name, e.g. smoker",
    }
    name: SkipJsonSchema[str] = Field(alias="<name>")
    kind: Annotated[Text, one_of("host")] = Field(
        description="host: an existing machine reached over SSH (no Proxmox resource)"
    )
    ssh_host: Text = Field(description="the machine's tailnet name or address", examples=["smoker"])
    ssh_user: UserName = Field(
        "smoker", alias="user", description="the SSH user (sudo without a password)"
    )
    ssh_host_key: HostKey = Field(
        description="the machine's SSH host key (required: `ssh-keyscan -t ed25519 <host>`)"
    )
    arch: Annotated[Text, one_of("armhf", "arm64")] = Field(
        "armhf", description="the machine's Debian architecture (armhf: Raspberry Pi OS 32-bit)"
    )
    hostname: Hostname = Field(description="the machine's host name", examples=["smoker"])
    tags: Annotated[TextList, rule(_tags)] = Field((), description="tags (lower-case)")
    firewall_allow: Annotated[TextList, rule(_port_rules)] = Field(
        (), description="extra ports opened in ufw (a device's 3003 and 8080 always are)"
    )
    tailscale: TailscaleSettings | None = Field(None, description="join the tailnet")
    device: DeviceSettings = Field(
        default_factory=DeviceSettings, description="the serial device and the kiosk"
    )

    @property
    def platform(self) -> str:
        """The images' platform on this machine."""
        return ARCH_PLATFORMS[self.arch]

    def check(
        self,
        key: str,
        raw: dict[str, Any],
        environment: str,
        network: NetworkSettings | None,
        host_shared: HostShared | None,
    ) -> Iterator[Problem]:
        del raw, network, host_shared  # an existing machine is on no Proxmox network
        if self.tailscale is not None:
            yield from self.tailscale.check(f"{key}.tailscale", environment)


Guest = GuestSpec | HostSpec


def is_device(guest: Guest) -> bool:
    """A guest that runs the device service and updates by pull (the device agent): the
    device-simulation VM (kind vm) and the physical smoker (kind host). Kind lxc is a cloud
    guest (or the host stack's runner)."""
    return guest.kind != "lxc"


def refused_on_host(key: str, raw: dict[str, Any]) -> Iterator[Problem]:
    """The Proxmox-only settings of a kind: host guest's raw body, each by name (reported even
    when the rest of the body is invalid: every problem at once)."""
    for name in PROXMOX_ONLY:
        if name in raw:
            yield problem(
                f"{key}.{name}",
                raw[name],
                "is not a setting of a kind: host guest (an existing machine, not a Proxmox guest)",
                "remove it",
            )


def check_unique(guests: Sequence[Guest]) -> Iterator[Problem]:
    """No two guests share a VMID, host name, address or Tailscale host name."""
    rules: list[tuple[str, str, Any]] = [
        ("vmid", "VMID", lambda g: g.vmid if isinstance(g, GuestSpec) else None),
        ("hostname", "hostname", lambda g: g.hostname),
        ("ipv4", "address", lambda g: g.ipv4.ip if isinstance(g, GuestSpec) else None),
        (
            "tailscale.hostname",
            "Tailscale hostname",
            lambda g: g.tailscale and g.tailscale.hostname,
        ),
    ]
    for attr, label, get in rules:
        seen: dict[Any, str] = {}
        for guest in guests:
            value = get(guest)
            if value is None:
                continue
            if value in seen:
                yield problem(
                    f"guests.{guest.name}.{attr}",
                    str(value),
                    f"is the same {label} as guests.{seen[value]}",
                    f"give every guest its own {label}",
                )
            seen.setdefault(value, guest.name)
