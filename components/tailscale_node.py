"""TailscaleNode: a guest on the tailnet with converged identity and serve/funnel mappings."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.guest_common import GuestAccess, step_commands
from components.tailnet_keys import KeyMinter
from config import Guest, Secret
from rendering.tailscale import serve_urls, tailscale_plan


@dataclass(frozen=True)
class TailscaleNodeArgs:
    spec: Guest
    tailnet: str
    auth_key: Secret | None  # tailscaleAuthKey (not read when a minter is given)
    access: GuestAccess
    after: pulumi.Resource  # the guest baseline (UFW must allow tailscale0 and 41641/udp first)
    minter: KeyMinter | None = None  # tailscale.mintKeys: the guest's own key, not auth_key


class TailscaleNode(pulumi.ComponentResource):
    done: pulumi.Resource

    def __init__(
        self, name: str, args: TailscaleNodeArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("smoker:guest:TailscaleNode", name, None, opts)
        ts = args.spec.tailscale
        assert ts is not None
        stdin: dict[str, pulumi.Input[str]] | None = None
        if args.minter is None:
            assert args.auth_key is not None  # required by the config without mintKeys
            steps = tailscale_plan(args.spec, args.auth_key.reveal())
        else:
            # The same steps; `tailscale-up` reads the minted key (a secret output) instead.
            steps = tailscale_plan(args.spec, "")
            key = args.minter.mint(args.spec, args.after, args.access.machine, self)
            stdin = {"tailscale-up": key.key}
        commands = step_commands(
            args.spec.name, steps, args.spec.ssh_user, args.access, args.after, self, stdin
        )
        self.done = commands[-1]
        self.urls = serve_urls(ts, args.tailnet)
        self.register_outputs({"hostname": ts.hostname, "urls": self.urls})
