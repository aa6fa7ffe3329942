"""Every file the program renders for a stack, by path under `build/<stack>/` (shown by synth)."""

from __future__ import annotations

from rendering import backup, proxmox_host
from rendering.app import compose_file, project_name
from rendering.baseline import baseline_plan
from rendering.plan import Step
from rendering.tailscale import tailscale_plan
from stacks.config import GuestSpec, StackConfig


def guest_plan(cfg: StackConfig, guest: GuestSpec, auth_key: str = "") -> list[Step]:
    """The whole apply plan of a guest: baseline, then Tailscale."""
    return baseline_plan(cfg, guest) + tailscale_plan(guest, auth_key)


def host_files(cfg: StackConfig) -> dict[str, str]:
    files: dict[str, str] = {}
    if cfg.host_shared.owner:
        cidr = cfg.network.cidr
        files["proxmox-node/nat-apply.sh"] = proxmox_host.nat_apply_script(cidr)
        files["proxmox-node/nat-remove.sh"] = proxmox_host.nat_remove_script()
        files[f"proxmox-node/{proxmox_host.NAT_UNIT_NAME}"] = proxmox_host.nat_unit(cidr)
        files["proxmox-node/sysctl-nat.conf"] = proxmox_host.nat_sysctl()
        files["proxmox-node/vendor-data.yaml"] = proxmox_host.vendor_data()
    for guest in cfg.guests:
        for number, step in enumerate(guest_plan(cfg, guest), start=1):
            files[f"{guest.name}/steps/{number:02d}-{step.name}.sh"] = step.script
            for path, content in step.files.items():
                files[f"{guest.name}/files{path}"] = content
        files[f"{guest.name}/compose.yaml"] = compose_file(cfg, guest)
        if guest.kind == "lxc":
            tool = backup.backup_tool(cfg, project_name(cfg, guest))
            files[f"{guest.name}/files{backup.TOOL_PATH}"] = tool
            for unit, text in backup.units(cfg).items():
                files[f"{guest.name}/files/etc/systemd/system/{unit}"] = text
    return files
