"""The Proxmox host: the explicit provider, and in the owner stack the host-wide objects."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_proxmoxve as proxmoxve
from pulumi_command import remote

from config import (
    VENDOR_DATA_FILE_NAME,
    Download,
    HostShared,
    NetworkSettings,
    ProxmoxSettings,
    Secret,
    Secrets,
)
from rendering import proxmox_host as render
from rendering.plan import HOST_KEY_FILE, host_key_of

# The template VM only needs enough to boot cloud-init once; clones set their own sizes.
TEMPLATE_CORES = 2
TEMPLATE_MEMORY_MB = 1024
TEMPLATE_DISK_GB = 8


@dataclass(frozen=True)
class ProxmoxHostArgs:
    proxmox: ProxmoxSettings
    network: NetworkSettings
    host_shared: HostShared
    secrets: Secrets


class ProxmoxHost(pulumi.ComponentResource):
    """Provider plus template, cloud image, VM template, pool and NAT (owner stack only)."""

    provider: proxmoxve.Provider
    lxc_template_file_id: pulumi.Output[str]
    vendor_data_file_id: pulumi.Output[str]
    vm_template_id: pulumi.Output[int]
    pool_id: pulumi.Output[str]
    vm_datastore: str
    guest_dependencies: list[pulumi.Resource]

    def __init__(
        self, name: str, args: ProxmoxHostArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("smoker:proxmox:ProxmoxHost", name, None, opts)
        shared = args.host_shared
        self.provider = self._explicit_provider(name, args)
        self.vm_datastore = shared.vm_datastore
        self.guest_dependencies = []
        if shared.owner:
            self._create_shared_objects(name, args)
        else:
            self.lxc_template_file_id = pulumi.Output.from_input(shared.lxc_template_file_id)
            self.vendor_data_file_id = pulumi.Output.from_input(shared.vendor_data_file_id)
            self.vm_template_id = pulumi.Output.from_input(shared.vm_template_id)
            self.pool_id = pulumi.Output.from_input(shared.pool)
        self.register_outputs(
            {
                "lxcTemplateFileId": self.lxc_template_file_id,
                "vendorDataFileId": self.vendor_data_file_id,
                "vmTemplateId": self.vm_template_id,
                "poolId": self.pool_id,
            }
        )

    def _explicit_provider(self, name: str, args: ProxmoxHostArgs) -> proxmoxve.Provider:
        px, secrets = args.proxmox, args.secrets
        # A password (root@pam) wins over a token: only it may set the LXC keyctl feature.
        use_password = secrets.proxmox_password is not None
        ssh = proxmoxve.ProviderSshArgs(
            username=px.ssh_username,
            private_key=_secret(secrets.proxmox_ssh_private_key)
            if secrets.proxmox_ssh_private_key
            else None,
            nodes=[
                proxmoxve.ProviderSshNodeArgs(
                    name=px.node, address=px.ssh_address, port=px.ssh_port
                )
            ],
        )
        return proxmoxve.Provider(
            f"{name}-provider",
            endpoint=px.endpoint,
            insecure=px.insecure,
            min_tls="1.2",
            ssh=ssh,
            username=px.username if use_password else None,
            password=_secret(secrets.proxmox_password) if use_password else None,
            api_token=None if use_password else _secret(secrets.proxmox_api_token),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _create_shared_objects(self, name: str, args: ProxmoxHostArgs) -> None:
        px, shared = args.proxmox, args.host_shared
        assert shared.lxc_template and shared.cloud_image
        # Host-wide objects outlive any one stack's guests: never deleted by accident. Each has a
        # pinned identity (pool ID, file name, VMID 9000): a replacement created before the old one
        # is deleted would collide with it (or be deleted by the old one's delete).
        opts = pulumi.ResourceOptions(
            parent=self, provider=self.provider, protect=True, delete_before_replace=True
        )

        pool = proxmoxve.PoolLegacy(
            f"{name}-pool",
            pool_id=shared.pool,
            comment="Smart Smoker V2 guests (managed by smoker-infra)",
            opts=opts,
        )
        lxc_template = _download(
            f"{name}-lxc-template", "vztmpl", shared.lxc_template, px, shared, opts
        )
        cloud_image = _download(
            f"{name}-cloud-image", "import", shared.cloud_image, px, shared, opts
        )
        vendor_data = proxmoxve.FileLegacy(
            f"{name}-vendor-data",
            node_name=px.node,
            datastore_id=shared.file_datastore,
            content_type="snippets",
            source_raw=proxmoxve.FileLegacySourceRawArgs(
                data=render.vendor_data(), file_name=VENDOR_DATA_FILE_NAME
            ),
            opts=opts,
        )
        template = proxmoxve.VmLegacy(
            f"{name}-vm-template",
            node_name=px.node,
            vm_id=shared.vm_template_id,
            name=shared.vm_template_name,
            description="Ubuntu 22.04 cloud-init template for Smart Smoker VMs (smoker-infra)",
            template=True,
            started=False,
            machine="q35",
            bios="ovmf",
            operating_system=proxmoxve.VmLegacyOperatingSystemArgs(type="l26"),
            agent=proxmoxve.VmLegacyAgentArgs(enabled=True),
            cpu=proxmoxve.VmLegacyCpuArgs(cores=TEMPLATE_CORES, type="x86-64-v2-AES"),
            memory=proxmoxve.VmLegacyMemoryArgs(dedicated=TEMPLATE_MEMORY_MB),
            efi_disk=proxmoxve.VmLegacyEfiDiskArgs(
                datastore_id=shared.vm_datastore, type="4m", pre_enrolled_keys=False
            ),
            scsi_hardware="virtio-scsi-single",
            disks=[
                proxmoxve.VmLegacyDiskArgs(
                    interface="scsi0",
                    datastore_id=shared.vm_datastore,
                    import_from=cloud_image.id,
                    size=TEMPLATE_DISK_GB,
                    discard="on",
                    iothread=True,
                )
            ],
            serial_devices=[proxmoxve.VmLegacySerialDeviceArgs(device="socket")],
            vga=proxmoxve.VmLegacyVgaArgs(type="serial0"),
            network_devices=[proxmoxve.VmLegacyNetworkDeviceArgs(bridge=args.network.bridge)],
            initialization=proxmoxve.VmLegacyInitializationArgs(
                datastore_id=shared.vm_datastore, vendor_data_file_id=vendor_data.id
            ),
            pool_id=pool.pool_id,
            tags=["template"],
            opts=opts,
        )
        self.guest_dependencies = [pool, lxc_template, template]
        if shared.nat:
            self.guest_dependencies.append(self._nat(name, args))

        self.lxc_template_file_id = lxc_template.id
        self.vendor_data_file_id = vendor_data.id
        self.vm_template_id = template.vm_id.apply(lambda v: int(v) if v is not None else 0)
        self.pool_id = pool.pool_id

    def _nat(self, name: str, args: ProxmoxHostArgs) -> remote.Command:
        """NAT on the node, over SSH that pins the node's host key.

        The configured `proxmox.sshHostKey` is pinned from the first connection; without it the
        key the node presents to a first read-only command is recorded (trust on first use, as
        for the guests) and pinned for the NAT step.
        """
        px, cidr = args.proxmox, args.network.cidr
        key = args.secrets.proxmox_ssh_private_key
        assert key is not None

        def connection(host_key: pulumi.Input[str] | None) -> remote.ConnectionArgs:
            return remote.ConnectionArgs(
                host=px.ssh_address,
                port=px.ssh_port,
                user=px.ssh_username,
                private_key=pulumi.Output.secret(key.reveal()),
                host_key=host_key,
            )

        host_key: pulumi.Input[str]
        depends_on: list[pulumi.Resource] = []
        if px.ssh_host_key:
            host_key = px.ssh_host_key
        else:
            seen = remote.Command(
                f"{name}-node-host-key",
                connection=connection(None),
                create=f"cat {HOST_KEY_FILE}",
                opts=pulumi.ResourceOptions(parent=self),
            )
            host_key = seen.stdout.apply(host_key_of)
            depends_on = [seen]
        return remote.Command(
            f"{name}-guest-nat",
            connection=connection(host_key),
            create=render.nat_apply_script(cidr),
            delete=render.nat_remove_script(),
            # its delete removes the NAT the replacement's create just converged
            opts=pulumi.ResourceOptions(
                parent=self, protect=True, delete_before_replace=True, depends_on=depends_on
            ),
        )


def _secret(value: Secret | None) -> pulumi.Output[str]:
    assert value is not None
    return pulumi.Output.secret(value.reveal())


def _download(
    name: str,
    content_type: str,
    spec: Download,
    px: ProxmoxSettings,
    shared: HostShared,
    opts: pulumi.ResourceOptions,
) -> proxmoxve.download.FileLegacy:
    return proxmoxve.download.FileLegacy(
        name,
        node_name=px.node,
        datastore_id=shared.file_datastore,
        content_type=content_type,
        url=spec.url,
        file_name=spec.file_name,
        checksum=spec.checksum,
        checksum_algorithm=spec.checksum_algorithm if spec.checksum else None,
        overwrite=False,
        upload_timeout=1800,
        opts=opts,
    )
