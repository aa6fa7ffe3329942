"""The device-simulation guest: a full clone of the cloud-init VM template."""

from __future__ import annotations

import pulumi
import pulumi_proxmoxve as proxmoxve

from components.guest_common import GuestAccess, GuestArgs, guest_access, guest_outputs

# cloud-init applies the user account on first boot only; later key changes converge through
# the guest baseline, so they must not rebuild the cloud-init drive (or the VM).
_CREATION_ONLY = ["initialization.userAccount"]


class DeviceGuest(pulumi.ComponentResource):
    vm: proxmoxve.VmLegacy
    access: GuestAccess

    def __init__(
        self, name: str, args: GuestArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("smoker:proxmox:DeviceGuest", name, None, opts)
        spec, net, host = args.spec, args.network, args.host
        disks = (
            [
                proxmoxve.VmLegacyDiskArgs(
                    interface="scsi0", datastore_id=host.vm_datastore, size=spec.disk_gb
                )
            ]
            if spec.disk_gb
            else None
        )
        self.vm = proxmoxve.VmLegacy(
            name,
            node_name=args.proxmox.node,
            vm_id=spec.vmid,
            name=spec.hostname,
            description=f"Smart Smoker {spec.name} (managed by smoker-infra)",
            clone=proxmoxve.VmLegacyCloneArgs(
                vm_id=host.vm_template_id, full=True, datastore_id=host.vm_datastore
            ),
            machine=spec.machine,
            bios=spec.bios,
            efi_disk=proxmoxve.VmLegacyEfiDiskArgs(
                datastore_id=host.vm_datastore, type="4m", pre_enrolled_keys=False
            )
            if spec.bios == "ovmf"
            else None,
            agent=proxmoxve.VmLegacyAgentArgs(enabled=True),
            operating_system=proxmoxve.VmLegacyOperatingSystemArgs(type="l26"),
            cpu=proxmoxve.VmLegacyCpuArgs(cores=spec.cores, type="x86-64-v2-AES"),
            memory=proxmoxve.VmLegacyMemoryArgs(dedicated=spec.memory_mb),
            disks=disks,
            serial_devices=[proxmoxve.VmLegacySerialDeviceArgs(device="socket")],
            vga=proxmoxve.VmLegacyVgaArgs(type="serial0"),
            network_devices=[
                proxmoxve.VmLegacyNetworkDeviceArgs(bridge=net.bridge, firewall=spec.firewall)
            ],
            initialization=proxmoxve.VmLegacyInitializationArgs(
                datastore_id=host.vm_datastore,
                ip_configs=[
                    proxmoxve.VmLegacyInitializationIpConfigArgs(
                        ipv4=proxmoxve.VmLegacyInitializationIpConfigIpv4Args(
                            address=str(spec.ipv4), gateway=str(net.gateway)
                        )
                    )
                ],
                dns=proxmoxve.VmLegacyInitializationDnsArgs(
                    servers=[str(s) for s in net.dns], domain=net.search_domain
                ),
                user_account=proxmoxve.VmLegacyInitializationUserAccountArgs(
                    username=spec.vm_user, keys=list(args.authorized_keys)
                ),
                vendor_data_file_id=host.vendor_data_file_id,
            ),
            on_boot=spec.start_on_boot,
            started=True,
            stop_on_destroy=True,
            protection=spec.protect,
            tags=list(spec.tags),
            pool_id=host.pool_id,
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=host.provider,
                protect=spec.protect,
                ignore_changes=_CREATION_ONLY,
                depends_on=host.guest_dependencies,
                # the VMID is pinned: a replacement created first would collide with the old one
                delete_before_replace=True,
            ),
        )
        self.access = guest_access(name, args, self.vm, self)
        self.outputs = guest_outputs(spec, args.proxmox)
        self.register_outputs(self.outputs)
