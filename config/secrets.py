"""The secrets: Pulumi secret config values, never printed, never echoed in an error."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from config.backups import REPOSITORY_FORMS, parse_restic_repository
from config.errors import REQUIRED, SECRET_CLASS, Problem, problem


class Secret:
    """A secret config value. Its text is only reachable through `reveal()`; it never prints."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


@dataclass(frozen=True)
class Secrets:
    guest_ssh_private_key: Secret
    proxmox_password: Secret | None = None
    proxmox_api_token: Secret | None = None
    proxmox_ssh_private_key: Secret | None = None
    tailscale_auth_key: Secret | None = None
    tailscale_oauth_client_id: Secret | None = None
    tailscale_oauth_client_secret: Secret | None = None
    mongo_root_password: Secret | None = None
    mongo_app_password: Secret | None = None
    vapid_private_key: Secret | None = None
    backup_webhook_url: Secret | None = None
    registry_password: Secret | None = None
    github_runner_token: Secret | None = None
    restic_repository: Secret | None = None
    restic_password: Secret | None = None
    restic_ssh_private_key: Secret | None = None
    restic_ssh_known_hosts: Secret | None = None
    restic_aws_access_key_id: Secret | None = None
    restic_aws_secret_access_key: Secret | None = None
    device_release_signing_key: Secret | None = None


@dataclass(frozen=True)
class SecretKey:
    key: str
    what: str
    example: str

    def command(self, stack: str) -> str:
        """The exact command that sets it for `stack`."""
        return self.example.replace("--secret ", f"--secret --stack {stack} ", 1)


SECRET_KEYS: tuple[SecretKey, ...] = (
    SecretKey(
        "proxmoxPassword",
        "password of the Proxmox API user (root@pam: only it may set the LXC keyctl feature)",
        "pulumi config set --secret proxmoxPassword",
    ),
    SecretKey(
        "proxmoxApiToken",
        "Proxmox API token 'user@realm!tokenid=uuid' (alternative to the password when no guest "
        "needs keyctl)",
        "pulumi config set --secret proxmoxApiToken",
    ),
    SecretKey(
        "proxmoxSshPrivateKey",
        "SSH private key for root on the Proxmox node (snippet uploads, guest-network NAT)",
        "pulumi config set --secret proxmoxSshPrivateKey < ~/.ssh/proxmox_ed25519",
    ),
    SecretKey(
        "guestSshPrivateKey",
        "SSH private key matching one of sshAuthorizedKeys, used to configure the guests",
        "pulumi config set --secret guestSshPrivateKey < ~/.ssh/smoker_ed25519",
    ),
    SecretKey(
        "mongoRootPassword",
        "password of the MongoDB admin user 'admin' (operations only)",
        "pulumi config set --secret mongoRootPassword",
    ),
    SecretKey(
        "mongoAppPassword",
        "password of the MongoDB application user 'smartsmoker' (the backend's DB_URL)",
        "pulumi config set --secret mongoAppPassword",
    ),
    SecretKey(
        "vapidPrivateKey",
        "VAPID private key for the backend's web push",
        "pulumi config set --secret vapidPrivateKey",
    ),
    SecretKey(
        "backupWebhookUrl",
        "optional webhook URL that backup failures are posted to",
        "pulumi config set --secret backupWebhookUrl",
    ),
    SecretKey(
        "resticRepository",
        "where the off-guest backups go (app.backups.offsite): a restic repository, e.g. "
        "sftp:restic@nas:/srv/restic/<stack>",
        "pulumi config set --secret resticRepository",
    ),
    SecretKey(
        "resticPassword",
        "the password of the restic repository (keep a copy outside the platform: without it "
        "the off-guest backups cannot be read)",
        "pulumi config set --secret resticPassword",
    ),
    SecretKey(
        "resticSshPrivateKey",
        "SSH private key of the user of an sftp: restic repository",
        "pulumi config set --secret resticSshPrivateKey < ~/.ssh/smoker_restic_ed25519",
    ),
    SecretKey(
        "resticSshKnownHosts",
        "the known_hosts line(s) of an sftp: restic repository's server (ssh-keyscan HOST)",
        'pulumi config set --secret resticSshKnownHosts "$(ssh-keyscan -t ed25519 HOST)"',
    ),
    SecretKey(
        "resticAwsAccessKeyId",
        "access key id of an s3: restic repository",
        "pulumi config set --secret resticAwsAccessKeyId",
    ),
    SecretKey(
        "resticAwsSecretAccessKey",
        "secret access key of an s3: restic repository",
        "pulumi config set --secret resticAwsSecretAccessKey",
    ),
    SecretKey(
        "tailscaleAuthKey",
        "Tailscale auth key (tagged, pre-authorised) that joins the guests to the tailnet",
        "pulumi config set --secret tailscaleAuthKey",
    ),
    SecretKey(
        "registryPassword",
        "password or access token of app.registryAuth.username (private images only)",
        "pulumi config set --secret registryPassword",
    ),
    SecretKey(
        "tailscaleOauthClientId",
        "ID of the Tailscale OAuth client (scope auth_keys, owning the guests' tags) that mints "
        "each guest's auth key when tailscale.mintKeys is true",
        "pulumi config set --secret tailscaleOauthClientId",
    ),
    SecretKey(
        "tailscaleOauthClientSecret",
        "secret (tskey-client-...) of the Tailscale OAuth client that mints each guest's auth key "
        "when tailscale.mintKeys is true",
        "pulumi config set --secret tailscaleOauthClientSecret",
    ),
    SecretKey(
        "githubRunnerToken",
        "host stack: the runner's registration token, or a fine-grained personal access token "
        "with 'Administration: read and write' on the repository (re-registers by itself)",
        "pulumi config set --secret githubRunnerToken",
    ),
    SecretKey(
        "deviceReleaseSigningKey",
        "the Ed25519 private key (PKCS#8 PEM) that signs the desired release a device pulls "
        "(only a stack with a device that updates by pull); generate it with "
        "`openssl genpkey -algorithm ed25519 -out signing.pem`",
        "pulumi config set --secret deviceReleaseSigningKey < signing.pem",
    ),
)
SECRET_BY_NAME = {s.key: s for s in SECRET_KEYS}
# Secrets that reach a Compose env file verbatim (`KEY=value`, no quoting): Compose would
# expand `$`, strip quotes, cut at ` #` and trim spaces, so such values are refused.
ENV_FILE_SECRETS = ("mongoRootPassword", "mongoAppPassword", "vapidPrivateKey")
_ENV_UNSAFE = re.compile(r"[$\"'`\\#]")


