"""A cloud guest: an unprivileged Ubuntu LXC that runs the Docker Compose services."""

from __future__ import annotations

import pulumi
import pulumi_proxmoxve as proxmoxve

from components.guest_common import GuestAccess, GuestArgs, guest_access, guest_outputs

# Keys and template are creation-time inputs of an LXC: changing them would replace the guest.
# Authorized keys converge through the guest baseline instead; a new template serves new guests.
_CREATION_ONLY = ["initialization.userAccount", "operatingSystem.templateFileId"]


class CloudGuest(pulumi.ComponentResource):
    container: proxmoxve.ContainerLegacy
    access: GuestAccess

    def __init__(
        self, name: str, args: GuestArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("smoker:proxmox:CloudGuest", name, None, opts)
        spec, net, host = args.spec, args.network, args.host
        features = spec.lxc_features
        assert features is not None and spec.disk_gb is not None
        self.container = proxmoxve.ContainerLegacy(
            name,
            node_name=args.proxmox.node,
            vm_id=spec.vmid,
            description=f"Smart Smoker {spec.name} (managed by smoker-infra)",
            unprivileged=True,
            started=True,
            start_on_boot=spec.start_on_boot,
            protection=spec.protect,
            tags=list(spec.tags),
            pool_id=host.pool_id,
            operating_system=proxmoxve.ContainerLegacyOperatingSystemArgs(
                template_file_id=host.lxc_template_file_id, type="ubuntu"
            ),
            cpu=proxmoxve.ContainerLegacyCpuArgs(cores=spec.cores, architecture="amd64"),
            memory=proxmoxve.ContainerLegacyMemoryArgs(dedicated=spec.memory_mb, swap=spec.swap_mb),
            disk=proxmoxve.ContainerLegacyDiskArgs(
                datastore_id=host.vm_datastore, size=spec.disk_gb
            ),
            features=proxmoxve.ContainerLegacyFeaturesArgs(
                nesting=features.nesting, keyctl=features.keyctl
            ),
            device_passthroughs=[
                proxmoxve.ContainerLegacyDevicePassthroughArgs(path="/dev/net/tun")
            ]
            if features.tun
            else None,
            network_interfaces=[
                proxmoxve.ContainerLegacyNetworkInterfaceArgs(
                    name="eth0", bridge=net.bridge, firewall=spec.firewall
                )
            ],
            initialization=proxmoxve.ContainerLegacyInitializationArgs(
                hostname=spec.hostname,
                ip_configs=[
                    proxmoxve.ContainerLegacyInitializationIpConfigArgs(
                        ipv4=proxmoxve.ContainerLegacyInitializationIpConfigIpv4Args(
                            address=str(spec.ipv4), gateway=str(net.gateway)
                        )
                    )
                ],
                dns=proxmoxve.ContainerLegacyInitializationDnsArgs(
                    servers=[str(s) for s in net.dns], domain=net.search_domain
                ),
                user_account=proxmoxve.ContainerLegacyInitializationUserAccountArgs(
                    keys=list(args.authorized_keys)
                ),
            ),
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
        self.access = guest_access(name, args, self.container, self)
        self.outputs = guest_outputs(spec, args.proxmox)
        self.register_outputs(self.outputs)
