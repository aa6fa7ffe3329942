"""The policies over the Compose projects the program deploys: what a service publishes, and
which images a release runs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import yaml

from policy.model import (
    GUESTS,
    LOOPBACK,
    UNKNOWN,
    Finding,
    Resource,
    is_published,
    is_release,
    items,
    writes,
)

DIGEST_MARK = "@sha256:"
# The device projects (layout.project_name): the device VM's, and the physical smoker's, an
# existing machine that has no Proxmox resource to carry the `device` tag.
DEVICE_PROJECTS = ("smart-smoker-device", "smoker-device")


def _published_on_loopback(port: Any) -> bool:
    if isinstance(port, Mapping):
        return str(port.get("host_ip", "")) in LOOPBACK
    text = str(port)
    return any(text.startswith(f"{ip}:") for ip in LOOPBACK)


def _guest_of(r: Resource, guests: Iterable[Resource]) -> Resource | None:
    owners = [g for g in guests if r.name.startswith(f"{g.name}-")]
    return max(owners, key=lambda g: len(g.name), default=None)


def _compose_files(resources: Sequence[Resource]) -> Iterator[tuple[Resource, Any]]:
    """Every compose file the program deploys: written by a command (MongoDB's bootstrap
    file) or carried by a Release (the project, deployed by the safe-deploy engine)."""
    for r in resources:
        if (writes(r) or "").endswith("compose.yaml"):
            yield r, r.props.get("stdin")
        elif is_release(r):
            yield r, r.props.get("compose")


def _services(text: Any) -> Mapping[str, Any] | None:
    """A compose file's services, or None when it is not YAML with a services mapping."""
    try:
        services = (yaml.safe_load(str(text)) or {}).get("services") or {}
    except (yaml.YAMLError, AttributeError):
        return None
    return services if isinstance(services, Mapping) else None


def loopback_ports(resources: Sequence[Resource]) -> Iterator[Finding]:
    """MongoDB anywhere, and every service on a non-device guest, publish on loopback only."""
    guests = [r for r in resources if r.type in GUESTS]
    for r, text in _compose_files(resources):
        if text == UNKNOWN:
            continue
        services = _services(text)
        if services is None:
            yield (
                r,
                f"{r.label} writes a compose file that is not YAML; fix: render it with rendering/",
            )
            continue
        guest = _guest_of(r, guests)
        device = (guest is not None and "device" in items(guest.props.get("tags"))) or (
            guest is None
            and is_release(r)
            and (r.props.get("project") in DEVICE_PROJECTS or is_published(r))
        )
        for name, service in services.items():
            if not isinstance(service, Mapping):
                continue
            is_mongo = name == "mongo" or str(service.get("image", "")).startswith("mongo")
            if device and not is_mongo:
                continue  # a device's UI is on the LAN by design (firewallAllow, DEVICE_PORTS)
            if service.get("network_mode") == "host":
                yield (
                    r,
                    (
                        f"{r.label} runs service {name} with host networking, which binds every "
                        "interface; fix: publish its ports as 127.0.0.1:<port>:<port> instead"
                    ),
                )
            for port in items(service.get("ports")):
                if not _published_on_loopback(port):
                    yield (
                        r,
                        (
                            f"{r.label} publishes service {name} port {port} beyond loopback; fix: "
                            "bind it as 127.0.0.1:<host>:<container> (Tailscale serve publishes it)"
                        ),
                    )


def release_images_pinned(resources: Sequence[Resource]) -> Iterator[Finding]:
    """A release's compose file and its `images` name digests: what the preview showed (and
    prod's approval approved) is what deploys, and a moved tag is refused on the guest."""
    for r in resources:
        if not is_release(r) or r.props.get("compose") == UNKNOWN:
            continue
        services = _services(r.props.get("compose")) or {}
        refs = {name: str(svc.get("image", "")) for name, svc in services.items()}
        images = r.props.get("images")
        if isinstance(images, Mapping):
            refs.update({f"images.{k}": str(v) for k, v in images.items() if v != UNKNOWN})
        for name, ref in sorted(refs.items()):
            if DIGEST_MARK not in ref:
                yield (
                    r,
                    f"{r.label} runs {name} as {ref!r}, a tag that can move after the preview; "
                    "fix: pin it to the registry's digest (components/images.planned_images)",
                )
