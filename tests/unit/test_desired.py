"""Tier 1: the desired-release document: canonical bytes, signature, schema, every refusal, and
the ReleaseSpec built from it and the env files on the device."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deploy.desired import (
    SCHEMA,
    DesiredRelease,
    DesiredReleaseError,
    SecretsNotDeliveredError,
    Seen,
    canonical,
    parse,
    private_key_from_pem,
    public_key_from_pem,
    public_pem,
    publish,
    release_hash,
    sign,
    to_spec,
)
from deploy.release import ReleaseSpec, service_images
from tests.unit.engine_kit import APP_PASSWORD, CHECKS, REG, digest, planned_digest, spec

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()
ISSUED = 1_800_000_000.0


def device_spec(version: str = "1.0.0") -> ReleaseSpec:
    return spec(version, planned=True)  # repo:tag@sha256:..., as the stack hands it over


def published(version: str = "1.0.0", sequence: int = 1) -> bytes:
    return publish(
        device_spec(version),
        stack="dev",
        guest="smoker-pi",
        sequence=sequence,
        private_key=KEY,
        issued_at=ISSUED,
    )


def document(data: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(data)["document"]
    return doc


def resigned(doc: dict[str, Any], rehash: bool = True) -> bytes:
    """A document changed and signed again with the trusted key (a publisher's bug)."""
    if rehash:
        doc["contentHash"] = release_hash(doc["release"])
    return sign(doc, KEY)


def env_dir(tmp_path: Path, files: dict[str, str] | None = None) -> Path:
    directory = tmp_path / "env"
    directory.mkdir(mode=0o700)
    for name, content in (files if files is not None else dict(device_spec().env_files)).items():
        (directory / name).write_text(content)
    return directory


# ---------------------------------------------------------------------------------------------
# Round trip


def test_round_trip() -> None:
    desired = parse(published(), PUBLIC)
    assert isinstance(desired, DesiredRelease)
    assert (desired.stack, desired.guest, desired.sequence) == ("dev", "smoker-pi", 1)
    assert desired.issued_at == "2027-01-15T08:00:00Z"
    assert desired.compose == device_spec().compose
    assert desired.digests == service_images(device_spec().compose)
    assert desired.checks == CHECKS
    assert desired.env_files == {
        name: hashlib.sha256(text.encode()).hexdigest()
        for name, text in device_spec().env_files.items()
    }
    assert desired.content_hash == release_hash(document(published())["release"])


def test_the_envelope_is_canonical_and_holds_no_secret() -> None:
    data = published()
    assert data == canonical(json.loads(data))  # sorted keys, no whitespace
    assert data == published()  # deterministic
    assert APP_PASSWORD.encode() not in data and b"root-secret" not in data
    doc = document(data)
    assert doc["schema"] == SCHEMA
    assert set(doc) == {
        "schema",
        "stack",
        "guest",
        "sequence",
        "issuedAt",
        "release",
        "contentHash",
    }
    assert base64.b64decode(json.loads(data)["signature"]) == KEY.sign(canonical(doc))


def test_keys_round_trip_through_pem() -> None:
    from cryptography.hazmat.primitives import serialization

    pem = KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert public_pem(private_key_from_pem(pem)) == public_pem(PUBLIC)
    parse(published(), public_key_from_pem(public_pem(KEY)))
    with pytest.raises(DesiredReleaseError, match="not a PEM public key"):
        public_key_from_pem("ssh-ed25519 AAAA")


def test_the_same_document_again_is_not_a_replay() -> None:
    first = parse(published(), PUBLIC)
    assert parse(published(), PUBLIC, seen=first.seen) == first
    assert parse(published("1.1.0", 2), PUBLIC, seen=first.seen).sequence == 2


# ---------------------------------------------------------------------------------------------
# Refusals: each names what is wrong


def _tamper_compose(data: bytes) -> bytes:
    doc = document(data)
    doc["release"]["compose"] = doc["release"]["compose"].replace("1.0.0", "6.6.6")
    return canonical({"document": doc, "signature": json.loads(data)["signature"]})


def _tamper_digest(data: bytes) -> bytes:
    doc = document(data)
    doc["release"]["digests"]["backend"] = f"{REG}/backend@sha256:{'e' * 64}"
    return canonical({"document": doc, "signature": json.loads(data)["signature"]})


def _tamper_signature(data: bytes) -> bytes:
    envelope = json.loads(data)
    raw = bytearray(base64.b64decode(envelope["signature"]))
    raw[0] ^= 1
    envelope["signature"] = base64.b64encode(bytes(raw)).decode()
    return canonical(envelope)


def _other_key(data: bytes) -> bytes:
    return sign(document(data), Ed25519PrivateKey.generate())


def _change(
    edit: Callable[[dict[str, Any]], None], rehash: bool = True
) -> Callable[[bytes], bytes]:
    def tampered(data: bytes) -> bytes:
        doc = copy.deepcopy(document(data))
        edit(doc)
        return resigned(doc, rehash)

    return tampered


def _unpinned(doc: dict[str, Any]) -> None:
    release = doc["release"]
    release["compose"] = release["compose"].replace(f"@{planned_digest('backend', '1.0.0')}", "")
    release["digests"]["backend"] = f"{REG}/backend:1.0.0"


def _digest_not_in_compose(doc: dict[str, Any]) -> None:
    doc["release"]["digests"]["backend"] = digest("backend", "1.1.0")


def _compose_changed(doc: dict[str, Any]) -> None:
    doc["release"]["compose"] = doc["release"]["compose"].replace('"mongo.env"', '"backend.env"')


REFUSALS: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("bad JSON", lambda d: d[:-3], r"bad JSON: .* at line 1 column"),
    ("not UTF-8", lambda d: b"\xff" + d, "bad JSON: not UTF-8"),
    ("no envelope", lambda d: json.dumps(document(d)).encode(), "not a signed desired release"),
    ("tampered compose", _tamper_compose, "bad signature: the document was not signed"),
    ("tampered digest", _tamper_digest, "bad signature"),
    ("tampered signature", _tamper_signature, "bad signature"),
    ("signature not base64", lambda d: d.replace(b'"signature":"', b'"signature":"!'), "base64"),
    ("wrong key", _other_key, "bad signature"),
    ("wrong schema", _change(lambda d: d.update(schema="smoker-desired-release/2")), "schema"),
    ("missing key", _change(lambda d: d.pop("guest")), "wrong keys: missing guest"),
    ("extra key", _change(lambda d: d.update(force=True)), "wrong keys: unexpected 'force'"),
    (
        "missing release key",
        _change(lambda d: d["release"].pop("checks")),
        "`release` has the wrong keys: missing checks",
    ),
    ("sequence not an int", _change(lambda d: d.update(sequence="7")), "positive integer"),
    ("sequence a bool", _change(lambda d: d.update(sequence=True)), "positive integer"),
    ("issuedAt not UTC", _change(lambda d: d.update(issuedAt="yesterday")), "ISO-8601 UTC"),
    ("unpinned image", _change(_unpinned), r"unpinned image for service 'backend'"),
    ("digest not the compose's", _change(_digest_not_in_compose), "digests do not match"),
    (
        "digest of a missing service",
        _change(lambda d: d["release"]["digests"].pop("frontend")),
        "digests do not match the compose: services 'frontend'",
    ),
    (
        "content hash mismatch",
        _change(_compose_changed, rehash=False),
        "content hash mismatch",
    ),
    (
        "env file not named",
        _change(lambda d: d["release"]["envFiles"].pop("mongo.env")),
        "reads env files the document does not name: mongo.env",
    ),
    (
        "env file with a path",
        _change(lambda d: d["release"]["envFiles"].update({"../x": "0" * 64})),
        "must be a plain file name",
    ),
    (
        "checks of another shape",
        _change(lambda d: d["release"]["checks"].update(http=[{"status": 200}])),
        "shape of deploy.release.Checks",
    ),
]


