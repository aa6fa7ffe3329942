"""Tailscale: the tailnet (`tailscale`) and each guest's node (`guests.<name>.tailscale`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, ClassVar

from pydantic import Field

from config.errors import Problem, fail, problem
from config.fields import Bool, Hostname, Int, Model, Text, TextList, ranged, rule

FUNNEL_PORTS = (443, 8443, 10000)
# A minted auth key only has to last from its creation (just before the guest's Tailscale steps)
# until `tailscale up` uses it: 10 minutes covers installing Tailscale, a day a stalled run.
KEY_EXPIRY_MIN_SECONDS = 600
KEY_EXPIRY_MAX_SECONDS = 86400
_TS_TAG = re.compile(r"^tag:[a-z0-9-]+$")


def _ts_tags(tags: tuple[str, ...]) -> tuple[str, ...]:
    bad = [t for t in tags if not _TS_TAG.match(t)]
    if bad or not tags:
        raise fail(
            f"needs Tailscale ACL tags like tag:server (bad: {bad or 'none given'})",
            "use e.g. [tag:server, tag:production]",
        )
    return tuple(sorted(set(tags)))


def _target(value: str) -> str:
    if not re.fullmatch(r"http://127\.0\.0\.1:\d{1,5}(/\S*)?", value):
        raise fail(
            f"target '{value}' must be http://127.0.0.1:<port> (loopback only)",
            "serve a port on the guest's loopback",
        )
    return value


class ServeMapping(Model):
    """`tailscale serve|funnel --https=<https_port> <target>`."""

    https_port: Annotated[Int, ranged(1, 65535)] = Field(
        description="the HTTPS port on the tailnet name", examples=[443]
    )
    target: Annotated[Text, rule(_target, pattern=r"^http://127\.0\.0\.1:\d{1,5}(/\S*)?$")] = Field(
        description="the loopback URL served", examples=["http://127.0.0.1:80"]
    )


def _serve(value: tuple[ServeMapping, ...]) -> tuple[ServeMapping, ...]:
    ports = [m.https_port for m in value]
    if len(set(ports)) != len(ports):
        raise fail("two mappings use the same httpsPort", "give each mapping its own port")
    return tuple(sorted(value, key=lambda m: m.https_port))


class TailscaleSettings(Model):
    """A guest's Tailscale node."""

    FIXES: ClassVar[dict[str, str]] = {
        "hostname": "use e.g. smokecloud",
        "tags": "use e.g. [tag:server, tag:production]",
    }
    hostname: Hostname = Field(
        description="the node's name on the tailnet", examples=["smokecloud"]
    )
    tags: Annotated[TextList, rule(_ts_tags)] = Field(
        description="ACL tags the node advertises", examples=[["tag:server", "tag:production"]]
    )
    accept_dns: Bool = Field(True, description="use the tailnet's DNS settings")
    serve: Annotated[tuple[ServeMapping, ...], rule(_serve)] = Field(
        (), description="HTTPS ports served on the tailnet name"
    )
    funnel: Bool = Field(False, description="publish the served ports to the internet (prod only)")

    def check(self, key: str, environment: str) -> Iterator[Problem]:
        if self.funnel and environment != "prod":
            yield problem(
                f"{key}.funnel",
                True,
                "funnel publishes to the internet and is for prod only",
                "set funnel: false (serve keeps it on the tailnet)",
            )
        if self.funnel and self.serve:
            bad = [m.https_port for m in self.serve if m.https_port not in FUNNEL_PORTS]
            if bad:
                yield problem(
                    f"{key}.serve", bad, "funnel only listens on 443, 8443 and 10000", "use those"
                )


class TailnetSettings(Model):
    """The tailnet the guests join."""

    tailnet: Hostname | None = Field(
        None,
        description="the tailnet's DNS name (for the https URLs)",
        examples=["tail74646.ts.net"],
    )
    mint_keys: Bool = Field(
        False,
        description="mint each guest's single-use auth key with the OAuth client "
        "(tailscaleOauthClientId/-Secret) instead of using tailscaleAuthKey",
    )
    key_expiry_seconds: Annotated[
        Int,
        ranged(
            KEY_EXPIRY_MIN_SECONDS,
            KEY_EXPIRY_MAX_SECONDS,
            "s",
            "use e.g. 3600: the key only has to last until the guest joins",
        ),
    ] = Field(3600, description="with mintKeys: how long a minted key stays usable")
