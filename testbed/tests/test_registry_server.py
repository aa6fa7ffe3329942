"""Protocol tests of the STAND-IN registry (testbed/registry/server.py) over real HTTP on
127.0.0.1, with ``urllib`` as the client: uploads, digest checks, manifests, tags, errors."""

from __future__ import annotations

import hashlib
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from email.message import Message
from pathlib import Path

import pytest

from testbed.registry import Registry
from testbed.registry.storage import MANIFEST_LIST_V2, MANIFEST_V2

REPO = "smart-smoker-backend"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "registry", "127.0.0.1") as reg:
        yield reg


def call(
    registry: Registry,
    method: str,
    path: str,
    data: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Message, bytes]:
    """``(status, headers, body)`` of one request; errors are returned, not raised."""
    url = path if path.startswith("http") else f"http://{registry.address}{path}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


def error_code(body: bytes) -> str:
    """The code of the registry's error JSON, checking its shape on the way."""
    doc = json.loads(body)
    assert set(doc) == {"errors"} and len(doc["errors"]) == 1
    assert {"code", "message", "detail"} <= set(doc["errors"][0])
    return doc["errors"][0]["code"]


def push_blob(registry: Registry, data: bytes, repo: str = REPO) -> str:
    digest = digest_of(data)
    status, _, _ = call(registry, "POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", data)
    assert status == 201
    return digest


