"""The desired release of one device: the signed document the stack publishes and the device's
update agent (`deploy.agent`) pulls and applies with the deploy engine.

The envelope is `{"document": {...}, "signature": "<base64 Ed25519>"}`; the signature covers the
document's canonical JSON (sorted keys, no whitespace). The document (schema
`smoker-desired-release/1`):

    stack, guest       whom it is for
    sequence           an int, strictly increasing per publication (orders documents; replay guard)
    issuedAt           ISO-8601 UTC, informational only (never trusted for ordering)
    release            compose (every image `repo[:tag]@sha256:<64 hex>`), digests (service ->
                       image, as in the compose), envFiles (name -> sha256 of the file's content:
                       no secret content, the files reach the device over SSH), checks
                       (`deploy.release.Checks.as_dict()` shape)
    contentHash        sha256 of the canonical JSON of `release`

`parse` verifies the signature first and interprets nothing of an unsigned document; every
refusal is a `DesiredReleaseError` naming what is wrong, never echoing a secret-looking value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from deploy.release import Checks, ReleaseSpec, pin, service_images, split_ref
from errors import SmokerError

SCHEMA = "smoker-desired-release/1"
MAX_DOCUMENT_BYTES = 1 << 20  # a device's release is a few KiB; refuse anything absurd

DOCUMENT_KEYS = frozenset(
    {"schema", "stack", "guest", "sequence", "issuedAt", "release", "contentHash"}
)
RELEASE_KEYS = frozenset({"compose", "digests", "envFiles", "checks"})
CHECKS_KEYS = frozenset({"http", "mongoUserEnv", "mongoPort", "outside"})

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # stack, guest, env file names
_ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"
_SECRET_LIKE = re.compile(
    r"(?i)(://[^/\s:@]*:)[^@\s/]*@|((?:password|passwd|secret|token|key)[\w-]*\s*[=:]\s*)\S+"
)


class DesiredReleaseError(SmokerError):
    """The desired-release document is refused (the message says why); nothing was applied."""


class SecretsNotDeliveredError(DesiredReleaseError):
    """An env file the document names is missing or differs on the device: the push path has
    not delivered it (yet). Nothing was applied; the next run tries again."""


@dataclass(frozen=True)
class Seen:
    """The newest document a device accepted: an older one, or this sequence with other
    content, is a replay."""

    sequence: int
    content_hash: str


@dataclass(frozen=True)
class DesiredRelease:
    """A verified document (only `parse` and `publish` make these from bytes)."""

    stack: str
    guest: str
    sequence: int
    issued_at: str
    compose: str
    digests: Mapping[str, str]
    env_files: Mapping[str, str]  # name -> sha256 hex of the content
    checks: Checks
    content_hash: str

    @property
    def seen(self) -> Seen:
        return Seen(self.sequence, self.content_hash)


# -- canonical bytes, hashes, keys ------------------------------------------------------------


def canonical(value: Any) -> bytes:
    """The one byte form of a JSON value: sorted keys, no whitespace, ASCII only."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def release_hash(release: Mapping[str, Any]) -> str:
    """`contentHash`: sha256 hex of the canonical JSON of the document's `release` part."""
    return hashlib.sha256(canonical(release)).hexdigest()


