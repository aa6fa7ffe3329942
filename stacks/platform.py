"""The per-stack composition: which components a stack builds, and what it exports."""

from __future__ import annotations

import pulumi
import pulumi_command as command

from components.app_stack import AppStack, AppStackArgs
from components.cloud_guest import CloudGuest
from components.device_app import DeviceApp, DeviceAppArgs, Publisher
from components.device_guest import DeviceGuest
from components.existing_host import ExistingHost
from components.github_runner import GithubRunner, GithubRunnerArgs
from components.guest_baseline import GuestBaseline, GuestBaselineArgs
from components.guest_common import GuestArgs, HostArgs
from components.images import docker_provider
from components.proxmox_host import SHARED_OUTPUT, ProxmoxHost, ProxmoxHostArgs
from components.tailnet_keys import key_minter
from components.tailscale_node import TailscaleNode, TailscaleNodeArgs
from components.vzdump import VzdumpJob, VzdumpJobArgs
from config import (
    CommonConfig,
    ConfigError,
    Guest,
    GuestSpec,
    HostSpec,
    HostStackConfig,
    StackConfig,
    is_device,
    parse_config,
)
from rendering.tailscale import release_source_problems

AnyGuest = CloudGuest | DeviceGuest | ExistingHost


def _guest(
    cfg: CommonConfig, spec: Guest, host: ProxmoxHost, opts: pulumi.ResourceOptions
) -> AnyGuest:
    """The guest's component: a Proxmox guest (LXC or VM), or an existing machine (no Proxmox
    resource, only its readiness gate)."""
    if isinstance(spec, HostSpec):
        return ExistingHost(
            spec.name,
            HostArgs(
                spec=spec,
                private_key=cfg.secrets.guest_ssh_private_key,
                readiness_timeout_seconds=cfg.readiness_timeout_seconds,
            ),
            opts,
        )
    args = GuestArgs(
        spec=spec,
        proxmox=cfg.proxmox,
        network=cfg.network,
        host=host,
        authorized_keys=cfg.ssh_authorized_keys,
        private_key=cfg.secrets.guest_ssh_private_key,
        readiness_timeout_seconds=cfg.readiness_timeout_seconds,
    )
    guest_class = CloudGuest if spec.kind == "lxc" else DeviceGuest
    return guest_class(spec.name, args, opts)


