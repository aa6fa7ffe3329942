"""A minimal Docker Registry HTTP API V2 server: a TEST STAND-IN, never production.

Just enough of the distribution protocol for Docker Engine 20.10's ``docker push`` and
``docker pull`` (image manifest v2 schema 2, manifest lists, OCI manifests and indexes):

* ``GET /v2/`` (API version check);
* ``HEAD``/``GET /v2/<name>/blobs/<digest>`` (``Range: bytes=a-b`` honoured);
* uploads: ``POST /v2/<name>/blobs/uploads/`` (monolithic with ``?digest=``; cross-repo
  ``?mount=&from=`` answers 201 when the blob exists, else opens a session), ``PATCH``
  (``Content-Range`` checked when sent; chunked transfer encoding decoded), ``PUT ?digest=``
  (optionally with a last chunk), ``GET`` (status) and ``DELETE`` (cancel); the digest is
  verified before the blob is stored (400 ``DIGEST_INVALID``);
* ``HEAD``/``GET``/``PUT /v2/<name>/manifests/<tag-or-digest>`` (referenced blobs and
  manifests must exist, a digest reference must match the body);
* ``GET /v2/<name>/tags/list``.

Storage under ``root``: ``blobs/sha256/<hex>`` (content-addressed, shared by all
repositories; manifests are blobs too), ``repos/<name>/revisions/<hex>`` (the manifest's media
type: the manifest belongs to the repository), ``repos/<name>/tags/<tag>`` (a digest) and
``uploads/<uuid>``. No auth, no TLS, no deletes through the API: tests move or remove tags with
:meth:`Registry.move_tag` / :meth:`Registry.delete_tag`.

Docker tries HTTPS before plain HTTP even for an insecure registry; a TLS ClientHello is
answered with a plain 400 at once (as Go's HTTP server does) so the fallback costs no timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .storage import CHUNK, TAG_RE, RegistryError, Storage

ROUTE_RE = re.compile(
    r"^/v2/(?P<name>.+?)/(?:blobs/uploads/(?P<upload>[^/]*)|blobs/(?P<blob>[^/]+)"
    r"|manifests/(?P<ref>[^/]+)|(?P<tags>tags/list))$"
)
MAX_MANIFEST = 4 * 1024 * 1024


class Handler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection of the registry."""

    protocol_version = "HTTP/1.1"
    server: RegistryHTTPServer
    _body_started = False
    _body_done = False

    def handle(self) -> None:
        """Refuse TLS at once (Docker's HTTPS attempt), then serve HTTP."""
        with contextlib.suppress(OSError):
            if self.request.recv(1, socket.MSG_PEEK) == b"\x16":
                self.request.sendall(
                    b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
        super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests are recorded in ``Registry.requests`` instead."""

    # -- plumbing ------------------------------------------------------------------

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        all_headers = {"Content-Length": str(len(body)), **(headers or {})}
        if body and "Content-Type" not in all_headers:
            all_headers["Content-Type"] = "application/json"
        for key, value in all_headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _body_chunks(self) -> Iterator[bytes]:
        """The request body (Content-Length or chunked transfer encoding), in pieces.

        Only the first call reads anything (``_drain`` may call it after a handler did).
        """
        if self._body_started:
            return
        self._body_started = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self._body_done = True
                    return
                left = size
                while left:
                    piece = self.rfile.read(min(left, CHUNK))
                    if not piece:
                        raise ConnectionError("client closed mid-chunk")
                    left -= len(piece)
                    yield piece
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                piece = self.rfile.read(min(left, CHUNK))
                if not piece:
                    raise ConnectionError("client closed mid-body")
                left -= len(piece)
                yield piece
            self._body_done = True

    def _append_body(self, path: Path) -> int:
        with path.open("ab") as f:
            for piece in self._body_chunks():
                f.write(piece)
            return f.tell()

    def _dispatch(self) -> None:
        self._body_started = self._body_done = False
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.server.record(self)
        try:
            if url.path in ("/v2", "/v2/"):
                return self._send(200, b"{}")
            match = ROUTE_RE.match(url.path)
            if not match:
                raise RegistryError(404, "NOT_FOUND", "no such endpoint", url.path)
            name = match["name"]
            self.server.storage.repo_dir(name)  # validates the name
            if match["upload"] is not None:
                return self._upload(name, match["upload"], query)
            if match["blob"] is not None and self.command in ("GET", "HEAD"):
                return self._get_blob(match["blob"])
            if match["ref"] is not None and self.command in ("GET", "HEAD", "PUT"):
                return self._manifest(name, match["ref"])
            if match["tags"] is not None and self.command == "GET":
                tags = self.server.storage.tags(name)
                return self._send(200, json.dumps({"name": name, "tags": tags}).encode())
            raise RegistryError(405, "UNSUPPORTED", "operation not supported", self.command)
        except RegistryError as exc:
            self._drain()
            self._send(exc.status, exc.body(), exc.headers)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _dispatch  # noqa: N815

    def _drain(self) -> None:
        """Read an unread request body so the connection stays usable; after an error in the
        middle of a body, close the connection instead."""
        if self._body_started:
            self.close_connection = self.close_connection or not self._body_done
            return
        with contextlib.suppress(ConnectionError, ValueError):
            for _ in self._body_chunks():
                pass

    # -- blobs -------------------------------------------------------------------

    def _get_blob(self, digest: str) -> None:
        path = self.server.storage.blob_path(digest)
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise RegistryError(404, "BLOB_UNKNOWN", "blob unknown to registry", digest) from None
        with f:
            size = os.fstat(f.fileno()).st_size
            start, end, status = 0, size - 1, 200
            if m := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")):
                start, end, status = int(m[1]), min(int(m[2] or size - 1), size - 1), 206
            headers = {
                "Content-Length": str(max(0, end - start + 1)),
                "Content-Type": "application/octet-stream",
                "Docker-Content-Digest": digest,
                "Accept-Ranges": "bytes",
                "ETag": f'"{digest}"',
            }
            if status == 206:
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            self.send_response(status)
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command == "GET":
                f.seek(start)
                left = end - start + 1
                while left > 0 and (piece := f.read(min(left, CHUNK))):
                    self.wfile.write(piece)
                    left -= len(piece)

    def _upload_headers(self, name: str, upload: str, size: int) -> dict[str, str]:
        return {
            "Location": f"/v2/{name}/blobs/uploads/{upload}",
            "Docker-Upload-UUID": upload,
            "Range": f"0-{max(size - 1, 0)}",
        }

    def _blob_created(self, name: str, digest: str) -> None:
        headers = {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest}
        self._send(201, b"", headers)

    def _upload(self, name: str, upload: str, query: dict[str, str]) -> None:
        storage = self.server.storage
        if not upload:  # start a session
            if self.command != "POST":
                raise RegistryError(405, "UNSUPPORTED", "operation not supported", self.command)
            mount = query.get("mount")
            if mount and storage.has_blob(mount):
                self._drain()
                return self._blob_created(name, mount)
            upload = storage.new_upload()
            if "digest" in query:  # monolithic
                self._append_body(storage.upload_path(upload))
                storage.commit_upload(upload, query["digest"])
                return self._blob_created(name, query["digest"])
            self._drain()
            return self._send(202, b"", self._upload_headers(name, upload, 0))
        path = storage.upload_path(upload)
        if self.command == "GET":
            return self._send(204, b"", self._upload_headers(name, upload, path.stat().st_size))
        if self.command == "DELETE":
            path.unlink()
            return self._send(204)
        if self.command not in ("PATCH", "PUT"):
            raise RegistryError(405, "UNSUPPORTED", "operation not supported", self.command)
        offset = path.stat().st_size
        chunk_range = re.fullmatch(r"(?:bytes )?(\d+)-(\d+)", self.headers.get("Content-Range", ""))
        if chunk_range and int(chunk_range[1]) != offset:
            headers = self._upload_headers(name, upload, offset)
            raise RegistryError(416, "BLOB_UPLOAD_INVALID", "chunk out of order", None, headers)
        size = self._append_body(path)
        if self.command == "PATCH":
            return self._send(202, b"", self._upload_headers(name, upload, size))
        if "digest" not in query:
            raise RegistryError(400, "DIGEST_INVALID", "digest parameter missing")
        storage.commit_upload(upload, query["digest"])
        self._blob_created(name, query["digest"])

    # -- manifests ---------------------------------------------------------------

    def _manifest(self, name: str, reference: str) -> None:
        storage = self.server.storage
        if self.command == "PUT":
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_MANIFEST:
                raise RegistryError(413, "SIZE_INVALID", "manifest too large", length)
            data = b"".join(self._body_chunks())
            digest = storage.put_manifest(
                name, reference, data, self.headers.get("Content-Type", "")
            )
            headers = {
                "Location": f"/v2/{name}/manifests/{digest}",
                "Docker-Content-Digest": digest,
            }
            return self._send(201, b"", headers)
        digest, media_type = storage.resolve(name, reference)
        data = storage.blob_path(digest).read_bytes()
        headers = {"Content-Type": media_type, "Docker-Content-Digest": digest,
                   "ETag": f'"{digest}"'}  # fmt: skip
        self._send(200, data, headers)


class RegistryHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one address, sharing the registry's storage."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], storage: Storage, registry: Registry) -> None:
        self.storage = storage
        self.registry = registry
        super().__init__(address, Handler)

    def record(self, handler: Handler) -> None:
        """Append the request line and protocol-relevant headers to ``Registry.requests``."""
        keep = ("Accept", "Content-Type", "Content-Range", "Range", "Transfer-Encoding")
        headers = {k: v for k in keep if (v := handler.headers.get(k))}
        if accept := handler.headers.get_all("Accept"):
            headers["Accept"] = ", ".join(accept)
        with self.registry.requests_lock:
            self.registry.requests.append((handler.command, handler.path, headers))


class Registry:
    """A registry serving ``root`` on ``host:port`` (port 0: any free port), in threads.

    With ``loopback=True`` it also listens on 127.0.0.1 at the same port: Docker treats
    loopback registries as insecure by default, so a daemon on this machine (the harness
    engine) can push there without an ``insecure-registries`` flag.
    """

    def __init__(self, root: Path, host: str, port: int = 0, *, loopback: bool = False) -> None:
        self.root = Path(root)
        self.host = host
        self.port = port
        self.loopback = loopback and host != "127.0.0.1"
        self.storage = Storage(self.root)
        #: Every request seen: ``(method, path, selected headers)``.
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.requests_lock = threading.Lock()
        self._servers: list[RegistryHTTPServer] = []
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        """``host:port`` to put in front of repository names."""
        return f"{self.host}:{self.port}"

    @property
    def loopback_address(self) -> str | None:
        """``127.0.0.1:port`` when also listening on loopback, else None."""
        return f"127.0.0.1:{self.port}" if self.loopback else None

    def _bind(self) -> list[RegistryHTTPServer]:
        for _ in range(20):
            first = RegistryHTTPServer((self.host, self.port), self.storage, self)
            port = first.server_address[1]
            if not self.loopback:
                return [first]
            try:
                return [first, RegistryHTTPServer(("127.0.0.1", port), self.storage, self)]
            except OSError:
                first.server_close()
                if self.port:
                    raise
        raise OSError("no port free on both addresses")

    def start(self) -> Registry:
        """Bind and serve in background threads (returns self)."""
        if self._servers:
            return self
        self._servers = self._bind()
        self.port = self._servers[0].server_address[1]
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},  # how long stop() waits at most
                name=f"registry-{server.server_address}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving and close the sockets (stored content stays on disk)."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._servers, self._threads = [], []

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test helpers --------------------------------------------------------------

    def resolve(self, name: str, tag: str) -> str:
        """The digest ``name:tag`` points at (KeyError if unknown)."""
        try:
            return self.storage.resolve(name, tag)[0]
        except RegistryError as exc:
            raise KeyError(f"{name}:{tag}: {exc}") from None

    def tags(self, name: str) -> list[str]:
        """Tags of repository ``name`` (empty if none)."""
        try:
            return self.storage.tags(name)
        except RegistryError:
            return []

    def move_tag(self, name: str, tag: str, digest: str) -> None:
        """Point ``name:tag`` at manifest ``digest``, which ``name`` must already hold
        (what a tag like ``nightly`` moving forward upstream looks like to a client)."""
        self.storage.resolve(name, digest)  # raises unless the manifest is in the repo
        with self.storage.lock:
            self.storage.write_tag(name, tag, digest)

    def delete_tag(self, name: str, tag: str) -> None:
        """Remove ``name:tag`` (the manifest stays pullable by digest). KeyError if absent."""
        path = self.storage.repo_dir(name) / "tags" / tag
        if not TAG_RE.fullmatch(tag) or not path.is_file():
            raise KeyError(f"{name}:{tag}")
        with self.storage.lock:
            path.unlink()
