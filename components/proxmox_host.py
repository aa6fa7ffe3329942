"""The Proxmox host: the explicit provider and the host-wide objects (template, cloud image,
vendor-data snippet, VM template, pool, guest NAT): created by the host stack, read by dev and prod
from the host stack's outputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_proxmoxve as proxmoxve
from pulumi_command import remote

from config import (
    VENDOR_DATA_FILE_NAME,
    Download,
    HostShared,
    HostStackRef,
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


# `pulumi state move` puts a moved resource whose parent stays behind at the stack root: the
# host-wide objects moved from the dev stack (docs/operations.md) are found under this alias.
MOVED_FROM_DEV = pulumi.Alias(parent=pulumi.ROOT_STACK_RESOURCE)
# The host stack's output that dev and prod read, and its keys.
SHARED_OUTPUT = "hostShared"
SHARED_KEYS = ("lxcTemplateFileId", "vendorDataFileId", "vmTemplateId", "pool", "vmDatastore")


@dataclass(frozen=True)
class ProxmoxHostArgs:
    proxmox: ProxmoxSettings
    network: NetworkSettings
    secrets: Secrets
    host_shared: HostShared | None = None  # the host stack creates the objects
    host_stack: HostStackRef | None = None  # dev and prod read them from the host stack
    guest_vmids: Mapping[str, int] = field(default_factory=dict)  # the stack's, by guest name


class ProxmoxHost(pulumi.ComponentResource):
    """The explicit provider and the host-wide objects: created (host stack), read (dev, prod)."""

    provider: proxmoxve.Provider
    lxc_template_file_id: pulumi.Output[str]
    vendor_data_file_id: pulumi.Output[str]
    vm_template_id: pulumi.Output[int]
    pool_id: pulumi.Output[str]
    vm_datastore: pulumi.Output[str]
    guest_dependencies: list[pulumi.Resource]
    node_ca: pulumi.Output[str] | None = None  # the node's CA certificate (host stack)

    def __init__(
        self, name: str, args: ProxmoxHostArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("smoker:proxmox:ProxmoxHost", name, None, opts)
        self.provider = self._explicit_provider(name, args)
        self.guest_dependencies = []
        if args.host_shared is not None:
            self._create_shared_objects(name, args, args.host_shared)
        else:
            assert args.host_stack is not None
            self._read_shared_objects(name, args.host_stack, args.guest_vmids)
        self.register_outputs({"shared": self.shared})

    @property
    def shared(self) -> pulumi.Output[dict[str, object]]:
        """The IDs of the host-wide objects (the host stack's `hostShared` output)."""
        values = (
            self.lxc_template_file_id,
            self.vendor_data_file_id,
            self.vm_template_id,
            self.pool_id,
            self.vm_datastore,
        )
        return pulumi.Output.all(*values).apply(lambda v: dict(zip(SHARED_KEYS, v, strict=True)))

    def _read_shared_objects(
        self, name: str, ref: HostStackRef, guest_vmids: Mapping[str, int]
    ) -> None:
        host = pulumi.StackReference(
            f"{name}-host-stack", stack_name=ref.name, opts=pulumi.ResourceOptions(parent=self)
        )
        # every guest input comes from `shared`: an error here stops them all before they register
        shared = host.outputs.apply(lambda outputs: shared_ids(outputs, ref.name, guest_vmids))
        self.lxc_template_file_id = shared.apply(lambda s: str(s["lxcTemplateFileId"]))
        self.vendor_data_file_id = shared.apply(lambda s: str(s["vendorDataFileId"]))
        # a stack output crosses the engine as a protobuf Struct: numbers arrive as floats
        self.vm_template_id = shared.apply(lambda s: int(s["vmTemplateId"]))
        self.pool_id = shared.apply(lambda s: str(s["pool"]))
        self.vm_datastore = shared.apply(lambda s: str(s["vmDatastore"]))

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
            # At the stack root, where `pulumi state move` puts a provider's copy (the host
            # stack's migration); the alias is where it was before, under this component.
            opts=pulumi.ResourceOptions(aliases=[pulumi.Alias(parent=self)]),
        )

    def _create_shared_objects(self, name: str, args: ProxmoxHostArgs, shared: HostShared) -> None:
        px = args.proxmox
        # Host-wide objects outlive any one stack's guests: never deleted by accident. Each has a
        # pinned identity (pool ID, file name, VMID 9000): a replacement created before the old one
        # is deleted would collide with it (or be deleted by the old one's delete).
        opts = pulumi.ResourceOptions(
            parent=self,
            provider=self.provider,
            protect=True,
            delete_before_replace=True,
            aliases=[MOVED_FROM_DEV],
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
            # The device VM boots with it: it stays if the host stack is ever destroyed. Kept,
            # a replacement's delete is skipped too; its create overwrites the file (the
            # provider's `overwrite` defaults to true; unset, as in states migrated from dev).
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(retain_on_delete=True)),
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
        node = self._node_access(name, args)
        if shared.nat:
            self.guest_dependencies.append(self._nat(name, args, node))

        self.lxc_template_file_id = lxc_template.id
        self.vendor_data_file_id = vendor_data.id
        self.vm_template_id = template.vm_id.apply(lambda v: int(v) if v is not None else 0)
        self.pool_id = pool.pool_id
        self.vm_datastore = pulumi.Output.from_input(shared.vm_datastore)
        self.node_ca = self._node_ca(name, node)

    def _node_access(self, name: str, args: ProxmoxHostArgs) -> NodeAccess:
        """SSH to the node that pins its host key.

        The configured `proxmox.sshHostKey` is pinned from the first connection; without it the
        key the node presents to a first read-only command is recorded (trust on first use, as
        for the guests) and pinned for every later command.
        """
        px = args.proxmox
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

        if px.ssh_host_key:
            return NodeAccess(connection(px.ssh_host_key), [])
        seen = remote.Command(
            f"{name}-node-host-key",
            connection=connection(None),
            create=f"cat {HOST_KEY_FILE}",
            opts=pulumi.ResourceOptions(parent=self, aliases=[MOVED_FROM_DEV]),
        )
        return NodeAccess(connection(seen.stdout.apply(host_key_of)), [seen])

    def _nat(self, name: str, args: ProxmoxHostArgs, node: NodeAccess) -> remote.Command:
        """Masquerade the guest network out through the node."""
        return remote.Command(
            f"{name}-guest-nat",
            connection=node.connection,
            create=render.nat_apply_script(args.network),
            delete=render.nat_remove_script(),
            # its delete removes the NAT the replacement's create just converged
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=True,
                delete_before_replace=True,
                retain_on_delete=True,  # without NAT every guest loses its way out
                depends_on=node.after,
                aliases=[MOVED_FROM_DEV],
            ),
        )

    def _node_ca(self, name: str, node: NodeAccess) -> pulumi.Output[str]:
        """The node's CA certificate, which signs its API certificate (the runner trusts it)."""
        read = remote.Command(
            f"{name}-node-ca",
            connection=node.connection,
            create=f"cat {render.NODE_CA_FILE}",
            opts=pulumi.ResourceOptions(parent=self, depends_on=node.after),
        )
        return read.stdout.apply(render.ca_certificate_of)


