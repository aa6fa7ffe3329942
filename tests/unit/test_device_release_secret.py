"""`deviceReleaseSigningKey`: when it is required, and what a wrong value reports (never the
value itself)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from config import ConfigError, parse_config
from config.secrets import (
    Secret,
    check_required,
    device_release_secrets,
    is_ed25519_private_pem,
    required_secrets,
)
from config.stack_file import PLACEHOLDER_SIGNING_KEY, stack_file_config
from tests.configs import set_path, stack_raw

KEY = "deviceReleaseSigningKey"


def pkcs8(key: Ed25519PrivateKey | object) -> str:
    return key.private_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


ED25519 = pkcs8(Ed25519PrivateKey.generate())
OPENSSH = (
    Ed25519PrivateKey.generate()
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    .decode()
)
EC = pkcs8(generate_private_key(SECP256R1()))
PUBLIC = (
    Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
ENCRYPTED = (
    Ed25519PrivateKey.generate()
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass-phrase"),
    )
    .decode()
)


def test_required_only_for_a_stack_whose_device_pulls() -> None:
    assert device_release_secrets(True) == [KEY] and device_release_secrets(False) == []
    plain = required_secrets(host=False, tailscale=True, cloud=True)
    pulls = required_secrets(host=False, tailscale=True, cloud=True, device_pulls=True)
    assert KEY not in plain and set(pulls) - set(plain) == {KEY}


def test_a_missing_key_names_the_command_that_sets_it() -> None:
    problems = list(check_required({}, device_release_secrets(True), "prod"))
    assert len(problems) == 1
    text = str(problems[0])
    assert text.startswith(f"smoker-infra:{KEY} = (not set): is missing")
    assert f"pulumi config set --secret --stack prod {KEY} < signing.pem" in text
    assert "openssl genpkey -algorithm ed25519" in text
    assert list(check_required({KEY: Secret(ED25519)}, [KEY], "prod")) == []


@pytest.mark.parametrize(
    "value",
    [ED25519, ED25519.replace("\n", "\r\n"), "\n" + ED25519 + "\n\n", PLACEHOLDER_SIGNING_KEY],
)
def test_an_ed25519_pkcs8_key_is_accepted(value: str) -> None:
    assert is_ed25519_private_pem(value)
    raw = set_path(stack_raw("dev"), KEY, value, secret=True)
    cfg = parse_config(*raw, "dev")
    assert cfg.secrets.device_release_signing_key is not None
    assert cfg.secrets.device_release_signing_key.reveal() == value


@pytest.mark.parametrize(
    "value",
    [
        OPENSSH,  # the right algorithm, the wrong container
        EC,  # PKCS#8, the wrong algorithm
        PUBLIC,  # the public half
        ENCRYPTED,  # a passphrase the program does not have
        ED25519.replace("M", "N", 3),  # damaged
        "hunter2-not-a-key-at-all",
    ],
    ids=["openssh", "ecdsa", "public", "encrypted", "damaged", "text"],
)
def test_anything_else_is_a_clear_error_that_never_shows_the_value(value: str) -> None:
    assert not is_ed25519_private_pem(value)
    raw = set_path(stack_raw("dev"), KEY, value, secret=True)
    with pytest.raises(ConfigError) as caught:
        parse_config(*raw, "dev")
    message = str(caught.value)
    assert f"smoker-infra:{KEY} = <secret>: is not an Ed25519 private key in PKCS#8 PEM" in message
    assert "openssl genpkey -algorithm ed25519" in message
    assert f"pulumi config set --secret --stack dev {KEY} < signing.pem" in message
    body = [line for line in value.splitlines() if line and not line.startswith("-----")]
    assert not any(line in message for line in body), "the value leaked into the error"


def test_stack_files_without_the_key_get_a_valid_placeholder() -> None:
    values, secret_keys = stack_file_config("dev")
    assert f"smoker-infra:{KEY}" in secret_keys
    assert is_ed25519_private_pem(values[f"smoker-infra:{KEY}"])
