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


# What a served directory may not be: the root, and where a guest keeps its secrets, keys and
# state (`/etc/smart-smoker` holds the env files, `/var/lib/tailscale` the node key).
UNSERVABLE_DIRS = ("/etc", "/root", "/home", "/run", "/proc", "/sys", "/dev", "/boot", "/var/lib")
_SEGMENT = r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*"
_DIRECTORY = rf"/{_SEGMENT}(/{_SEGMENT})*"
_MOUNT = rf"/({_SEGMENT}(/{_SEGMENT})*/?)?"
_SERVE_DIR_FIX = "serve a directory of its own, e.g. /srv/smart-smoker/device-releases"


def _directory(value: str) -> str:
    if not re.fullmatch(_DIRECTORY, value):
        raise fail(
            f"directory '{value}' must be an absolute, normalized path (letters, digits, "
            "'.', '_', '~', '-'; no '..', no trailing '/')",
            _SERVE_DIR_FIX,
        )
    under = [d for d in UNSERVABLE_DIRS if value == d or value.startswith(d + "/")]
    if under:
        raise fail(
            f"directory '{value}' is under {under[0]}, where the guest keeps secrets, keys or "
            "state: everything in a served directory is readable on the tailnet",
            _SERVE_DIR_FIX,
        )
    return value


def _mount(value: str) -> str:
    if not re.fullmatch(_MOUNT, value):
        raise fail(
            f"path '{value}' must start with '/' and be a normalized URL path (letters, digits, "
            "'.', '_', '~', '-'; no '..')",
            "use e.g. /device-releases",
        )
    return value.rstrip("/") or "/"


class ServeDirectory(Model):
    """`tailscale serve --https=<https_port> --set-path=<path> <directory>` (never funnel)."""

    https_port: Annotated[Int, ranged(1, 65535)] = Field(
        description="the HTTPS port on the tailnet name (not a port of `serve`: never funneled)",
        examples=[9443],
    )
    path: Annotated[Text, rule(_mount, pattern=f"^{_MOUNT}$")] = Field(
        description="the URL path the directory is served at", examples=["/device-releases"]
    )
    directory: Annotated[Text, rule(_directory, pattern=f"^{_DIRECTORY}$")] = Field(
        description="the absolute directory on the guest whose files are served",
        examples=["/srv/smart-smoker/device-releases"],
    )

    @property
    def mount(self) -> str:
        """The handler's mount point as tailscaled records it: a directory's ends in '/'."""
        return self.path if self.path == "/" else self.path + "/"


def _serve_directories(value: tuple[ServeDirectory, ...]) -> tuple[ServeDirectory, ...]:
    places = [(d.https_port, d.path) for d in value]
    if len(set(places)) != len(places):
        raise fail(
            "two directories use the same httpsPort and path",
            "give each directory its own path (or port)",
        )
    return tuple(sorted(value, key=lambda d: (d.https_port, d.path)))


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
    serve_directories: Annotated[tuple[ServeDirectory, ...], rule(_serve_directories)] = Field(
        (),
        description="directories served read-only on the tailnet name (tailnet only, never "
        "funneled), e.g. the device releases the cloud guest publishes",
    )

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
        mapped = {m.https_port for m in self.serve}
        for i, served in enumerate(self.serve_directories):
            if served.https_port in mapped:
                yield problem(
                    f"{key}.serveDirectories[{i}].httpsPort",
                    served.https_port,
                    "is also a port of serve: a directory shares no port with a mapping (funnel "
                    "publishes a whole port, and the mapping would answer beside the files)",
                    "give the directory a port of its own, e.g. 9443",
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