def attribute(key: str) -> str:
    """`guestSshPrivateKey` -> `guest_ssh_private_key` (the Secrets field of a config key)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def looks_secret(key: str) -> bool:
    """A secret-looking name, or a near miss of a known secret's name."""
    return bool(SECRET_CLASS.search(key)) or bool(
        difflib.get_close_matches(key, list(SECRET_BY_NAME), n=1, cutoff=0.8)
    )


def read_secrets(
    data: Mapping[str, Any], secret_set: set[str], stack: str
) -> tuple[dict[str, Secret], list[Problem]]:
    """The known secrets that are set, by config key, and the problems with them."""
    problems: list[Problem] = []
    values: dict[str, Secret] = {}
    for key in data:
        if key in secret_set or not looks_secret(key):
            continue
        known = SECRET_BY_NAME.get(key)
        close = difflib.get_close_matches(key, list(SECRET_BY_NAME), n=1, cutoff=0.8)
        spec = known or (SECRET_BY_NAME[close[0]] if close else None)
        command = (
            spec.command(stack) if spec else f"pulumi config set --secret --stack {stack} {key}"
        )
        rename = "" if known or not spec else f" (did you mean '{spec.key}'?)"
        problems.append(
            Problem(
                key,
                "<plain text, hidden>",
                "is a secret stored as plain text in the stack file" + rename,
                f"run `pulumi config rm --stack {stack} {key}` then `{command}`, "
                "and rotate the exposed value",
            )
        )
    for key in sorted(secret_set - set(SECRET_BY_NAME)):
        close = difflib.get_close_matches(key, list(SECRET_BY_NAME), n=1)
        problems.append(
            Problem(
                key,
                "<secret>",
                "is not a known secret",
                f"did you mean '{close[0]}'? run `pulumi config rm --stack {stack} {key}` then "
                f"`{SECRET_BY_NAME[close[0]].command(stack)}`"
                if close
                else f"run `pulumi config rm --stack {stack} {key}`",
            )
        )
    for spec in SECRET_KEYS:
        value = data.get(spec.key)
        if spec.key not in secret_set or not isinstance(value, str) or not value.strip():
            continue
        problems.extend(_check_value(spec, value, stack))
        values[spec.key] = Secret(value)
    return values, problems


