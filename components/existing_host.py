"""An existing machine (`kind: host`): the physical smoker, a Raspberry Pi reached over SSH by
its tailnet name. Nothing here creates, replaces or deletes the machine: there is no Proxmox
resource, only the readiness gate, and its SSH host key is always the configured one."""

from __future__ import annotations

import pulumi

from components.guest_common import GuestAccess, HostArgs, guest_access
from config import HostSpec


def host_outputs(spec: HostSpec) -> dict[str, object]:
    """What the stack exports for an existing machine (no VMID, no Proxmox node)."""
    return {
        "kind": spec.kind,
        "hostname": spec.hostname,
        "sshHost": spec.ssh_host,
        "arch": spec.arch,
    }


class ExistingHost(pulumi.ComponentResource):
    access: GuestAccess

    def __init__(
        self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("smoker:host:ExistingHost", name, None, opts)
        self.access = guest_access(name, args, None, self)
        self.outputs = host_outputs(args.spec)
        self.register_outputs(self.outputs)
