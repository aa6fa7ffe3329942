"""Put harness images into the STAND-IN registry, and resolve tags to digests from a guest.

:func:`publish` pushes from the harness engine through the registry's loopback listener
(``Registry(..., loopback=True)``): Docker treats 127.0.0.0/8 registries as insecure without any
daemon flag, and the harness engine's flags are fixed. Content is addressed by digest, so what
was pushed as ``127.0.0.1:PORT/repo:tag`` is the same manifest a guest pulls as
``169.254.77.1:PORT/repo@sha256:...``. Without a loopback listener the image is pushed from the
guest's nested engine instead (after ``guest.load_image``; the guest daemon must list the
registry in ``insecure-registries``).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping

from testbed.harness import Engine, Guest, HarnessError
from testbed.harness.engine import poll_until

from .server import Registry
from .storage import DIGEST_RE, MANIFEST_TYPES

_PUSHED_RE = re.compile(r"^(?P<tag>\S+): digest: (?P<digest>sha256:[0-9a-f]{64}) size: \d+$", re.M)


def _split(target: str) -> tuple[str, str]:
    repo, sep, tag = target.rpartition(":")
    if not sep or not repo or "/" in tag:
        raise ValueError(f"{target!r} is not 'repo:tag'")
    return repo, tag


def publish(
    engine: Engine,
    guest: Guest | None,
    registry: Registry,
    images: Mapping[str, str],
    *,
    from_guest: bool = False,
) -> dict[str, str]:
    """Push each local image (key: a ref on the harness engine) to the registry as the value
    (``"repo:tag"``); return ``{"repo:tag": "repo@sha256:..."}`` with the digests the registry
    reports.

    Pushes from the harness engine via the registry's loopback listener, or (without one, or
    with ``from_guest``) from the guest's nested engine after ``guest.load_image``. The
    temporary registry tags are removed again from whichever engine pushed."""
    published: dict[str, str] = {}
    for local, target in images.items():
        repo, tag = _split(target)
        if registry.loopback_address and not from_guest:
            remote = f"{registry.loopback_address}/{target}"
            engine.docker("tag", local, remote)
            try:
                out = engine.docker_text("push", remote, timeout=900)
            finally:
                engine.docker("rmi", remote, check=False)
        else:
            if guest is None:
                raise HarnessError("publish without a loopback listener needs a guest")
            remote = f"{registry.address}/{target}"
            guest.load_image(local)
            quoted = shlex.quote(remote)
            out = guest.run(
                f"docker tag {shlex.quote(local)} {quoted} && docker push {quoted};"
                f" rc=$?; docker rmi {quoted} >/dev/null; exit $rc",
                timeout=900,
            ).stdout
        digest = registry.resolve(repo, tag)
        pushed = _PUSHED_RE.search(out)
        if pushed is None or pushed["digest"] != digest:
            raise HarnessError(
                f"docker push {remote} reported {pushed and pushed['digest']!r},"
                f" the registry has {digest}:\n{out}"
            )
        published[target] = f"{repo}@{digest}"
    return published


def resolve_digest(guest: Guest, registry_address: str, repo: str, tag: str) -> str:
    """The digest ``repo:tag`` points at, asked from the guest without pulling: an HTTP
    ``HEAD`` on the manifest, accepting every manifest type Docker 20.10 accepts (so the
    registry answers the digest of what ``docker pull`` would get). LookupError if the
    registry does not know the tag."""
    url = f"http://{registry_address}/v2/{repo}/manifests/{tag}"
    accept = " ".join(f"-H {shlex.quote('Accept: ' + t)}" for t in MANIFEST_TYPES)
    result = guest.run(
        f"curl -sS --max-time 30 -o /dev/null -D - -I {accept} {shlex.quote(url)}", timeout=60
    )
    lines = result.stdout.replace("\r", "").splitlines()
    status = lines[0].split()[1] if lines and len(lines[0].split()) > 1 else "?"
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    digest = headers.get("docker-content-digest", "")
    if status == "404":
        raise LookupError(f"{registry_address}/{repo}:{tag} is unknown to the registry")
    if status != "200" or not DIGEST_RE.fullmatch(digest):
        raise HarnessError(f"HEAD {url} answered {status} without a digest:\n{result.stdout}")
    return digest


def trust_registry(guest: Guest, address: str) -> None:
    """Add ``address`` to the guest daemon's ``insecure-registries`` (keeping the rest of
    /etc/docker/daemon.json) and restart docker until it reports the registry as insecure."""
    raw = guest.run("cat /etc/docker/daemon.json 2>/dev/null || true").stdout
    config = json.loads(raw) if raw.strip() else {}
    registries = config.setdefault("insecure-registries", [])
    if address not in registries:
        registries.append(address)
    guest.run(
        "cat > /etc/docker/daemon.json.new && mv /etc/docker/daemon.json.new"
        " /etc/docker/daemon.json && systemctl restart docker",
        input=json.dumps(config, indent=2).encode() + b"\n",
    )

    def insecure() -> bool:
        out = guest.run(
            "docker info --format '{{json .RegistryConfig.IndexConfigs}}'", check=False
        ).stdout
        return out.startswith("{") and json.loads(out).get(address, {}).get("Secure") is False

    poll_until(insecure, timeout=60, what=f"the guest's dockerd to treat {address} as insecure")