def image_manifest(registry: Registry, payload: bytes) -> bytes:
    """A schema-2 manifest whose config and layer are pushed to the registry first."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "payload": payload.hex()})
    config_digest = push_blob(registry, config.encode())
    layer_digest = push_blob(registry, payload)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config),
            "digest": config_digest,
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": len(payload),
                "digest": layer_digest,
            }
        ],
    }
    return json.dumps(manifest, indent=3).encode()


def put_manifest(registry: Registry, ref: str, body: bytes, media_type: str = MANIFEST_V2) -> str:
    status, headers, _ = call(
        registry, "PUT", f"/v2/{REPO}/manifests/{ref}", body, {"Content-Type": media_type}
    )
    assert status == 201
    assert headers["Location"] == f"/v2/{REPO}/manifests/{digest_of(body)}"
    return headers["Docker-Content-Digest"]


def test_version_check(registry: Registry) -> None:
    status, headers, _ = call(registry, "GET", "/v2/")
    assert status == 200
    assert headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_monolithic_upload_then_head_and_get(registry: Registry) -> None:
    data = b"layer bytes " * 1000
    digest = digest_of(data)
    status, headers, _ = call(registry, "POST", f"/v2/{REPO}/blobs/uploads/?digest={digest}", data)
    assert status == 201
    assert headers["Docker-Content-Digest"] == digest
    assert headers["Location"] == f"/v2/{REPO}/blobs/{digest}"
    status, headers, body = call(registry, "HEAD", f"/v2/{REPO}/blobs/{digest}")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == str(len(data))
    assert headers["Docker-Content-Digest"] == digest
    status, _, body = call(registry, "GET", f"/v2/{REPO}/blobs/{digest}")
    assert (status, body) == (200, data)
    status, headers, body = call(
        registry, "GET", f"/v2/{REPO}/blobs/{digest}", headers={"Range": "bytes=5-9"}
    )
    assert (status, body, headers["Content-Range"]) == (206, data[5:10], f"bytes 5-9/{len(data)}")
    assert (registry.root / "blobs/sha256" / digest.split(":")[1]).read_bytes() == data


def test_chunked_upload_with_patch_and_put(registry: Registry) -> None:
    parts = [b"a" * 70_000, b"b" * 5, b"c" * 12_345]
    data = b"".join(parts)
    status, headers, _ = call(registry, "POST", f"/v2/{REPO}/blobs/uploads/")
    assert status == 202
    assert headers["Range"] == "0-0"
    location = headers["Location"]
    assert location.startswith(f"/v2/{REPO}/blobs/uploads/")
    assert headers["Docker-Upload-UUID"] == location.rsplit("/", 1)[1]
    offset = 0
    for part in parts[:2]:
        content_range = f"{offset}-{offset + len(part) - 1}"
        status, headers, _ = call(
            registry, "PATCH", location, part, {"Content-Range": content_range}
        )
        offset += len(part)
        assert (status, headers["Range"]) == (202, f"0-{offset - 1}")
    # A chunk that does not start where the upload ends is refused, the upload survives.
    status, headers, body = call(registry, "PATCH", location, b"x", {"Content-Range": "0-0"})
    assert (status, error_code(body), headers["Range"]) == (
        416,
        "BLOB_UPLOAD_INVALID",
        f"0-{offset - 1}",
    )
    status, headers, _ = call(registry, "GET", location)
    assert (status, headers["Range"]) == (204, f"0-{offset - 1}")
    # The last chunk with chunked transfer encoding (as Docker sends layers), then commit.
    status, _, _ = call(registry, "PATCH", location, iter([parts[2][:1000], parts[2][1000:]]))
    assert status == 202
    digest = digest_of(data)
    status, headers, _ = call(registry, "PUT", f"{location}?digest={digest}", b"")
    assert (status, headers["Docker-Content-Digest"]) == (201, digest)
    assert call(registry, "GET", f"/v2/{REPO}/blobs/{digest}")[2] == data
    assert error_code(call(registry, "GET", location)[2]) == "BLOB_UPLOAD_UNKNOWN"


def test_put_with_final_chunk(registry: Registry) -> None:
    location = call(registry, "POST", f"/v2/{REPO}/blobs/uploads/")[1]["Location"]
    call(registry, "PATCH", location, b"first-")
    digest = digest_of(b"first-last")
    status, _, _ = call(registry, "PUT", f"{location}?digest={digest}", b"last")
    assert status == 201
    assert call(registry, "GET", f"/v2/{REPO}/blobs/{digest}")[2] == b"first-last"


def test_digest_mismatch_is_rejected(registry: Registry) -> None:
    wrong = digest_of(b"something else")
    status, _, body = call(registry, "POST", f"/v2/{REPO}/blobs/uploads/?digest={wrong}", b"data")
    assert (status, error_code(body)) == (400, "DIGEST_INVALID")
    location = call(registry, "POST", f"/v2/{REPO}/blobs/uploads/")[1]["Location"]
    call(registry, "PATCH", location, b"data")
    status, _, body = call(registry, "PUT", f"{location}?digest={wrong}", b"")
    assert (status, error_code(body)) == (400, "DIGEST_INVALID")
    assert call(registry, "HEAD", f"/v2/{REPO}/blobs/{wrong}")[0] == 404
    assert call(registry, "HEAD", f"/v2/{REPO}/blobs/{digest_of(b'data')}")[0] == 404
    status, _, body = call(registry, "POST", f"/v2/{REPO}/blobs/uploads/?digest=md5:abc", b"x")
    assert (status, error_code(body)) == (400, "DIGEST_INVALID")


def test_cross_repo_mount(registry: Registry) -> None:
    digest = push_blob(registry, b"shared layer", repo="other/repo")
    status, headers, _ = call(
        registry, "POST", f"/v2/{REPO}/blobs/uploads/?mount={digest}&from=other/repo"
    )
    assert (status, headers["Docker-Content-Digest"]) == (201, digest)
    unknown = digest_of(b"never pushed")
    status, headers, _ = call(
        registry, "POST", f"/v2/{REPO}/blobs/uploads/?mount={unknown}&from=other/repo"
    )
    assert status == 202 and "/blobs/uploads/" in headers["Location"]


def test_manifest_put_get_by_tag_and_digest(registry: Registry) -> None:
    body = image_manifest(registry, b"v1")
    digest = put_manifest(registry, "nightly", body)
    assert digest == digest_of(body)
    for ref in ("nightly", digest):
        status, headers, got = call(
            registry, "GET", f"/v2/{REPO}/manifests/{ref}", headers={"Accept": MANIFEST_V2}
        )
        assert (status, got) == (200, body)
        assert headers["Content-Type"] == MANIFEST_V2
        assert headers["Docker-Content-Digest"] == digest
        assert headers["Content-Length"] == str(len(body))
        status, headers, got = call(registry, "HEAD", f"/v2/{REPO}/manifests/{ref}")
        assert (status, got, headers["Content-Length"]) == (200, b"", str(len(body)))
        assert headers["Docker-Content-Digest"] == digest
    # Put by digest: must match the body; does not create a tag.
    other = image_manifest(registry, b"v2")
    assert put_manifest(registry, digest_of(other), other) == digest_of(other)
    status, _, err = call(
        registry, "PUT", f"/v2/{REPO}/manifests/{digest}", other, {"Content-Type": MANIFEST_V2}
    )
    assert (status, error_code(err)) == (400, "DIGEST_INVALID")
    assert registry.tags(REPO) == ["nightly"]


def test_manifest_must_reference_known_content(registry: Registry) -> None:
    doc = json.loads(image_manifest(registry, b"v1"))
    doc["layers"][0]["digest"] = digest_of(b"missing layer")
    status, _, err = call(
        registry,
        "PUT",
        f"/v2/{REPO}/manifests/latest",
        json.dumps(doc).encode(),
        {"Content-Type": MANIFEST_V2},
    )
    assert (status, error_code(err)) == (400, "MANIFEST_BLOB_UNKNOWN")
    status, _, err = call(registry, "PUT", f"/v2/{REPO}/manifests/latest", b"not json")
    assert (status, error_code(err)) == (400, "MANIFEST_INVALID")


def test_manifest_list(registry: Registry) -> None:
    child = image_manifest(registry, b"amd64")
    child_digest = put_manifest(registry, digest_of(child), child)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_LIST_V2,
            "manifests": [
                {
                    "mediaType": MANIFEST_V2,
                    "size": len(child),
                    "digest": child_digest,
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
    ).encode()
    digest = put_manifest(registry, "multi", index, MANIFEST_LIST_V2)
    status, headers, body = call(registry, "GET", f"/v2/{REPO}/manifests/multi")
    assert (status, body, headers["Content-Type"]) == (200, index, MANIFEST_LIST_V2)
    assert headers["Docker-Content-Digest"] == digest
    dangling = index.replace(child_digest.encode(), digest_of(b"nope").encode())
    status, _, err = call(
        registry,
        "PUT",
        f"/v2/{REPO}/manifests/bad",
        dangling,
        {"Content-Type": MANIFEST_LIST_V2},
    )
    assert (status, error_code(err)) == (400, "MANIFEST_UNKNOWN")


def test_tags_list_move_and_delete(registry: Registry) -> None:
    old = put_manifest(registry, "nightly", image_manifest(registry, b"v1"))
    put_manifest(registry, "1.0.0", image_manifest(registry, b"v1"))
    new = put_manifest(registry, "1.1.0", image_manifest(registry, b"v2"))
    status, _, body = call(registry, "GET", f"/v2/{REPO}/tags/list")
    assert (status, json.loads(body)) == (
        200,
        {"name": REPO, "tags": ["1.0.0", "1.1.0", "nightly"]},
    )

    registry.move_tag(REPO, "nightly", new)
    assert (
        call(registry, "HEAD", f"/v2/{REPO}/manifests/nightly")[1]["Docker-Content-Digest"] == new
    )
    assert registry.resolve(REPO, "nightly") == new
    assert call(registry, "GET", f"/v2/{REPO}/manifests/{old}")[0] == 200  # still pullable

    registry.delete_tag(REPO, "nightly")
    status, _, body = call(registry, "GET", f"/v2/{REPO}/manifests/nightly")
    assert (status, error_code(body)) == (404, "MANIFEST_UNKNOWN")
    assert call(registry, "GET", f"/v2/{REPO}/manifests/{new}")[0] == 200
    assert registry.tags(REPO) == ["1.0.0", "1.1.0"]
    with pytest.raises(KeyError):
        registry.delete_tag(REPO, "nightly")
    with pytest.raises(Exception, match="MANIFEST_UNKNOWN"):
        registry.move_tag(REPO, "nightly", digest_of(b"not a manifest here"))


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", f"/v2/{REPO}/blobs/{digest_of(b'x')}", 404, "BLOB_UNKNOWN"),
        ("GET", f"/v2/{REPO}/manifests/nope", 404, "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/{REPO}/manifests/{digest_of(b'x')}", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/never/pushed/tags/list", 404, "NAME_UNKNOWN"),
        ("PATCH", f"/v2/{REPO}/blobs/uploads/00000000-0000-4000-8000-000000000000", 404,
         "BLOB_UPLOAD_UNKNOWN"),
        ("GET", "/v2/Upper/Case/manifests/latest", 400, "NAME_INVALID"),
        ("GET", f"/v2/{REPO}/blobs/sha256:short", 400, "DIGEST_INVALID"),
        ("GET", "/v2/no-route", 404, "NOT_FOUND"),
    ],
)  # fmt: skip
def test_errors_have_the_registry_json_shape(
    registry: Registry, method: str, path: str, status: int, code: str
) -> None:
    got_status, headers, body = call(registry, method, path, b"" if method == "PATCH" else None)
    assert (got_status, error_code(body)) == (status, code)
    assert headers["Content-Type"] == "application/json"
    assert headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_tls_client_hello_is_refused_at_once(registry: Registry) -> None:
    """Docker tries HTTPS first: the server must answer, not wait for more bytes."""
    host, port = registry.address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05hello")
        assert sock.recv(100).startswith(b"HTTP/1.0 400 ")


def test_loopback_listener_and_restart_keep_content(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    with Registry(root, "127.0.0.2", loopback=True) as reg:
        assert reg.loopback_address == f"127.0.0.1:{reg.port}"
        digest = push_blob(reg, b"persisted")
        status, _, body = call(
            reg, "GET", f"http://{reg.loopback_address}/v2/{REPO}/blobs/{digest}"
        )
        assert (status, body) == (200, b"persisted")
    with Registry(root, "127.0.0.1") as reg:
        assert call(reg, "GET", f"/v2/{REPO}/blobs/{digest}")[2] == b"persisted"
