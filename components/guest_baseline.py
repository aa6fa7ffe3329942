"""GuestBaseline: the hardened baseline of one guest, one command per apply-plan step."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.guest_common import GuestAccess, step_commands
from config import CommonConfig, Guest
from rendering.baseline import baseline_plan


@dataclass(frozen=True)
class GuestBaselineArgs:
    config: CommonConfig
    spec: Guest
    access: GuestAccess


class GuestBaseline(pulumi.ComponentResource):
    done: pulumi.Resource

    def __init__(
        self, name: str, args: GuestBaselineArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("smoker:guest:GuestBaseline", name, None, opts)
        steps = baseline_plan(args.config, args.spec)
        access = args.access
        commands = step_commands(
            args.spec.name, steps, args.spec.ssh_user, access, access.ready, self
        )
        self.done = commands[-1]
        self.register_outputs({"steps": [s.name for s in steps]})