def _check_value(spec: SecretKey, value: str, stack: str) -> Iterator[Problem]:
    def bad(what: str, fix: str = "") -> Problem:
        return Problem(spec.key, "<secret>", what, fix or f"run `{spec.command(stack)}`")

    if spec.key.endswith("SshPrivateKey") and "PRIVATE KEY" not in value:
        yield bad(
            "is not a PEM/OpenSSH private key",
            f"run `{spec.command(stack)}` with the private key file (not the .pub)",
        )
    if spec.key in ("vapidPrivateKey", "backupWebhookUrl") and "\n" in value.strip():
        yield bad("must be a single line")
    if spec.key.startswith("mongo") and len(value) < 16:
        yield bad("is shorter than 16 characters", "use e.g. `openssl rand -hex 24`")
    if spec.key in ENV_FILE_SECRETS and (_ENV_UNSAFE.search(value) or value != value.strip()):
        yield bad(
            "holds a character a Compose env file changes ($ \" ' ` \\ # or leading/trailing "
            "space): the service would get another value than MongoDB or the backend",
            f"pick a value without them (e.g. `openssl rand -hex 24`) and run "
            f"`{spec.command(stack)}`",
        )
    if spec.key in ENV_FILE_SECRETS and "\n" in value:
        yield bad("must be a single line")
    if spec.key == "backupWebhookUrl" and not value.startswith("https://"):
        yield bad("must be an https:// URL")
    if spec.key == "githubRunnerToken" and not re.fullmatch(r"[A-Za-z0-9_]{20,255}", value):
        yield bad(
            "is not a GitHub registration token or personal access token (letters, digits, _)",
            f"copy it again without spaces or quotes and run `{spec.command(stack)}`",
        )
    if spec.key.startswith("tailscaleOauth") and re.search(r"\s", value.strip()):
        yield bad("must be a single word (no spaces or line breaks)")
    if spec.key.startswith("tailscaleOauth") and value.strip().startswith("tskey-auth-"):
        yield bad(
            "is an auth key, not an OAuth client credential",
            "create an OAuth client with the auth_keys scope in the admin console "
            f"(Settings > Trust credentials) and run `{spec.command(stack)}` with its credential",
        )
    if spec.key == "resticSshKnownHosts" and not all(
        re.fullmatch(r"\S+ (ssh-|ecdsa-|sk-)\S+ [A-Za-z0-9+/=]+( .*)?", line.strip())
        for line in value.strip().splitlines()
    ):
        yield bad(
            "is not known_hosts lines (host keytype key)",
            f"run `{spec.command(stack)}` with the output of ssh-keyscan for the server",
        )
    if spec.key.startswith("resticAws") and re.search(r"\s", value.strip()):
        yield bad("must be a single word (no spaces or line breaks)")
    if spec.key == "deviceReleaseSigningKey" and not is_ed25519_private_pem(value):
        yield bad(
            "is not an Ed25519 private key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----)",
            "generate one with `openssl genpkey -algorithm ed25519 -out signing.pem` and run "
            f"`{spec.command(stack)}` (keep a copy: a new key needs the device's public key "
            "replaced)",
        )
    if spec.key == "proxmoxApiToken" and not re.fullmatch(r"[^@\s]+@[^!\s]+![^=\s]+=\S+", value):
        yield bad(
            "must look like user@realm!tokenid=uuid",
            f"run `{spec.command(stack)}` with the full token",
        )


