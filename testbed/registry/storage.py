"""The registry stand-in's on-disk storage (see server.py for the layout), its error type and
the names, references and media types it accepts."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST_V2 = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = (MANIFEST_V2, MANIFEST_LIST_V2, OCI_MANIFEST, OCI_INDEX)
#: Manifest types that point at other manifests (``manifests``) rather than blobs.
INDEX_TYPES = (MANIFEST_LIST_V2, OCI_INDEX)

NAME_RE = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
CHUNK = 1024 * 1024


class RegistryError(Exception):
    """An error answered with the registry's JSON error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.detail = status, code, message, detail
        self.headers = headers or {}

    def body(self) -> bytes:
        """``{"errors": [{"code", "message", "detail"}]}``."""
        error = {"code": self.code, "message": self.message, "detail": self.detail}
        return json.dumps({"errors": [error]}).encode()


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Storage:
    """The on-disk state of the registry (thread-safe for what the server does)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()
        for sub in ("blobs/sha256", "repos", "uploads"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def blob_path(self, digest: str) -> Path:
        """Where the blob ``digest`` lives (it may not exist)."""
        if not DIGEST_RE.fullmatch(digest):
            raise RegistryError(400, "DIGEST_INVALID", "unsupported or malformed digest", digest)
        return self.root / "blobs/sha256" / digest.split(":", 1)[1]

    def has_blob(self, digest: str) -> bool:
        """Whether blob ``digest`` is stored."""
        return self.blob_path(digest).is_file()

    def upload_path(self, upload: str) -> Path:
        """The file of upload session ``upload`` (400/404 if malformed or unknown)."""
        try:
            path = self.root / "uploads" / str(uuid.UUID(upload))
        except ValueError:
            raise RegistryError(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown", upload) from None
        if not path.is_file():
            raise RegistryError(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown", upload)
        return path

    def new_upload(self) -> str:
        """Open an empty upload session; return its id."""
        upload = str(uuid.uuid4())
        (self.root / "uploads" / upload).touch()
        return upload

    def commit_upload(self, upload: str, digest: str) -> None:
        """Verify the upload's content against ``digest`` and move it into the blob store."""
        path = self.upload_path(upload)
        target = self.blob_path(digest)
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        actual = "sha256:" + h.hexdigest()
        if actual != digest:
            path.unlink()
            raise RegistryError(
                400, "DIGEST_INVALID", "provided digest did not match uploaded content",
                {"expected": digest, "actual": actual},
            )  # fmt: skip
        os.replace(path, target)

    def put_blob(self, data: bytes) -> str:
        """Store ``data`` as a blob (used for manifests); return its digest."""
        digest = sha256_digest(data)
        target = self.blob_path(digest)
        if not target.is_file():
            with tempfile.NamedTemporaryFile(dir=self.root / "uploads", delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, target)
        return digest

    def repo_dir(self, name: str) -> Path:
        """``repos/<name>`` (400 NAME_INVALID if ``name`` is not a repository name)."""
        if not NAME_RE.fullmatch(name) or len(name) > 255:
            raise RegistryError(400, "NAME_INVALID", "invalid repository name", name)
        return self.root / "repos" / name

    def write_tag(self, name: str, tag: str, digest: str) -> None:
        """Point ``name:tag`` at manifest ``digest`` (atomic)."""
        if not TAG_RE.fullmatch(tag):
            raise RegistryError(400, "TAG_INVALID", "invalid tag", tag)
        tags = self.repo_dir(name) / "tags"
        tags.mkdir(parents=True, exist_ok=True)
        tmp = tags / f".{tag}.{uuid.uuid4().hex}"
        tmp.write_text(digest)
        os.replace(tmp, tags / tag)

    def resolve(self, name: str, reference: str) -> tuple[str, str]:
        """``(digest, media type)`` of the manifest ``name:reference`` (404 if unknown)."""
        repo = self.repo_dir(name)
        if DIGEST_RE.fullmatch(reference):
            digest = reference
        elif TAG_RE.fullmatch(reference):
            try:
                digest = (repo / "tags" / reference).read_text().strip()
            except FileNotFoundError:
                raise RegistryError(
                    404, "MANIFEST_UNKNOWN", "manifest unknown", {"Tag": reference}
                ) from None
        else:
            raise RegistryError(400, "MANIFEST_INVALID", "invalid reference", reference)
        try:
            media_type = (repo / "revisions" / digest.split(":", 1)[1]).read_text().strip()
        except FileNotFoundError:
            raise RegistryError(404, "MANIFEST_UNKNOWN", "manifest unknown", digest) from None
        return digest, media_type

    def put_manifest(self, name: str, reference: str, data: bytes, content_type: str) -> str:
        """Validate and store a manifest under ``name``; tag it unless ``reference`` is a
        digest (which must then match). Returns the manifest digest."""
        try:
            doc = json.loads(data)
        except ValueError:
            raise RegistryError(400, "MANIFEST_INVALID", "manifest is not JSON") from None
        media_type = doc.get("mediaType") or content_type.split(";")[0].strip()
        if media_type not in MANIFEST_TYPES:
            raise RegistryError(400, "MANIFEST_INVALID", "unsupported manifest type", media_type)
        digest = sha256_digest(data)
        if DIGEST_RE.fullmatch(reference) and reference != digest:
            raise RegistryError(400, "DIGEST_INVALID", "manifest digest did not match", reference)
        repo = self.repo_dir(name)
        missing: list[str] = []
        if media_type in INDEX_TYPES:
            for child in doc.get("manifests", []):
                with contextlib.suppress(RegistryError):
                    self.resolve(name, child["digest"])
                    continue
                missing.append(child["digest"])
            code = "MANIFEST_UNKNOWN"
        else:
            refs = [doc.get("config", {}), *doc.get("layers", [])]
            missing = [d["digest"] for d in refs if not self.has_blob(d.get("digest", ""))]
            code = "MANIFEST_BLOB_UNKNOWN"
        if missing:
            raise RegistryError(400, code, "manifest references unknown content", missing)
        with self.lock:
            self.put_blob(data)
            (repo / "revisions").mkdir(parents=True, exist_ok=True)
            (repo / "revisions" / digest.split(":", 1)[1]).write_text(media_type)
            if not DIGEST_RE.fullmatch(reference):
                self.write_tag(name, reference, digest)
        return digest

    def tags(self, name: str) -> list[str]:
        """Sorted tags of ``name`` (404 NAME_UNKNOWN for a repository never pushed)."""
        repo = self.repo_dir(name)
        if not repo.is_dir():
            raise RegistryError(404, "NAME_UNKNOWN", "repository name not known to registry", name)
        tags = repo / "tags"
        return (
            sorted(p.name for p in tags.iterdir() if not p.name.startswith("."))
            if (tags.is_dir())
            else []
        )
