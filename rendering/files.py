"""Every file the program renders for a stack, by path under `build/<stack>/` (shown by synth)."""

from __future__ import annotations

from rendering import proxmox_host
from stacks.config import StackConfig


def host_files(cfg: StackConfig) -> dict[str, str]:
    files: dict[str, str] = {}
    if cfg.host_shared.owner:
        cidr = cfg.network.cidr
        files["proxmox-node/nat-apply.sh"] = proxmox_host.nat_apply_script(cidr)
        files["proxmox-node/nat-remove.sh"] = proxmox_host.nat_remove_script()
        files[f"proxmox-node/{proxmox_host.NAT_UNIT_NAME}"] = proxmox_host.nat_unit(cidr)
        files["proxmox-node/sysctl-nat.conf"] = proxmox_host.nat_sysctl()
        files["proxmox-node/vendor-data.yaml"] = proxmox_host.vendor_data()
    return files