def sha256_text(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def private_key_from_pem(pem: str | bytes) -> Ed25519PrivateKey:
    """The signing key (`deviceReleaseSigningKey`, PKCS#8 PEM)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise DesiredReleaseError(f"the signing key is not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise DesiredReleaseError("the signing key is not an Ed25519 key")
    return key


def public_key_from_pem(pem: str | bytes) -> Ed25519PublicKey:
    """The device's verification key (SubjectPublicKeyInfo PEM)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise DesiredReleaseError(f"the public key is not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise DesiredReleaseError("the public key is not an Ed25519 key")
    return key


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


# -- publishing -------------------------------------------------------------------------------


def sign(document: Mapping[str, Any], private_key: Ed25519PrivateKey) -> bytes:
    """The envelope of a document: the document and its detached signature, canonical JSON."""
    signature = private_key.sign(canonical(document))
    return canonical({"document": document, "signature": base64.b64encode(signature).decode()})


def release_part(spec: ReleaseSpec) -> dict[str, Any]:
    """The document's `release` for `spec`: env file contents become their sha256."""
    if spec.routes:
        raise DesiredReleaseError("a device release is updated in place: it has no routes")
    return {
        "compose": spec.compose,
        "digests": service_images(spec.compose),
        "envFiles": {name: sha256_text(text) for name, text in spec.env_files.items()},
        "checks": spec.checks.as_dict(),
    }


def content_hash_of(spec: ReleaseSpec) -> str:
    """The `contentHash` the document for `spec` carries (no key needed, nothing signed)."""
    return release_hash(release_part(spec))


def publish(
    spec: ReleaseSpec,
    *,
    stack: str,
    guest: str,
    sequence: int,
    private_key: Ed25519PrivateKey,
    issued_at: float | None = None,
) -> bytes:
    """The signed document for `spec` (env file contents become their sha256: the document
    never holds a secret). Refuses what `parse` would refuse, so a device never gets it."""
    release = release_part(spec)
    document = {
        "schema": SCHEMA,
        "stack": stack,
        "guest": guest,
        "sequence": sequence,
        "issuedAt": time.strftime(
            _ISO_UTC, time.gmtime(time.time() if issued_at is None else issued_at)
        ),
        "release": release,
        "contentHash": release_hash(release),
    }
    _validate(document)
    return sign(document, private_key)


# -- parsing ----------------------------------------------------------------------------------


def parse(
    data: bytes,
    public_key: Ed25519PublicKey,
    *,
    seen: Seen | None = None,
    stack: str | None = None,
    guest: str | None = None,
) -> DesiredRelease:
    """Verify and read an envelope: signature, schema, pinned images, digests, content hash,
    the intended stack/guest (when given), and no replay of anything older than `seen`."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DesiredReleaseError(f"the document is larger than {MAX_DOCUMENT_BYTES} bytes")
    envelope = _loads(data)
    if not isinstance(envelope, dict) or set(envelope) != {"document", "signature"}:
        raise DesiredReleaseError(
            'not a signed desired release: expected {"document": ..., "signature": ...}'
        )
    document, signature = envelope["document"], envelope["signature"]
    if not isinstance(document, dict):
        raise DesiredReleaseError("`document` is not a JSON object")
    _verify(document, signature, public_key)
    desired = _validate(document)
    if stack is not None and desired.stack != stack:
        raise DesiredReleaseError(f"the document is for stack {_shown(desired.stack)}, not {stack}")
    if guest is not None and desired.guest != guest:
        raise DesiredReleaseError(f"the document is for guest {_shown(desired.guest)}, not {guest}")
    if seen is not None:
        _check_not_replayed(desired, seen)
    return desired


def _loads(data: bytes) -> Any:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        duplicate = next((k for k in keys if keys.count(k) > 1), None)
        if duplicate is not None:
            raise DesiredReleaseError(f"bad JSON: the key {_shown(duplicate)} appears twice")
        return dict(pairs)

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=unique)
    except UnicodeDecodeError:
        raise DesiredReleaseError("bad JSON: not UTF-8") from None
    except json.JSONDecodeError as exc:  # exc.msg and the position only: never the content
        raise DesiredReleaseError(
            f"bad JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def _verify(document: Mapping[str, Any], signature: Any, public_key: Ed25519PublicKey) -> None:
    if not isinstance(signature, str):
        raise DesiredReleaseError("bad signature: `signature` is not a base64 string")
    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, canonical(document))
    except (binascii.Error, ValueError):
        raise DesiredReleaseError("bad signature: `signature` is not valid base64") from None
    except InvalidSignature:
        raise DesiredReleaseError(
            "bad signature: the document was not signed by the release signing key this "
            "device trusts (tampered, or signed with another key)"
        ) from None


def _check_not_replayed(desired: DesiredRelease, seen: Seen) -> None:
    if desired.sequence < seen.sequence:
        raise DesiredReleaseError(
            f"replay: sequence {desired.sequence} is older than {seen.sequence}, the newest "
            "this device accepted"
        )
    if desired.sequence == seen.sequence and desired.content_hash != seen.content_hash:
        raise DesiredReleaseError(
            f"replay: sequence {desired.sequence} was already accepted with content "
            f"{seen.content_hash[:12]}, this one has {desired.content_hash[:12]}"
        )


def _validate(document: Mapping[str, Any]) -> DesiredRelease:
    """The schema of a (signed) document, key by key."""
    _exact_keys(document, DOCUMENT_KEYS, "the document")
    if document["schema"] != SCHEMA:
        raise DesiredReleaseError(
            f"wrong schema {_shown(document['schema'])}: this agent reads {SCHEMA}"
        )
    stack, guest = _name(document["stack"], "stack"), _name(document["guest"], "guest")
    sequence = document["sequence"]
    if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
        raise DesiredReleaseError("`sequence` must be a positive integer")
    issued_at = document["issuedAt"]
    try:
        time.strptime(issued_at, _ISO_UTC)
    except (TypeError, ValueError):
        raise DesiredReleaseError(
            "`issuedAt` must be ISO-8601 UTC like 2026-01-31T12:00:00Z"
        ) from None
    release = document["release"]
    if not isinstance(release, dict):
        raise DesiredReleaseError("`release` is not a JSON object")
    _exact_keys(release, RELEASE_KEYS, "`release`")
    compose, images = _compose(release["compose"])
    digests = release["digests"]
    if not isinstance(digests, dict) or digests != images:
        raise DesiredReleaseError(_digest_mismatch(digests, images))
    env_files = _env_files(release["envFiles"])
    missing = sorted(_env_file_refs(compose) - set(env_files))
    if missing:
        raise DesiredReleaseError(
            f"the compose file reads env files the document does not name: {', '.join(missing)}"
        )
    checks = _checks(release["checks"], env_files)
    content_hash = document["contentHash"]
    if content_hash != release_hash(release):
        raise DesiredReleaseError(
            "content hash mismatch: `contentHash` is not the sha256 of the canonical `release`"
        )
    return DesiredRelease(
        stack, guest, sequence, issued_at, compose, dict(digests), env_files, checks, content_hash
    )


def _exact_keys(value: Mapping[str, Any], expected: frozenset[str], what: str) -> None:
    missing, extra = sorted(expected - set(value)), sorted(set(value) - expected)
    if missing or extra:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unexpected {', '.join(_shown(k) for k in extra)}"] if extra else []
        raise DesiredReleaseError(f"{what} has the wrong keys: {'; '.join(parts)}")


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise DesiredReleaseError(f"`{what}` must be a name of letters, digits, '.', '_', '-'")
    return value


def _compose(value: Any) -> tuple[str, dict[str, str]]:
    """The compose text and its service -> image, every image pinned by digest."""
    if not isinstance(value, str):
        raise DesiredReleaseError("`release.compose` is not a string")
    try:
        project = yaml.safe_load(value)
        services = project["services"]
        images = {str(name): svc["image"] for name, svc in services.items()}
    except (yaml.YAMLError, TypeError, KeyError, AttributeError):
        raise DesiredReleaseError(
            "`release.compose` is not a compose file whose every service names an `image:`"
        ) from None
    if not images:
        raise DesiredReleaseError("`release.compose` has no services")
    for service, image in sorted(images.items()):
        if not isinstance(image, str) or not _pinned(image):
            raise DesiredReleaseError(
                f"unpinned image for service {_shown(service)}: {_shown(str(image))} (every "
                "image must be repo@sha256:<64 hex> or repo:tag@sha256:<64 hex>)"
            )
    return value, images


def _pinned(image: str) -> bool:
    repo, _tag, digest = split_ref(image)
    return bool(repo) and digest is not None and bool(_DIGEST.fullmatch(digest))


def _digest_mismatch(digests: Any, images: Mapping[str, str]) -> str:
    if not isinstance(digests, dict):
        return "`release.digests` is not a JSON object"
    names = sorted(set(digests) ^ set(images))
    if names:
        return f"digests do not match the compose: services {', '.join(map(_shown, names))}"
    differ = sorted(s for s in images if digests[s] != images[s])
    return f"digests do not match the compose: the image of {', '.join(map(_shown, differ))}"


def _env_files(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise DesiredReleaseError("`release.envFiles` is not a JSON object")
    for name, sha in value.items():
        if not _NAME.fullmatch(name):
            raise DesiredReleaseError(
                f"env file name {_shown(name)} must be a plain file name (no path)"
            )
        if not isinstance(sha, str) or not _SHA256_HEX.fullmatch(sha):
            raise DesiredReleaseError(
                f"env file {name}: its value must be the sha256 (64 lower-case hex) of the "
                "file's content, never the content"
            )
    return dict(value)


def _env_file_refs(compose: str) -> set[str]:
    """The env files the compose file's services read (`env_file:` string, list or paths)."""
    refs: set[str] = set()
    for svc in (yaml.safe_load(compose) or {}).get("services", {}).values():
        entries = svc.get("env_file") or []
        for entry in [entries] if isinstance(entries, str | dict) else entries:
            path = entry.get("path") if isinstance(entry, dict) else entry
            refs.add(str(path).removeprefix("./"))
    return refs


def _checks(value: Any, env_files: Mapping[str, str]) -> Checks:
    if not isinstance(value, dict):
        raise DesiredReleaseError("`release.checks` is not a JSON object")
    extra = sorted(set(value) - CHECKS_KEYS)
    if extra:
        raise DesiredReleaseError(
            f"`release.checks` has unexpected keys: {', '.join(map(_shown, extra))}"
        )
    try:
        checks = Checks.from_dict(value)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise DesiredReleaseError(
            "`release.checks` is not in the shape of deploy.release.Checks"
        ) from None
    if checks.mongo_user_env and checks.mongo_user_env not in env_files:
        raise DesiredReleaseError(
            f"`release.checks.mongoUserEnv` names {_shown(checks.mongo_user_env)}, which is not "
            "in `envFiles`"
        )
    return checks


def _shown(value: object) -> str:
    """A value for a message: quoted, short, with anything secret-looking masked."""
    text = _SECRET_LIKE.sub(lambda m: (m[1] + "***@") if m[1] else (m[2] + "***"), str(value))
    return repr(text if len(text) <= 60 else text[:57] + "...")


# -- the release the engine deploys -------------------------------------------------------------


def to_spec(desired: DesiredRelease, env_dir: str | os.PathLike[str]) -> ReleaseSpec:
    """The `ReleaseSpec` for the engine: the env files read from the root-only `env_dir`, each
    checked against its sha256, and every image as `repo@sha256:` (pulled by digest: a tag
    that moved while the device was off does not matter). `SecretsNotDeliveredError` while a
    file is missing or differs."""
    directory = Path(env_dir)
    _check_root_only(directory)
    contents: dict[str, str] = {}
    for name, expected in sorted(desired.env_files.items()):
        path = directory / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SecretsNotDeliveredError(
                f"env file {name} is not in {directory} yet: waiting for the push path to "
                "deliver it"
            ) from None
        except OSError as exc:
            raise SecretsNotDeliveredError(
                f"env file {name} in {directory} cannot be read ({exc.strerror})"
            ) from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise SecretsNotDeliveredError(
                f"env file {name} in {directory} does not match the document (its sha256 "
                "differs): waiting for the push path to deliver the new one"
            )
        try:
            contents[name] = data.decode()
        except UnicodeDecodeError:
            raise DesiredReleaseError(f"env file {name} is not UTF-8 text") from None
    by_digest = {}
    for image in desired.digests.values():
        repo, _tag, digest = split_ref(image)
        by_digest[image] = f"{repo}@{digest}"
    return ReleaseSpec(pin(desired.compose, by_digest), contents, desired.checks)


def _check_root_only(directory: Path) -> None:
    try:
        info = directory.stat()
    except FileNotFoundError:
        raise SecretsNotDeliveredError(
            f"the env directory {directory} does not exist yet: waiting for the push path to "
            "create and fill it"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise DesiredReleaseError(f"the env directory {directory} is not a directory")
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise DesiredReleaseError(
            f"the env directory {directory} must be owned by this user and closed to others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid}): "
            f"`chown root: {directory} && chmod 0700 {directory}`"
        )
