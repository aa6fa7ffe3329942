"""Each guest's Tailscale auth key, minted as code (`tailscale.mintKeys`, off by default).

With the feature on, the stack has one explicit `tailscale` provider, authenticated as an OAuth
client (`tailscaleOauthClientId`/`-Secret`, scope `auth_keys`), and every guest with Tailscale
gets its own `tailscale.TailnetKey`: single-use, not ephemeral, pre-authorised, tagged with the
guest's tags, valid for `keyExpirySeconds`. Its `key` (a secret output) is what the guest's
`tailscale-up` step reads on stdin, instead of the shared `tailscaleAuthKey`.

The key's lifecycle, from the provider's own source (terraform-provider-tailscale v0.29.2,
tailscale/resource_tailnet_key.go, which pulumi-tailscale 0.29.2 bridges):

- every input but `recreate_if_invalid` (and `user_id`) is RequiresReplace, and Read never
  writes `key` back, so a refresh leaves the stored key (and the step's stdin) as it was;
- a used, expired or deleted key reads back `invalid: true` (a 404 keeps the old state), and
  ModifyPlan replaces an invalid key only when `shouldRecreateIfInvalid`: `always`, or a
  reusable key by default. These keys are single-use with `recreate_if_invalid: never`, so the
  key a guest joined with never comes back as a diff: not on `up`, not on the nightly
  `preview --refresh --expect-no-changes`;
- `expiry` is ignored after creation (`ignore_changes`): a new `keyExpirySeconds` applies to
  keys minted later, instead of replacing every guest's spent key;
- the key is replaced with its guest (`replace_with`): a rebuilt guest needs a fresh key, its
  old one was used. It is minted after the guest's baseline (`depends_on`), just before the
  Tailscale steps, so it only has to outlive installing Tailscale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_tailscale as tailscale

from config import CommonConfig, Guest

PROVIDER_NAME = "tailscale"
# Only what minting needs: an OAuth access token limited to creating (and deleting) auth keys.
OAUTH_SCOPES = ("auth_keys",)
# "-": the tailnet that owns the OAuth client (the provider's default, pinned here so a stray
# TAILSCALE_TAILNET in the environment cannot point the keys at another tailnet).
CREDENTIALS_TAILNET = "-"
DESCRIPTION_LIMIT = 50  # the provider's LengthAtMost(50)


def key_description(stack: str, guest: str) -> str:
    """`smoker-infra-<stack>-<guest>`, in the characters the API takes, at most 50 of them."""
    text = re.sub(r"[^A-Za-z0-9_-]", "-", f"smoker-infra-{stack}-{guest}")
    return text[:DESCRIPTION_LIMIT]


def minting(cfg: CommonConfig) -> bool:
    """The stack mints its guests' keys: mintKeys is on and some guest joins the tailnet."""
    return cfg.tailscale.mint_keys and any(g.tailscale for g in cfg.guests)


@dataclass(frozen=True)
class KeyMinter:
    """Mints one auth key per guest through the stack's explicit tailscale provider."""

    provider: tailscale.Provider
    stack: str
    expiry_seconds: int

    def mint(
        self,
        spec: Guest,
        after: pulumi.Resource,
        machine: pulumi.Resource | None,
        parent: pulumi.Resource,
    ) -> tailscale.TailnetKey:
        ts = spec.tailscale
        assert ts is not None
        return tailscale.TailnetKey(
            f"{spec.name}-tailscale-key",
            reusable=False,
            ephemeral=False,
            preauthorized=True,
            tags=list(ts.tags),
            expiry=self.expiry_seconds,
            description=key_description(self.stack, spec.name),
            recreate_if_invalid="never",
            # `key` is a secret output: the SDK adds it to additional_secret_outputs
            opts=pulumi.ResourceOptions(
                parent=parent,
                provider=self.provider,
                depends_on=[after],
                replace_with=[machine] if machine is not None else None,
                ignore_changes=["expiry"],
            ),
        )


def key_minter(cfg: CommonConfig) -> KeyMinter | None:
    """The stack's minter (and its `tailscale` provider), or None when the feature is off."""
    if not minting(cfg):
        return None
    client_id = cfg.secrets.tailscale_oauth_client_id
    client_secret = cfg.secrets.tailscale_oauth_client_secret
    assert client_id is not None and client_secret is not None  # required by the config
    provider = tailscale.Provider(
        PROVIDER_NAME,
        oauth_client_id=pulumi.Output.secret(client_id.reveal()),
        oauth_client_secret=pulumi.Output.secret(client_secret.reveal()),
        scopes=list(OAUTH_SCOPES),
        tailnet=CREDENTIALS_TAILNET,
    )
    return KeyMinter(provider, cfg.stack, cfg.tailscale.key_expiry_seconds)
