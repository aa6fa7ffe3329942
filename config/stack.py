"""The whole stack: what a stack file holds (`StackFile`, the schema's source) and the typed
configuration the program gets (`StackConfig`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from config.app import AppSettings
from config.baseline import BaselineSettings
from config.fields import AuthorizedKeys, Int, Model, Text, one_of, ranged
from config.guests import Guest, GuestSpec, HostSpec, is_device
from config.proxmox import HostShared, HostStackRef, NetworkSettings, ProxmoxSettings
from config.runner import RunnerSettings
from config.secrets import Secrets
from config.tailscale import TailnetSettings

ENVIRONMENTS = ("host", "dev", "prod")
APP_ENVIRONMENTS = ("dev", "prod")  # the stacks that run the services
Environment = Literal["host", "dev", "prod"]


class StackFile(Model):
    """`config:` of `Pulumi.<stack>.yaml`, each key under the `smoker-infra:` namespace
    (secrets, set with `pulumi config set --secret`, are listed apart)."""

    environment: Annotated[Text, one_of(*ENVIRONMENTS)] | None = Field(
        None, description="host, dev or prod; must be the stack's name (default: the stack's name)"
    )
    proxmox: ProxmoxSettings = Field(description="the Proxmox VE API and node")
    network: NetworkSettings = Field(description="the guest network")
    host_shared: HostShared | None = Field(
        None, description="host stack only: the host-wide Proxmox objects it creates"
    )
    host_stack: HostStackRef | None = Field(
        None,
        description="dev and prod: the host stack whose outputs they read "
        "(default organization/smoker-infra/host)",
    )
    guests: dict[str, GuestSpec | HostSpec] = Field(
        description="the stack's guests, by name: Proxmox guests (kind lxc or vm) and existing "
        "machines (kind host)"
    )
    ssh_authorized_keys: AuthorizedKeys = Field(
        (), description="public keys that may log in to the guests (at least one)"
    )
    readiness_timeout_seconds: Annotated[Int, ranged(30, 3600, "s", "use e.g. 600")] = Field(
        600, description="how long a new guest may take to answer over SSH"
    )
    baseline: BaselineSettings = Field(description="what every guest gets")
    tailscale: TailnetSettings | None = Field(None, description="the tailnet")
    runner: RunnerSettings | None = Field(
        None, description="host stack only: the self-hosted GitHub Actions runner on its guests"
    )
    app: AppSettings | None = Field(None, description="dev and prod: the services")


class CommonConfig(Model):
    """What every stack's validated configuration has (built by `parse_config`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    stack: str
    environment: Environment
    proxmox: ProxmoxSettings
    network: NetworkSettings
    guests: tuple[Guest, ...]
    ssh_authorized_keys: tuple[str, ...]
    readiness_timeout_seconds: int
    baseline: BaselineSettings
    tailnet: str
    tailscale: TailnetSettings = Field(default_factory=TailnetSettings)  # mintKeys and expiry
    secrets: Secrets = Field(repr=False)

    def guest(self, name: str) -> Guest:
        return next(g for g in self.guests if g.name == name)

    @property
    def proxmox_guests(self) -> tuple[GuestSpec, ...]:
        """The guests that are Proxmox resources (kind lxc or vm): the ones with a VMID."""
        return tuple(g for g in self.guests if isinstance(g, GuestSpec))

    @property
    def hosts(self) -> tuple[HostSpec, ...]:
        """The existing machines (kind host)."""
        return tuple(g for g in self.guests if isinstance(g, HostSpec))

    @property
    def devices(self) -> tuple[Guest, ...]:
        """The guests that run the device service and update by pull: the device-simulation VM
        (kind vm) and the physical smoker (kind host)."""
        return tuple(g for g in self.guests if is_device(g))


class StackConfig(CommonConfig):
    """dev or prod: guests that run the services, on host-wide objects read from the host stack."""

    host_stack: HostStackRef
    app: AppSettings


class HostStackConfig(CommonConfig):
    """host: the host-wide Proxmox objects and the self-hosted CI runner guest."""

    host_shared: HostShared
    runner: RunnerSettings
