"""The Proxmox node, the guest network and the host-wide objects.

Stack-file keys `proxmox`, `network`, `hostShared` (host stack) and `hostStack` (dev, prod).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar
from urllib.parse import urlparse

from pydantic import Field, model_validator

from config.errors import PROJECT, REQUIRED, Problem, fail, problem
from config.fields import (
    Address,
    Bool,
    HostKey,
    Hostname,
    HttpsUrl,
    Int,
    Model,
    Network,
    Text,
    pattern,
    ranged,
    rule,
)

VMID_MIN, VMID_MAX = 100, 999_999
VENDOR_DATA_FILE_NAME = "smart-smoker-vendor-data.yaml"
_CHECKSUM_LENGTHS = {"md5": 32, "sha1": 40, "sha224": 56, "sha256": 64, "sha384": 96, "sha512": 128}

Port = Annotated[Int, ranged(1, 65535, fix="use a TCP port 1..65535")]


def _vmid(value: int) -> int:
    if not VMID_MIN <= value <= VMID_MAX:
        raise fail(
            f"VMID must be between {VMID_MIN} and {VMID_MAX}",
            f"pin a free VMID ({VMID_MIN}..{VMID_MAX})",
        )
    return value


Vmid = Annotated[Int, rule(_vmid, minimum=VMID_MIN, maximum=VMID_MAX)]


def _endpoint(value: str) -> str:
    url = urlparse(value)
    if url.port is None:
        raise fail("names no port", "write https://<host>:8006/ (the API listens on 8006)")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise fail(
            "holds an API path", "give only https://<host>:8006/ (the provider adds /api2/json)"
        )
    return value


def _realm(value: str) -> str:
    if "@" not in value:
        raise fail("must include the realm", "use e.g. root@pam")
    return value


class ProxmoxSettings(Model):
    """The Proxmox VE API and SSH access to its node."""

    FIXES: ClassVar[dict[str, str]] = {
        "endpoint": "set proxmox.endpoint: https://<host>:8006/",
        "node": "set proxmox.node to the Proxmox node name (e.g. pve)",
    }
    endpoint: Annotated[HttpsUrl, rule(_endpoint)] = Field(
        description="the Proxmox API URL, with its port and no path (TLS verified unless insecure)",
        examples=["https://pve:8006/"],
    )
    node: Text = Field(description="the Proxmox node name", examples=["pve"])
    username: Annotated[Text, rule(_realm)] = Field(
        "root@pam", description="API user with its realm (only root@pam may set LXC keyctl)"
    )
    insecure: Bool = Field(False, description="skip TLS verification of the API")
    ssh_username: Text = Field("root", description="SSH user on the node (uploads, NAT)")
    ssh_address: Text = Field(
        "", description="SSH address of the node (default: the endpoint's host)"
    )
    ssh_port: Port = Field(22, description="SSH port of the node")
    ssh_host_key: HostKey | None = Field(
        None,
        description="the node's SSH host key; unset: recorded on first use, then pinned",
        examples=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA..."],
    )

    @model_validator(mode="before")
    @classmethod
    def _default_ssh_address(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("sshAddress") is None:
            try:
                host = urlparse(str(data.get("endpoint", ""))).hostname
            except ValueError:
                host = None
            return {**data, "sshAddress": host} if host else data
        return data


class NetworkSettings(Model):
    """The guest network behind the Proxmox bridge."""

    FIXES: ClassVar[dict[str, str]] = {
        "cidr": "use the guest network, e.g. 10.20.0.0/24",
        "gateway": "use the Proxmox host's address on the guest bridge",
    }
    cidr: Network = Field(description="the guest network", examples=["10.20.0.0/24"])
    gateway: Address = Field(
        description="the Proxmox host's address on the bridge (it masquerades the guests out)",
        examples=["10.20.0.1"],
    )
    bridge: Annotated[
        Text,
        pattern(r"[a-zA-Z][a-zA-Z0-9_.-]{0,14}", "is not a Linux bridge name", "use e.g. vmbr0"),
    ] = Field("vmbr0", description="the Proxmox bridge the guests attach to")
    dns: tuple[Address, ...] = Field(
        (), description="resolvers the guests use", examples=[["1.1.1.1", "8.8.8.8"]]
    )
    search_domain: Text | None = Field(None, description="DNS search domain of the guests")

    def check(self, key: str) -> Iterator[Problem]:
        cidr, gateway = self.cidr, self.gateway
        if gateway not in cidr:
            yield problem(
                f"{key}.gateway",
                str(gateway),
                f"is outside the guest network {cidr}",
                f"use an address inside {cidr} (the Proxmox host's bridge address)",
            )
        elif gateway in (cidr.network_address, cidr.broadcast_address):
            yield problem(
                f"{key}.gateway",
                str(gateway),
                "is the network or broadcast address",
                "use a host address",
            )
        if not self.dns:
            yield problem(f"{key}.dns", [], "needs at least one resolver", "use [1.1.1.1, 8.8.8.8]")
        for i, server in enumerate(self.dns):
            reachable = server == gateway or server in cidr
            if server.is_loopback or server.is_unspecified or (server.is_private and not reachable):
                yield problem(
                    f"{key}.dns[{i}]",
                    str(server),
                    "is not reachable from the guests (private or loopback address outside the "
                    "guest network: the old setup's 10.0.0.x resolvers broke DNS for weeks)",
                    "use public resolvers such as 1.1.1.1 and 8.8.8.8",
                )


class Download(Model):
    """A file the Proxmox node downloads itself, verified by checksum when one is given."""

    url: HttpsUrl = Field(description="where the node downloads the file from")
    file_name: Text = Field(
        "", description="the file's name on the node (default: the URL's last path segment)"
    )
    checksum: Text | None = Field(None, description="lower-case hex digest of the file")
    checksum_algorithm: Annotated[
        Text,
        pattern("|".join(_CHECKSUM_LENGTHS), "is not supported", "use sha256 or sha512"),
    ] = Field("sha256", description="the checksum's algorithm")

    @model_validator(mode="before")
    @classmethod
    def _default_file_name(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and data.get("fileName") is None
            and isinstance(data.get("url"), str)
        ):
            name = urlparse(data["url"]).path.rsplit("/", 1)[-1]
            if not name:
                raise fail(
                    "names no file (the URL ends in '/')",
                    "point url at the file itself, or set fileName",
                    at="url",
                    value=data["url"],
                )
            return {**data, "fileName": name}
        return data

    @model_validator(mode="after")
    def _checksum_matches(self) -> Download:
        length = _CHECKSUM_LENGTHS.get(self.checksum_algorithm)
        if (
            self.checksum is not None
            and length
            and not re.fullmatch(rf"[0-9a-f]{{{length}}}", self.checksum)
        ):
            raise fail(
                f"is not a lower-case hex {self.checksum_algorithm} digest",
                "copy it from the SHA256SUMS file published next to the image",
                at="checksum",
                value=self.checksum,
            )
        if "/" in self.file_name or self.file_name in (".", ".."):
            raise fail(
                "is not a file name", "give a bare name", at="fileName", value=self.file_name
            )
        return self


Datastore = Annotated[
    Text, pattern(r"[A-Za-z][A-Za-z0-9_.-]*", "is not a datastore id", "use e.g. local")
]
StackPart = Annotated[
    Text,
    pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]*", "is not a stack name part", "use e.g. organization"),
]


class HostShared(Model):
    """Host-wide Proxmox objects, created by the host stack (dev and prod read their IDs)."""

    pool: Annotated[
        Text,
        pattern(
            r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", "is not a valid pool id", "use e.g. smart-smoker"
        ),
    ] = Field("smart-smoker", description="the Proxmox pool of every guest")
    vm_datastore: Datastore = Field("local-lvm", description="datastore of guest disks")
    file_datastore: Datastore = Field(
        "local", description="datastore of templates, images and snippets"
    )
    vm_template_id: Vmid = Field(9000, description="VMID of the cloud-init VM template")
    vm_template_name: Hostname = Field(
        "ubuntu-2204-cloudinit", description="the VM template's name"
    )
    nat: Bool = Field(True, description="masquerade the guest network out through the node")
    lxc_template: Download = Field(description="the LXC template the node downloads")
    cloud_image: Download = Field(
        description="the cloud image of the VM template (.qcow2, .raw or .vmdk)"
    )

    @property
    def lxc_template_file_id(self) -> str:
        return f"{self.file_datastore}:vztmpl/{self.lxc_template.file_name}"

    @property
    def vendor_data_file_id(self) -> str:
        return f"{self.file_datastore}:snippets/{VENDOR_DATA_FILE_NAME}"

    def check(self, key: str) -> Iterator[Problem]:
        if self.lxc_template.checksum is None:
            yield problem(
                f"{key}.lxcTemplate.checksum",
                REQUIRED,
                "is required so the node verifies the template it downloads",
                "copy the sha256 from the SHA256SUMS file published next to the template",
            )
        if not self.cloud_image.file_name.endswith((".qcow2", ".raw", ".vmdk")):
            yield problem(
                f"{key}.cloudImage.fileName",
                self.cloud_image.file_name,
                "must end in .qcow2, .raw or .vmdk (Proxmox imports disks only by those names)",
                "Ubuntu's .img cloud images are qcow2: name it <image>.qcow2",
            )


class HostStackRef(Model):
    """The host stack whose outputs dev and prod read through a `pulumi.StackReference`."""

    organization: StackPart = Field(
        "organization",
        description="the backend's organization ('organization' on a self-managed backend)",
    )
    project: StackPart = Field(PROJECT, description="the project of the host stack")
    stack: StackPart = Field("host", description="the host stack's name")

    @property
    def name(self) -> str:
        return f"{self.organization}/{self.project}/{self.stack}"
