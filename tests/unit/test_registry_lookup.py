"""tools.registry: the tag -> digest lookup `synth --resolve` makes (the registry stand-in over
real HTTP on 127.0.0.1, and a bearer-token challenge as Docker Hub sends it), and the stand-in
answers `make synth` gives."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from testbed.registry import Registry
from testbed.registry.storage import MANIFEST_LIST_V2, MANIFEST_V2
from tools.registry import DOCKER_HUB, RegistryError, resolve, split_reference, stand_in_digest

REPO = "smart-smoker-backend"


def put_image(registry: Registry, tag: str, payload: bytes) -> str:
    """A one-layer image pushed straight into the stand-in's storage; its manifest digest."""
    storage = registry.storage
    config = json.dumps({"architecture": "arm", "os": "linux", "payload": payload.hex()}).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config),
            "digest": storage.put_blob(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": len(payload),
                "digest": storage.put_blob(payload),
            }
        ],
    }
    return storage.put_manifest(REPO, tag, json.dumps(manifest).encode(), MANIFEST_V2)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "registry", "127.0.0.1") as reg:
        yield reg


@pytest.mark.parametrize(
    ("ref", "parts"),
    [
        ("mongo:7.0", (DOCKER_HUB, "library/mongo", "7.0")),
        ("benjr70/smart-smoker-backend", (DOCKER_HUB, "benjr70/smart-smoker-backend", "latest")),
        ("ghcr.io/o/r:v1.2.3", ("ghcr.io", "o/r", "v1.2.3")),
        ("169.254.77.1:5000/smoker/backend:7", ("169.254.77.1:5000", "smoker/backend", "7")),
        ("localhost/a:b", ("localhost", "a", "b")),
    ],
)
def test_references_split_like_docker(ref: str, parts: tuple[str, str, str]) -> None:
    assert split_reference(ref) == parts


def test_a_tag_resolves_to_the_digest_the_registry_serves(registry: Registry) -> None:
    single = put_image(registry, "v1", b"one")
    assert resolve(f"{registry.address}/{REPO}:v1", insecure=True) == single
    moved = put_image(registry, "v1", b"two")
    assert moved != single and resolve(f"{registry.address}/{REPO}:v1", insecure=True) == moved


def test_a_multi_arch_tag_resolves_to_its_index(registry: Registry) -> None:
    arm = put_image(registry, "arm", b"arm")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_LIST_V2,
            "manifests": [
                {
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "digest": arm,
                    "size": 1,
                    "platform": {"architecture": "arm", "os": "linux", "variant": "v7"},
                }
            ],
        }
    ).encode()
    digest = registry.storage.put_manifest(REPO, "multi", index, MANIFEST_LIST_V2)
    assert resolve(f"{registry.address}/{REPO}:multi", insecure=True) == digest != arm


def test_a_missing_tag_names_the_reference_and_the_fix(registry: Registry) -> None:
    with pytest.raises(RegistryError, match=r"no such tag \(HTTP 404\); fix the image name"):
        resolve(f"{registry.address}/{REPO}:nope", insecure=True)


class _TokenRegistry(http.server.BaseHTTPRequestHandler):
    """Asks for a bearer token the way Docker Hub does, then answers with a digest."""

    digest = "sha256:" + "7" * 64
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_HEAD(self) -> None:
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization")})
        port = self.server.server_address[1]
        if self.headers.get("Authorization") != "Bearer t0k3n":
            self.send_response(401)
            self.send_header(
                "WWW-Authenticate",
                f'Bearer realm="http://127.0.0.1:{port}/token",service="registry.test"',
            )
        else:
            self.send_response(200)
            self.send_header("Docker-Content-Digest", self.digest)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.seen.append({"path": self.path})
        body = json.dumps({"token": "t0k3n"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_an_anonymous_pull_token_is_fetched_when_the_registry_asks() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert resolve(f"127.0.0.1:{port}/o/r:v1", insecure=True) == _TokenRegistry.digest
    finally:
        server.shutdown()
        server.server_close()
    token_request = next(s for s in _TokenRegistry.seen if s["path"].startswith("/token"))
    assert "scope=repository%3Ao%2Fr%3Apull" in token_request["path"]
    assert "service=registry.test" in token_request["path"]


def test_stand_in_answers_are_deterministic_and_overridable() -> None:
    known = stand_in_digest("benjr70/smart-smoker-backend:nightly")
    assert known == stand_in_digest("benjr70/smart-smoker-backend:nightly")
    derived = stand_in_digest("benjr70/smart-smoker-backend:v9.9.9")
    assert derived.startswith("sha256:") and len(derived) == 71 and derived != known
    moved = "sha256:" + "e" * 64
    assert stand_in_digest("x:y", {"x:y": moved}) == moved
