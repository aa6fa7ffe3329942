"""VzdumpJob: the Proxmox-level backup of a stack's guests (whole guest images)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_proxmoxve as proxmoxve

from config import StackConfig


@dataclass(frozen=True)
class VzdumpJobArgs:
    config: StackConfig
    provider: proxmoxve.Provider


class VzdumpJob(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: VzdumpJobArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("smoker:proxmox:VzdumpJob", name, None, opts)
        cfg = args.config
        vz = cfg.app.vzdump
        self.job = proxmoxve.backup.Job(
            name,
            resource_id=f"smart-smoker-{cfg.environment}",
            node=cfg.proxmox.node,
            vmids=[str(g.vmid) for g in cfg.proxmox_guests],
            schedule=vz.schedule,
            storage=vz.storage,
            mode=vz.mode,
            compress=vz.compress,
            prune_backups={
                "keep-daily": str(vz.retention.daily),
                "keep-weekly": str(vz.retention.weekly),
                "keep-monthly": str(vz.retention.monthly),
            },
            enabled=True,
            notes_template="{{guestname}} (smoker-infra " + cfg.environment + ")",
            # the job ID is pinned: a replacement created first would collide with the old job
            opts=pulumi.ResourceOptions(
                parent=self, provider=args.provider, delete_before_replace=True
            ),
        )
        self.register_outputs({"vmids": [g.vmid for g in cfg.proxmox_guests]})
