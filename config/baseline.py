"""The guest baseline every guest gets (`baseline`): time zone, app user, fail2ban, Docker."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar

from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from config.errors import Problem, fail, problem
from config.fields import (
    TAILNET_RANGE,
    HttpsUrl,
    Int,
    Interface,
    Model,
    Network,
    Sha256,
    Text,
    TextList,
    UserName,
    pattern,
    ranged,
    rule,
)
from config.proxmox import NetworkSettings


def _version_of(value: str) -> tuple[int, ...]:
    return tuple(map(int, value.split(".")))


Version = Annotated[
    Text, pattern(r"\d+\.\d+(\.\d+)?", "must be an upstream version like 27.5.1", "pin e.g. 27.5.1")
]


def _ignore_ip(entries: tuple[str, ...]) -> tuple[str, ...]:
    for entry in entries:
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise fail(
                "is not an address/network", "write e.g. 100.64.0.0/10", value=entry
            ) from None
        if net.prefixlen < 8:
            raise fail(
                f"covers {net.num_addresses} addresses: fail2ban would never ban anyone",
                "list only trusted networks (/8 or narrower), e.g. 100.64.0.0/10",
                value=entry,
            )
    return entries


class Fail2banSettings(Model):
    """fail2ban's sshd jail."""

    max_retry: Annotated[Int, ranged(1, 20)] = Field(
        description="failures before a ban", examples=[3]
    )
    find_time_seconds: Annotated[Int, ranged(60, 86_400)] = Field(
        description="window the failures are counted in", examples=[600]
    )
    ban_time_seconds: Annotated[Int, ranged(60, 31_536_000)] = Field(
        description="how long a ban lasts", examples=[3600]
    )
    ignore_ip: Annotated[TextList, rule(_ignore_ip)] = Field(
        ("127.0.0.1/8", "::1"),
        description="addresses never banned",
        examples=[["127.0.0.1/8", "::1", "100.64.0.0/10"]],
    )


def _crun_version(value: str) -> str:
    if _version_of(value) < (1, 21):
        raise fail("is too old: unprivileged LXC needs crun >= 1.21", "pin 1.21 or newer")
    return value


class CrunSettings(Model):
    """crun, Docker's default runtime (runc fails in an unprivileged LXC)."""

    FIXES: ClassVar[dict[str, str]] = {
        "version": "pin crun >= 1.21",
        "url": "the release asset URL",
        "sha256": "the release asset's sha256",
    }
    version: Annotated[Version, rule(_crun_version)] = Field(
        description="crun release (>= 1.21)", examples=["1.21"]
    )
    url: HttpsUrl = Field(description="the release asset URL")
    sha256: Sha256 = Field(description="the release asset's sha256")


class AddressPool(Model):
    base: Network = Field(description="network the pool's subnets are cut from")
    size: Int = Field(description="prefix length of each subnet", examples=[24])

    @model_validator(mode="after")
    def _size_fits(self) -> AddressPool:
        if not self.base.prefixlen < self.size <= 30:
            raise fail(
                f"size /{self.size} must be longer than /{self.base.prefixlen} and at most /30",
                "use e.g. size: 24",
                at="size",
                value=self.size,
            )
        return self


_POOLS_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "properties": {
            "base": {"type": "string", "format": "ipv4-network"},
            "size": {"type": "integer", "minimum": 9, "maximum": 30},
        },
        "required": ["base", "size"],
        "additionalProperties": False,
    },
}


def _pools(raw: Any) -> tuple[tuple[ipaddress.IPv4Network, int], ...]:
    if not isinstance(raw, list) or not raw:
        raise fail(
            "must be a non-empty list of {base, size}", "use [{base: 172.20.0.0/16, size: 24}]"
        )
    pools = []
    for i, item in enumerate(raw):
        try:
            pool = AddressPool.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            ctx = err.get("ctx") or {}
            where = ".".join(str(p) for p in (*err["loc"], *([ctx["at"]] if "at" in ctx else [])))
            raise fail(
                ctx.get("what", "each pool needs exactly base and size"),
                ctx.get("fix", "write {base: 172.20.0.0/16, size: 24}"),
                at=f"[{i}].{where}" if where else f"[{i}]",
                value=ctx.get("value", err.get("input")),
            ) from None
        pools.append((pool.base, pool.size))
    return tuple(pools)


