"""SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802 / 7677) as MongoDB uses them, server side.

Credentials are stored the way MongoDB stores them (``iterationCount``, ``salt``, ``storedKey``,
``serverKey``, base64), never the password. MongoDB's SCRAM-SHA-1 hashes the password as
``md5("<user>:mongo:<password>")`` first; SCRAM-SHA-256 uses the SASLprep'd password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymongo.saslprep import saslprep

MECHANISMS = ("SCRAM-SHA-1", "SCRAM-SHA-256")
#: MongoDB's defaults (scramIterationCount / scramSHA256IterationCount).
ITERATIONS = {"SCRAM-SHA-1": 10000, "SCRAM-SHA-256": 15000}
_SALT_BYTES = {"SCRAM-SHA-1": 16, "SCRAM-SHA-256": 28}
_DIGEST = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}


class ScramError(Exception):
    """The conversation failed: the client gets AuthenticationFailed (never the reason)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _hmac(key: bytes, msg: bytes, digest: str) -> bytes:
    return hmac.new(key, msg, digest).digest()


def password_bytes(mechanism: str, user: str, password: str) -> bytes:
    """What the mechanism feeds to PBKDF2 (MongoDB's SHA-1 variant pre-hashes with MD5)."""
    if mechanism == "SCRAM-SHA-1":
        return hashlib.md5(f"{user}:mongo:{password}".encode()).hexdigest().encode()
    return saslprep(password).encode()


def make_credentials(
    user: str, password: str, mechanisms: tuple[str, ...] = MECHANISMS
) -> dict[str, dict[str, Any]]:
    """SCRAM credentials for ``user`` (a fresh salt per mechanism)."""
    creds: dict[str, dict[str, Any]] = {}
    for mech in mechanisms:
        digest = _DIGEST[mech]
        salt = os.urandom(_SALT_BYTES[mech])
        iterations = ITERATIONS[mech]
        salted = hashlib.pbkdf2_hmac(digest, password_bytes(mech, user, password), salt, iterations)
        client_key = _hmac(salted, b"Client Key", digest)
        creds[mech] = {
            "iterationCount": iterations,
            "salt": _b64(salt),
            "storedKey": _b64(hashlib.new(digest, client_key).digest()),
            "serverKey": _b64(_hmac(salted, b"Server Key", digest)),
        }
    return creds


def _attributes(message: bytes) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for part in message.decode().split(","):
        key, sep, value = part.partition("=")
        if sep and len(key) == 1:
            attrs[key] = value
    return attrs


def _unescape_user(name: str) -> str:
    return name.replace("=2C", ",").replace("=3D", "=")


#: Look up (user name) -> that user's stored credentials for the mechanism, or None.
CredentialLookup = Callable[[str], "dict[str, Any] | None"]


@dataclass
class ScramConversation:
    """The server side of one SCRAM exchange (saslStart, saslContinue[, empty saslContinue])."""

    mechanism: str
    lookup: CredentialLookup
    user: str = ""
    done: bool = False
    _creds: dict[str, Any] = field(default_factory=dict)
    _client_first_bare: bytes = b""
    _server_first: bytes = b""
    _nonce: str = ""
    _verified: bool = False

    def start(self, client_first: bytes) -> bytes:
        """Handle ``n,,n=<user>,r=<nonce>``; returns ``r=..,s=..,i=..``."""
        if self.mechanism not in MECHANISMS:
            raise ScramError(f"unsupported mechanism {self.mechanism}")
        if not client_first.startswith((b"n,", b"y,")):
            raise ScramError("channel binding is not supported")
        # gs2 header: "n," authzid "," then client-first-message-bare.
        _flag, rest = client_first.split(b",", 1)
        _authzid, bare = rest.split(b",", 1)
        attrs = _attributes(bare)
        if "n" not in attrs or "r" not in attrs:
            raise ScramError("malformed client-first message")
        self.user = _unescape_user(attrs["n"])
        creds = self.lookup(self.user)
        if creds is None:
            raise ScramError(f"no {self.mechanism} credentials for {self.user!r}")
        self._creds = creds
        self._client_first_bare = bare
        self._nonce = attrs["r"] + _b64(os.urandom(24))
        self._server_first = (
            f"r={self._nonce},s={creds['salt']},i={int(creds['iterationCount'])}".encode()
        )
        return self._server_first

    def step(self, payload: bytes) -> bytes:
        """Handle the client-final message (proof), then the optional empty one."""
        if self._verified:
            self.done = True
            return b""
        if not self._server_first:
            raise ScramError("saslContinue before saslStart")
        without_proof, sep, proof_part = payload.rpartition(b",p=")
        if not sep:
            raise ScramError("client-final message has no proof")
        attrs = _attributes(without_proof)
        if attrs.get("r") != self._nonce:
            raise ScramError("nonce mismatch")
        if attrs.get("c") not in ("biws", "eSws"):  # base64 of "n,," / "y,,"
            raise ScramError("unexpected channel binding")
        digest = _DIGEST[self.mechanism]
        auth_message = b",".join((self._client_first_bare, self._server_first, without_proof))
        stored_key = base64.b64decode(self._creds["storedKey"])
        client_signature = _hmac(stored_key, auth_message, digest)
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError as exc:
            raise ScramError("proof is not base64") from exc
        if len(proof) != len(client_signature):
            raise ScramError("proof has the wrong length")
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        if not hmac.compare_digest(hashlib.new(digest, client_key).digest(), stored_key):
            raise ScramError("wrong password")
        self._verified = True
        server_key = base64.b64decode(self._creds["serverKey"])
        return b"v=" + base64.b64encode(_hmac(server_key, auth_message, digest))