@pytest.mark.parametrize(
    ("tamper", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_a_bad_document_is_refused_naming_why(
    tamper: Callable[[bytes], bytes], message: str
) -> None:
    with pytest.raises(DesiredReleaseError, match=message):
        parse(tamper(published()), PUBLIC)


def test_a_replayed_sequence_is_refused() -> None:
    newer = parse(published("1.1.0", 2), PUBLIC)
    with pytest.raises(DesiredReleaseError, match="replay: sequence 1 is older than 2"):
        parse(published("1.0.0", 1), PUBLIC, seen=newer.seen)
    other = published("1.0.0", 2)  # sequence 2 again, other content
    with pytest.raises(DesiredReleaseError, match="replay: sequence 2 was already accepted"):
        parse(other, PUBLIC, seen=newer.seen)


def test_a_document_for_another_device_is_refused() -> None:
    with pytest.raises(DesiredReleaseError, match="for guest 'smoker-pi', not other-pi"):
        parse(published(), PUBLIC, guest="other-pi")
    with pytest.raises(DesiredReleaseError, match="for stack 'dev', not prod"):
        parse(published(), PUBLIC, stack="prod")


def test_refusals_never_echo_secret_looking_values() -> None:
    secret = "hunter2-Pa55"
    content_instead_of_hash = _change(
        lambda d: d["release"]["envFiles"].update({"backend.env": f"DB_URL=mongodb://u:{secret}@m"})
    )
    extra_key = _change(lambda d: d.update({f"password={secret}": 1}))
    image = _change(lambda d: d["release"]["digests"].update(backend=f"https://u:{secret}@r/x"))
    for tamper in (content_instead_of_hash, extra_key, image):
        with pytest.raises(DesiredReleaseError) as raised:
            parse(tamper(published()), PUBLIC)
        assert secret not in str(raised.value)


def test_publish_refuses_what_a_device_would_refuse() -> None:
    with pytest.raises(DesiredReleaseError, match="unpinned image"):
        publish(spec("1.0.0"), stack="dev", guest="pi", sequence=1, private_key=KEY)
    with pytest.raises(DesiredReleaseError, match="positive integer"):
        publish(device_spec(), stack="dev", guest="pi", sequence=0, private_key=KEY)


# ---------------------------------------------------------------------------------------------
# to_spec: the release the engine deploys


def test_to_spec_reads_the_env_files_and_pins_by_digest_only(tmp_path: Path) -> None:
    result = to_spec(parse(published(), PUBLIC), env_dir(tmp_path))
    assert result.env_files == device_spec().env_files
    assert result.checks == CHECKS
    assert service_images(result.compose) == {
        "mongo": digest("mongo", "7.0"),
        "backend": digest("backend", "1.0.0"),
        "frontend": digest("frontend", "1.0.0"),
    }  # repo@sha256: pulled by digest: a tag moved while the device was off does not matter


def test_to_spec_waits_for_a_missing_env_file(tmp_path: Path) -> None:
    directory = env_dir(tmp_path, {"backend.env": device_spec().env_files["backend.env"]})
    with pytest.raises(SecretsNotDeliveredError, match=r"mongo.env is not in .* yet"):
        to_spec(parse(published(), PUBLIC), directory)
    with pytest.raises(SecretsNotDeliveredError, match="does not exist yet"):
        to_spec(parse(published(), PUBLIC), tmp_path / "nowhere")


def test_to_spec_refuses_an_env_file_that_does_not_match(tmp_path: Path) -> None:
    files = dict(device_spec().env_files)
    files["backend.env"] = "DB_URL=mongodb://smartsmoker:old-Pa55@mongo:27017/smartsmoker\n"
    with pytest.raises(SecretsNotDeliveredError, match=r"backend.env .* does not match") as raised:
        to_spec(parse(published(), PUBLIC), env_dir(tmp_path, files))
    assert "old-Pa55" not in str(raised.value) and APP_PASSWORD not in str(raised.value)


def test_to_spec_refuses_an_env_dir_open_to_others(tmp_path: Path) -> None:
    directory = env_dir(tmp_path)
    directory.chmod(0o755)
    with pytest.raises(DesiredReleaseError, match=r"closed to others \(mode 0755"):
        to_spec(parse(published(), PUBLIC), directory)


def test_seen_is_the_documents_sequence_and_hash() -> None:
    desired = parse(published(), PUBLIC)
    assert desired.seen == Seen(1, desired.content_hash)
