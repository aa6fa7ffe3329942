"""The whole stack: what a stack file holds (`StackFile`, the schema's source) and the typed
configuration the program gets (`StackConfig`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from config.app import AppSettings
from config.baseline import BaselineSettings
from config.fields import AuthorizedKeys, Int, Model, Text, one_of, ranged
from config.guests import GuestSpec
from config.proxmox import HostShared, NetworkSettings, ProxmoxSettings
from config.secrets import Secrets
from config.tailscale import TailnetSettings

ENVIRONMENTS = ("dev", "prod")
Environment = Literal["dev", "prod"]


class StackFile(Model):
    """`config:` of `Pulumi.<stack>.yaml`, each key under the `smoker-infra:` namespace
    (secrets, set with `pulumi config set --secret`, are listed apart)."""

    environment: Annotated[Text, one_of(*ENVIRONMENTS)] | None = Field(
        None, description="dev or prod; must be the stack's name (default: the stack's name)"
    )
    proxmox: ProxmoxSettings = Field(description="the Proxmox VE API and node")
    network: NetworkSettings = Field(description="the guest network")
    host_shared: HostShared = Field(description="host-wide Proxmox objects")
    guests: dict[str, GuestSpec] = Field(description="the stack's guests, by name")
    ssh_authorized_keys: AuthorizedKeys = Field(
        (), description="public keys that may log in to the guests (at least one)"
    )
    readiness_timeout_seconds: Annotated[Int, ranged(30, 3600, "s", "use e.g. 600")] = Field(
        600, description="how long a new guest may take to answer over SSH"
    )
    baseline: BaselineSettings = Field(description="what every guest gets")
    tailscale: TailnetSettings | None = Field(None, description="the tailnet")
    app: AppSettings = Field(description="the services")


class StackConfig(Model):
    """The validated configuration of one stack (built by `parse_config`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    stack: str
    environment: Environment
    proxmox: ProxmoxSettings
    network: NetworkSettings
    host_shared: HostShared
    guests: tuple[GuestSpec, ...]
    ssh_authorized_keys: tuple[str, ...]
    readiness_timeout_seconds: int
    baseline: BaselineSettings
    tailnet: str
    app: AppSettings
    secrets: Secrets = Field(repr=False)

    def guest(self, name: str) -> GuestSpec:
        return next(g for g in self.guests if g.name == name)