def build(cfg: CommonConfig) -> dict[str, AnyGuest]:
    """Declare every resource of the stack; returns the guests by name."""
    # Explicit providers only: the project disables every default provider.
    command_provider = command.Provider("command")
    opts = pulumi.ResourceOptions(providers=[command_provider])
    # the registry lookups that pin a release's images to digests (dev and prod)
    docker_lookups = docker_provider(cfg) if isinstance(cfg, StackConfig) else None
    minter = key_minter(cfg)  # tailscale.mintKeys: the `tailscale` provider, else None
    host_stack = isinstance(cfg, HostStackConfig)
    host = ProxmoxHost(
        "proxmox",
        ProxmoxHostArgs(
            proxmox=cfg.proxmox,
            network=cfg.network,
            secrets=cfg.secrets,
            host_shared=cfg.host_shared if isinstance(cfg, HostStackConfig) else None,
            host_stack=cfg.host_stack if isinstance(cfg, StackConfig) else None,
            guest_vmids={g.name: g.vmid for g in cfg.proxmox_guests},
        ),
        opts,
    )
    guests: dict[str, AnyGuest] = {}
    exports: dict[str, dict[str, object]] = {}
    publisher: Publisher | None = None  # the cloud guest, which publishes a device's release
    # devices (kind vm or host) last: their release is published on the cloud guest
    for spec in sorted(cfg.guests, key=is_device):
        guest = _guest(cfg, spec, host, opts)
        guests[spec.name] = guest
        exports[spec.name] = dict(guest.outputs)
        baseline = GuestBaseline(
            f"{spec.name}-baseline",
            GuestBaselineArgs(cfg, spec, guest.access),
            opts,
        )
        configured = baseline.done
        if spec.tailscale is not None:
            tailscale = TailscaleNode(
                f"{spec.name}-tailscale",
                TailscaleNodeArgs(
                    spec,
                    cfg.tailnet,
                    cfg.secrets.tailscale_auth_key,
                    guest.access,
                    baseline.done,
                    minter,
                ),
                opts,
            )
            configured = tailscale.done
            exports[spec.name]["tailscaleUrls"] = tailscale.urls
        if isinstance(cfg, HostStackConfig):
            assert host.node_ca is not None and not isinstance(spec, HostSpec)  # (config.loader)
            runner = cfg.runner
            GithubRunner(
                f"{spec.name}-runner",
                GithubRunnerArgs(cfg, spec, guest.access, configured, host.node_ca),
                opts,
            )
            exports[spec.name]["runner"] = {
                "name": runner.runner_name(spec),
                "labels": list(runner.labels),
                "version": runner.version,
                "pulumiVersion": runner.pulumi.version,
            }
        elif is_device(spec):
            # its release is published on the cloud guest, built before it
            assert isinstance(cfg, StackConfig) and docker_lookups is not None
            assert publisher is not None, "checked by the config loader (_check_publisher)"
            device = DeviceApp(
                f"{spec.name}-app",
                DeviceAppArgs(cfg, spec, guest.access, configured, publisher, docker_lookups),
                opts,
            )
            # published vs live: the agent's report when the push reached the device (else
            # `python -m deploy --guest <device> status` reads it from the device)
            exports[spec.name]["desiredRelease"] = {
                "sequence": device.desired.sequence,
                "delivery": device.desired.delivery,
                "note": device.desired.note,
                "agentOutcome": device.desired.agentOutcome,
                "liveRelease": device.desired.agentReport.apply(
                    lambda report: (report or {}).get("liveRelease")
                ),
            }
        elif isinstance(cfg, StackConfig):
            assert docker_lookups is not None
            app = AppStack(
                f"{spec.name}-app",
                AppStackArgs(cfg, spec, guest.access, configured, docker_lookups),
                opts,
            )
            exports[spec.name]["release"] = app.release.releaseId
            exports[spec.name]["digests"] = app.release.digests
            if publisher is None:
                assert isinstance(spec, GuestSpec)
                publisher = Publisher(spec, guest.access, configured)

    if isinstance(cfg, StackConfig):
        VzdumpJob(f"vzdump-{cfg.environment}", VzdumpJobArgs(cfg, host.provider), opts)

    pulumi.export("environment", cfg.environment)
    pulumi.export("guests", exports)
    if host_stack:
        pulumi.export(SHARED_OUTPUT, host.shared)
    return guests


def runtime_config() -> tuple[dict[str, str], set[str]]:
    """Every config value and secret key the running Pulumi program was given."""
    from pulumi.runtime import config as runtime

    values: dict[str, str] = dict(runtime.get_config_env())
    values.update(runtime.CONFIG.get())
    secret_keys = set(runtime.get_config_secret_keys_env()) | set(runtime._SECRET_KEYS.get())
    return values, secret_keys


def load_stack_config() -> StackConfig | HostStackConfig:
    """The running program's stack configuration (raises ConfigError)."""
    values, secret_keys = runtime_config()
    cfg = parse_config(values, secret_keys, pulumi.get_stack())
    if isinstance(cfg, StackConfig) and cfg.devices:
        # a device pulls its release from the cloud guest's tailnet name: checked before any
        # resource is declared (config/ cannot know the on-guest layout the check needs)
        publisher = next(g for g in cfg.proxmox_guests if g.kind == "lxc")
        problems = [
            p for d in cfg.devices for p in release_source_problems(publisher, cfg.tailnet, d.name)
        ]
        if problems:
            raise ConfigError(cfg.stack, problems)
    return cfg


def main() -> None:
    try:
        cfg = load_stack_config()
    except ConfigError as exc:
        # The message alone: the engine prints a RunError without a Python traceback.
        raise pulumi.RunError(str(exc)) from None
    build(cfg)