def is_ed25519_private_pem(value: str) -> bool:
    """An unencrypted PKCS#8 PEM private key that is Ed25519 (what `openssl genpkey -algorithm
    ed25519` writes). Never raises, never keeps or shows the value."""
    text = value.strip()
    if not text.startswith("-----BEGIN PRIVATE KEY-----"):
        return False  # PKCS#8 only (not OpenSSH, not an encrypted or a public key)
    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return isinstance(key, Ed25519PrivateKey)


def device_release_secrets(publishes: bool) -> list[str]:
    """The secrets a stack needs to publish a device's desired release: `publishes` is true
    when the stack has a device that updates by pull (the wiring passes it)."""
    return ["deviceReleaseSigningKey"] if publishes else []


def required_secrets(
    *,
    host: bool,
    tailscale: bool,
    cloud: bool,
    mint_tailscale_keys: bool = False,
    device_pulls: bool = False,
) -> list[str]:
    """The secrets a stack needs. With `tailscale.mintKeys` the OAuth client replaces
    `tailscaleAuthKey`, which is then not read (kept, it lets mintKeys be turned off again).
    `device_pulls`: the stack has a device that updates by pull (it publishes a signed desired
    release for it, so it needs the signing key)."""
    required = ["guestSshPrivateKey", *device_release_secrets(device_pulls)]
    if host:
        required += ["proxmoxSshPrivateKey", "githubRunnerToken"]
    if tailscale and mint_tailscale_keys:
        required += ["tailscaleOauthClientId", "tailscaleOauthClientSecret"]
    elif tailscale:
        required.append("tailscaleAuthKey")
    if cloud:
        required += ["mongoRootPassword", "mongoAppPassword", "vapidPrivateKey"]
    return required


def check_required(
    secrets: Mapping[str, Secret], required: Iterable[str], stack: str
) -> Iterator[Problem]:
    for key in required:
        if key not in secrets:
            spec = SECRET_BY_NAME[key]
            yield problem(key, REQUIRED, f"is missing: {spec.what}", f"run `{spec.command(stack)}`")


def check_offsite(secrets: Mapping[str, Secret], stack: str) -> Iterator[Problem]:
    """The secrets `app.backups.offsite` needs: the repository, its password, and what its kind
    of repository needs to be reached."""
    yield from check_required(secrets, ["resticRepository", "resticPassword"], stack)
    if "resticRepository" not in secrets:
        return
    repository = parse_restic_repository(secrets["resticRepository"].reveal())
    if isinstance(repository, str):
        spec = SECRET_BY_NAME["resticRepository"]
        yield Problem(
            spec.key, "<secret>", repository, f"run `{spec.command(stack)}` with {REPOSITORY_FORMS}"
        )
    elif repository.kind == "sftp":
        yield from check_required(secrets, ["resticSshPrivateKey", "resticSshKnownHosts"], stack)
    elif repository.kind == "s3":
        yield from check_required(
            secrets, ["resticAwsAccessKeyId", "resticAwsSecretAccessKey"], stack
        )


def check_proxmox_auth(
    secrets: Mapping[str, Secret], keyctl_guests: list[str], username: str | None, stack: str
) -> Iterator[Problem]:
    """Only root@pam with a password (not an API token) may set keyctl or pass /dev/net/tun."""
    password = SECRET_BY_NAME["proxmoxPassword"].command(stack)
    has_password = "proxmoxPassword" in secrets
    if not has_password and "proxmoxApiToken" not in secrets:
        yield problem(
            "proxmoxPassword",
            REQUIRED,
            "no Proxmox credentials are set",
            f"run `{password}` (or proxmoxApiToken when no guest needs keyctl or /dev/net/tun)",
        )
    elif keyctl_guests and not has_password:
        yield problem(
            "proxmoxPassword",
            REQUIRED,
            f"guests {keyctl_guests} need the keyctl feature or /dev/net/tun, which only root@pam "
            "with a password may set (an API token cannot)",
            f"run `{password}`",
        )
    password_user = username if username and has_password else "root@pam"
    if keyctl_guests and password_user != "root@pam":
        yield problem(
            "proxmox.username",
            password_user,
            "only root@pam may set the keyctl feature and pass /dev/net/tun through",
            "set proxmox.username: root@pam",
        )