class DockerSettings(Model):
    """The Docker engine on every guest."""

    FIXES: ClassVar[dict[str, str]] = {
        "engineVersion": "pin e.g. 27.5.1",
        "composeVersion": "pin e.g. 2.32.4",
        "crun": "set baseline.docker.crun",
    }
    engine_version: Version = Field(description="docker-ce version", examples=["27.5.1"])
    compose_version: Version = Field(
        description="docker-compose-plugin version", examples=["2.32.4"]
    )
    address_pools: Annotated[
        tuple[tuple[ipaddress.IPv4Network, int], ...],
        BeforeValidator(_pools),
        WithJsonSchema(_POOLS_SCHEMA),
    ] = Field(
        ((ipaddress.IPv4Network("172.20.0.0/16"), 24),),
        description="networks Docker cuts its bridge networks from",
        json_schema_extra={"default": [{"base": "172.20.0.0/16", "size": 24}]},
    )
    crun: CrunSettings = Field(description="the crun runtime")
    bridge_ip: Interface | None = Field(
        None, description="docker0's address (Docker's default when unset)"
    )

    def check(self, key: str, network: NetworkSettings | None) -> Iterator[Problem]:
        """Docker's networks must not hide the guest network or the tailnet's addresses."""
        taken = [(TAILNET_RANGE, "Tailscale's 100.64.0.0/10")]
        if network is not None:
            taken.insert(0, (network.cidr, f"the guest network {network.cidr}"))
        nets = [
            (f"{key}.addressPools[{i}].base", base)
            for i, (base, _) in enumerate(self.address_pools)
        ]
        if self.bridge_ip is not None:
            nets.append((f"{key}.bridgeIp", self.bridge_ip.network))
        for where, net in nets:
            for other, label in taken:
                if net.overlaps(other):
                    yield problem(
                        where,
                        str(net),
                        f"overlaps {label}: those addresses would be routed into Docker",
                        "use a private range no guest or tailnet uses, e.g. 172.20.0.0/16",
                    )


def _app_dir(value: str) -> str:
    if not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", value):
        raise fail("is not an absolute path", "use /opt/smart-smoker-<environment>")
    parts = value.split("/")[1:]
    if any(p in (".", "..") for p in parts):
        raise fail("contains '.' or '..'", "use /opt/smart-smoker-<environment>")
    if len(parts) < 2 or parts[0] != "opt":
        raise fail(
            "is outside /opt (the baseline owns and re-modes this directory)",
            "use /opt/smart-smoker-<environment>",
        )
    return value


class BaselineSettings(Model):
    """What every guest gets before any application."""

    FIXES: ClassVar[dict[str, str]] = {
        "fail2ban": "set baseline.fail2ban",
        "docker": "set baseline.docker",
    }
    timezone: Annotated[
        Text,
        pattern(r"[A-Za-z_]+(/[A-Za-z0-9_+-]+)*", "is not a tz name", "use e.g. Europe/Paris"),
    ] = Field("America/New_York", description="the guests' time zone")
    app_user: UserName = Field("smoker", description="the user that owns the app directory")
    app_dir: Annotated[Text, rule(_app_dir, pattern=r"^/opt(/[A-Za-z0-9._-]+)+$")] = Field(
        "", description="the app directory (default /opt/smart-smoker-<environment>)"
    )
    logrotate_days: Annotated[Int, ranged(1, 3650, "days")] = Field(
        14, description="days of logs kept"
    )
    fail2ban: Fail2banSettings = Field(alias="fail2ban", description="fail2ban's sshd jail")
    docker: DockerSettings = Field(description="the Docker engine")

    @model_validator(mode="before")
    @classmethod
    def _default_app_dir(cls, data: Any, info: ValidationInfo) -> Any:
        environment = (info.context or {}).get("environment")
        if isinstance(data, dict) and data.get("appDir") is None:
            return {**data, "appDir": f"/opt/smart-smoker-{environment}"}
        return data