def shared_ids(
    outputs: Mapping[str, Any], stack_name: str, guest_vmids: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The host stack's `hostShared` output, or the error that says how to get it (or that a
    guest of this stack would take the VM template's VMID)."""
    shared = (outputs or {}).get(SHARED_OUTPUT)
    missing = [k for k in SHARED_KEYS if not isinstance(shared, Mapping) or shared.get(k) is None]
    if missing:
        names = ", ".join(f"{SHARED_OUTPUT}.{k}" for k in missing)
        raise pulumi.RunError(
            f"the host stack '{stack_name}' has no output {names}: apply the host stack first "
            "(`pulumi up --stack host`, docs/operations.md, 'First-time bootstrap'), or point "
            "the hostStack setting at the stack that owns the host-wide Proxmox objects"
        )
    assert isinstance(shared, Mapping)
    template = int(shared["vmTemplateId"])
    for guest, vmid in (guest_vmids or {}).items():
        if vmid == template:
            raise pulumi.RunError(
                f"guests.{guest}.vmid = {vmid} is the VMID of the host stack's VM template "
                f"('{stack_name}' output hostShared.vmTemplateId): pick another VMID"
            )
    return dict(shared)


@dataclass(frozen=True)
class NodeAccess:
    connection: remote.ConnectionArgs
    after: list[pulumi.Resource]  # what a command on the node waits for (the host-key read)


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
