"""GithubRunner: the self-hosted GitHub Actions runner on a host-stack guest, one command per
apply-plan step (after the guest's baseline and Tailscale)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.guest_common import GuestAccess, step_commands
from config import GuestSpec, HostStackConfig
from rendering.runner import CA_STEP, runner_guest_plan


@dataclass(frozen=True)
class GithubRunnerArgs:
    config: HostStackConfig
    spec: GuestSpec
    access: GuestAccess
    after: pulumi.Resource
    node_ca: pulumi.Output[str]  # the Proxmox node's CA certificate, read from the node


class GithubRunner(pulumi.ComponentResource):
    done: pulumi.Resource

    def __init__(
        self, name: str, args: GithubRunnerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("smoker:ci:GithubRunner", name, None, opts)
        cfg, spec = args.config, args.spec
        token = cfg.secrets.github_runner_token
        assert token is not None  # required in the host stack (config.secrets)
        steps = runner_guest_plan(cfg, spec, token.reveal())
        commands = step_commands(
            spec.name,
            steps,
            spec.ssh_user,
            args.access,
            args.after,
            self,
            stdin={CA_STEP: args.node_ca},
        )
        self.done = commands[-1]
        self.register_outputs({"steps": [s.name for s in steps]})
