"""DeviceApp: a device's update agent and the signed desired release it pulls.

A device is the physical smoker (kind host) or the device-simulation VM (kind vm), which runs
the same agent so the dev stack proves the pull path on every merge. The physical smoker is
usually powered off, so `pulumi up` does not deploy to it: it installs the agent (once, and
again when the agent changes) and publishes the device's release on the stack's cloud guest.
The agent converges the device at boot and on its timer; the publication also pushes when the
device answers, and otherwise says it will converge by pull.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from components.device_release import DesiredRelease, desired_release_inputs, release_public_key
from components.guest_common import GuestAccess, step_commands
from components.images import planned_images
from config import Guest, GuestSpec, StackConfig
from rendering import agent, app
from rendering.files import app_files_plan
from rendering.tailscale import release_source_url


@dataclass(frozen=True)
class Publisher:
    """The stack's cloud guest, which holds the device's published document."""

    spec: GuestSpec
    access: GuestAccess
    ready: pulumi.Resource  # its baseline (and Tailscale) applied


@dataclass(frozen=True)
class DeviceAppArgs:
    config: StackConfig
    spec: Guest  # a device (config.is_device)
    access: GuestAccess
    after: pulumi.Resource  # the device's baseline (and Tailscale)
    publisher: Publisher
    docker_provider: docker.Provider  # the registry lookups that pin the images to digests


class DeviceApp(pulumi.ComponentResource):
    desired: DesiredRelease

    def __init__(
        self, name: str, args: DeviceAppArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("smoker:device:DeviceApp", name, None, opts)
        cfg, spec = args.config, args.spec
        signing_key = cfg.secrets.device_release_signing_key
        assert signing_key is not None, "checked by the config loader (device_pulls)"
        settings = agent.AgentSettings(
            stack=cfg.stack,
            guest=spec.name,
            project=app.project_name(cfg, spec),
            app_dir=cfg.baseline.app_dir,
            source=release_source_url(cfg.stack, args.publisher.spec, cfg.tailnet, spec.name),
            interval_seconds=cfg.app.device_updates.interval_seconds,
        )
        installed = step_commands(
            spec.name,
            # the VM's arm/v7 check (nothing on the physical smoker), then the agent
            app_files_plan(cfg, spec, None)
            + agent.agent_plan(settings, release_public_key(signing_key)),
            spec.ssh_user,
            args.access,
            args.after,
            self,
        )
        images = planned_images(app.guest_images(cfg, spec), args.docker_provider, self)
        publisher = args.publisher
        self.desired = DesiredRelease(
            f"{spec.name}-desired-release",
            desired_release_inputs(
                cfg.stack,
                spec,
                app.release_inputs(cfg, spec, None),
                signing_key=signing_key,
                private_key=cfg.secrets.guest_ssh_private_key,
                publisher=publisher.spec,
                publisher_host_key=publisher.access.host_key,
                device_host_key=args.access.host_key,
                compose=images.apply(lambda planned: app.compose_file(cfg, spec, planned)),
            ),
            pulumi.ResourceOptions(parent=self, depends_on=[installed[-1], publisher.ready]),
        )
        self.register_outputs(
            {"sequence": self.desired.sequence, "delivery": self.desired.delivery}
        )
