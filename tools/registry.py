"""Image tag -> digest, as `pulumi preview` gets it from pulumi-docker's registry lookup.

`make synth` answers from a stand-in table (`tools/synth_registry.json`), so it needs no network;
`python -m tools.synth STACK --resolve` asks the registries instead (`resolve`): the Docker
Registry HTTP API v2, a HEAD of the tag's manifest that accepts an image index or manifest list,
so a multi-arch tag yields the index digest (what `docker pull` records and the engine checks),
with an anonymous bearer token when the registry asks for one (Docker Hub does).
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deploy.release import split_ref

STAND_INS = Path(__file__).resolve().parent / "synth_registry.json"
DOCKER_HUB = "registry-1.docker.io"
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
TIMEOUT_SECONDS = 20


class RegistryError(Exception):
    """A tag the registry would not resolve: the message names the reference and the fix."""


def stand_in_digest(ref: str, overrides: Mapping[str, str] | None = None) -> str:
    """The synth's answer for `ref`: an override, the stand-in table's, or one derived from it."""
    if overrides and ref in overrides:
        return overrides[ref]
    table: dict[str, str] = json.loads(STAND_INS.read_text())["digests"]
    return table.get(ref) or "sha256:" + hashlib.sha256(f"stand-in:{ref}".encode()).hexdigest()


def split_reference(ref: str) -> tuple[str, str, str]:
    """`[registry/]name[:tag]` -> (registry host, repository, tag), with Docker Hub's defaults."""
    name, tag, _ = split_ref(ref)
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest, tag or "latest"
    return DOCKER_HUB, name if "/" in name else f"library/{name}", tag or "latest"


def resolve(ref: str, insecure: bool = False) -> str:
    """The digest the registry serves for `ref` now (`insecure`: plain http, for a local
    registry such as the tests' stand-in)."""
    registry, repository, tag = split_reference(ref)
    scheme = "http" if insecure else "https"
    url = f"{scheme}://{registry}/v2/{repository}/manifests/{urllib.parse.quote(tag)}"
    headers = {"Accept": MANIFEST_TYPES}
    try:
        response = _head(url, headers)
    except urllib.error.HTTPError as err:
        challenge = err.headers.get("WWW-Authenticate", "") if err.code == 401 else ""
        if not challenge.lower().startswith("bearer "):
            raise _failed(ref, err) from None
        headers["Authorization"] = f"Bearer {_token(challenge, repository, ref)}"
        try:
            response = _head(url, headers)
        except urllib.error.HTTPError as again:
            raise _failed(ref, again) from None
    except urllib.error.URLError as err:
        raise RegistryError(f"{ref}: cannot reach {registry} ({err.reason})") from None
    digest = response.headers.get("Docker-Content-Digest", "")
    if not DIGEST.fullmatch(digest):
        raise RegistryError(f"{ref}: {registry} sent no sha256 Docker-Content-Digest")
    return digest


def _head(url: str, headers: Mapping[str, str]) -> Any:
    request = urllib.request.Request(url, headers=dict(headers), method="HEAD")
    return urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)


def _token(challenge: str, repository: str, ref: str) -> str:
    fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    query = {"service": fields.get("service", ""), "scope": f"repository:{repository}:pull"}
    url = f"{fields.get('realm', '')}?{urllib.parse.urlencode(query)}"
    if not url.startswith(("https://", "http://")):
        raise RegistryError(f"{ref}: the registry's token realm is not a URL: {challenge!r}")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as answer:
            body = json.load(answer)
    except (urllib.error.URLError, ValueError) as err:
        raise RegistryError(f"{ref}: no pull token from {fields.get('realm')}: {err}") from None
    token = body.get("token") or body.get("access_token")
    if not token:
        raise RegistryError(f"{ref}: the token service answered without a token")
    return str(token)


def _failed(ref: str, err: urllib.error.HTTPError) -> RegistryError:
    if err.code == 404:
        return RegistryError(f"{ref}: no such tag (HTTP 404); fix the image name or app.tag")
    if err.code in (401, 403):
        return RegistryError(
            f"{ref}: HTTP {err.code}: a private image needs app.registryAuth and the secret "
            "registryPassword (pulumi preview uses them; this lookup is anonymous)"
        )
    return RegistryError(f"{ref}: HTTP {err.code} {err.reason}")
