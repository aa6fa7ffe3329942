"""The stack configuration: typed, frozen, validated once before any resource is declared.

`load_stack_config()` reads the running Pulumi program's config; `parse_config()` is the pure
core (raw `key -> string` map plus the set of secret keys), so tests, `synth` and the operator
CLI share it. Every problem is collected and raised together as one `ConfigError`, each naming
the config key, the bad value (never a secret's value) and the fix.
"""

from __future__ import annotations

import base64
import difflib
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urlparse

PROJECT = "smoker-infra"
ENVIRONMENTS = ("dev", "prod")
VMID_MIN, VMID_MAX = 100, 999_999

# A key whose name looks like one of these must be a Pulumi secret.
_SECRET_CLASS = re.compile(
    r"pass(word|phrase)|token|private_?key|auth_?key|api_?key|secret", re.IGNORECASE
)
_HOSTNAME_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TAG = re.compile(r"^[a-z0-9_-]+$")
_GUEST_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_BRIDGE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$")
_POOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DATASTORE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_FILE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*:(vztmpl|snippets|iso|import)/[^/\s]+$")
_SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
_CHECKSUM_LENGTHS = {"md5": 32, "sha1": 40, "sha224": 56, "sha256": 64, "sha384": 96, "sha512": 128}


# ---------------------------------------------------------------------------------------------
# Typed configuration


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
class ProxmoxSettings:
    endpoint: str
    node: str
    username: str
    insecure: bool
    ssh_username: str
    ssh_address: str
    ssh_port: int
    ssh_host_key: str | None = None  # the node's; unset: recorded on first use, then pinned


@dataclass(frozen=True)
class NetworkSettings:
    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    bridge: str
    dns: tuple[ipaddress.IPv4Address, ...]
    search_domain: str | None


@dataclass(frozen=True)
class Download:
    """A file the Proxmox node downloads itself, verified by checksum when one is given."""

    url: str
    file_name: str
    checksum: str | None
    checksum_algorithm: str


@dataclass(frozen=True)
class HostShared:
    """Host-wide Proxmox objects: created by the owner stack, referred to by ID elsewhere."""

    owner: bool
    pool: str
    vm_datastore: str
    file_datastore: str
    vm_template_id: int
    vm_template_name: str
    nat: bool
    lxc_template: Download | None
    cloud_image: Download | None
    lxc_template_file_id: str
    vendor_data_file_id: str


@dataclass(frozen=True)
class LxcFeatures:
    nesting: bool
    keyctl: bool
    tun: bool


@dataclass(frozen=True)
class ServeMapping:
    """`tailscale serve|funnel --https=<https_port> <target>`."""

    https_port: int
    target: str


@dataclass(frozen=True)
class TailscaleSettings:
    hostname: str
    tags: tuple[str, ...]
    accept_dns: bool
    serve: tuple[ServeMapping, ...]
    funnel: bool


@dataclass(frozen=True)
class GuestSpec:
    name: str
    kind: Literal["lxc", "vm"]
    vmid: int
    hostname: str
    ipv4: ipaddress.IPv4Interface
    cores: int
    memory_mb: int
    swap_mb: int
    disk_gb: int | None
    tags: tuple[str, ...]
    protect: bool
    firewall: bool
    start_on_boot: bool
    ssh_host: str
    ssh_host_key: str | None
    ssh_user: str
    firewall_allow: tuple[str, ...] = ()
    tailscale: TailscaleSettings | None = None
    lxc_features: LxcFeatures | None = None
    vm_user: str | None = None
    machine: str | None = None
    bios: str | None = None


@dataclass(frozen=True)
class Fail2banSettings:
    max_retry: int
    find_time_seconds: int
    ban_time_seconds: int
    ignore_ip: tuple[str, ...]


@dataclass(frozen=True)
class CrunSettings:
    version: str
    url: str
    sha256: str


@dataclass(frozen=True)
class DockerSettings:
    engine_version: str
    compose_version: str
    address_pools: tuple[tuple[ipaddress.IPv4Network, int], ...]
    crun: CrunSettings
    bridge_ip: ipaddress.IPv4Interface | None = None  # docker0; Docker's default when unset


@dataclass(frozen=True)
class BaselineSettings:
    timezone: str
    app_user: str
    app_dir: str
    logrotate_days: int
    fail2ban: Fail2banSettings
    docker: DockerSettings


@dataclass(frozen=True)
class HealthcheckSettings:
    interval_seconds: int
    timeout_seconds: int
    retries: int
    start_period_seconds: int


@dataclass(frozen=True)
class Retention:
    daily: int
    weekly: int
    monthly: int


@dataclass(frozen=True)
class BackupSettings:
    retention: Retention
    dump_time: str  # systemd OnCalendar time of day, e.g. "02:00"
    validate_calendar: str  # systemd OnCalendar, e.g. "Sun 03:00"
    max_age_hours: int
    pre_deploy_keep: int = 10  # pre-deploy backups kept (one per release attempt)


@dataclass(frozen=True)
class DeploySettings:
    """How a release is rolled out (see deploy/engine.py)."""

    verify_timeout_seconds: int = 300  # deadline for a release to be verified healthy
    keep_releases: int = 5  # committed releases (and their images) kept for rollback
    rollback_restores_backup: bool = False  # restore the pre-deploy backup when rolling back
    lock_lease_seconds: int = 120  # a deploy lock not renewed for this long is stale
    revision: str = ""  # any change redeploys, re-resolving tags (e.g. a moved `nightly`)
    verify_from_outside: bool = False  # also GET the Tailscale URLs from where the deploy runs


@dataclass(frozen=True)
class VzdumpSettings:
    schedule: str
    storage: str
    mode: str
    compress: str
    retention: Retention


@dataclass(frozen=True)
class AppSettings:
    """The services: image repositories, the stack's tag, health checks and backups."""

    tag: str
    images: dict[str, str]
    vapid_public_key: str
    healthcheck: HealthcheckSettings
    backups: BackupSettings
    vzdump: VzdumpSettings
    deploy: DeploySettings = DeploySettings()


APP_IMAGES = ("mongo", "backend", "frontend", "deviceService", "smokerUi")


@dataclass(frozen=True)
class Secrets:
    guest_ssh_private_key: Secret
    proxmox_password: Secret | None = None
    proxmox_api_token: Secret | None = None
    proxmox_ssh_private_key: Secret | None = None
    tailscale_auth_key: Secret | None = None
    mongo_root_password: Secret | None = None
    mongo_app_password: Secret | None = None
    vapid_private_key: Secret | None = None
    backup_webhook_url: Secret | None = None


@dataclass(frozen=True)
class StackConfig:
    stack: str
    environment: Literal["dev", "prod"]
    proxmox: ProxmoxSettings
    network: NetworkSettings
    host_shared: HostShared
    guests: tuple[GuestSpec, ...]
    ssh_authorized_keys: tuple[str, ...]
    readiness_timeout_seconds: int
    baseline: BaselineSettings
    tailnet: str
    app: AppSettings
    secrets: Secrets = field(repr=False)

    def guest(self, name: str) -> GuestSpec:
        return next(g for g in self.guests if g.name == name)


# ---------------------------------------------------------------------------------------------
# Secrets the program knows. `required(config_so_far)` says whether this stack needs it.


@dataclass(frozen=True)
class SecretKey:
    key: str
    what: str
    example: str


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
        "tailscaleAuthKey",
        "Tailscale auth key (tagged, pre-authorised) that joins the guests to the tailnet",
        "pulumi config set --secret tailscaleAuthKey",
    ),
)
_SECRET_BY_NAME = {s.key: s for s in SECRET_KEYS}


# ---------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class Problem:
    key: str
    value: str
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{PROJECT}:{self.key} = {self.value}: {self.what}. Fix: {self.fix}"


class ConfigError(ValueError):
    """Every problem with the stack configuration, reported at once."""

    def __init__(self, stack: str, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"stack '{stack}' configuration has {len(problems)} problem(s); "
            f"nothing was changed:\n{lines}"
        )


# ---------------------------------------------------------------------------------------------
# Reading


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Missing()
T = TypeVar("T")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, _Missing):
        return "(not set)"
    return json.dumps(value, default=str)


class _Node:
    """One object of config; remembers which keys were read so the rest can be reported."""

    def __init__(self, reader: _Reader, path: str, data: Mapping[str, Any]) -> None:
        self.reader, self.path, self.data = reader, path, data
        self.read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def value(
        self,
        name: str,
        kind: Callable[[Any], T],
        default: Any = REQUIRED,
        fix: str = "",
    ) -> T:
        self.read.add(name)
        key = self.key(name)
        if name not in self.data or self.data[name] is None:
            if default is REQUIRED:
                self.reader.problem(key, REQUIRED, "is required", fix or f"set {key}")
                return None  # type: ignore[return-value]
            return default
        raw = self.data[name]
        try:
            return kind(raw)
        except (TypeError, ValueError) as exc:
            self.reader.problem(key, raw, str(exc), fix or f"set {key} to a valid value")
            return None if default is REQUIRED else default  # type: ignore[return-value]

    def node(self, name: str, required: bool = True) -> _Node | None:
        self.read.add(name)
        key = self.key(name)
        raw = self.data.get(name)
        if raw is None:
            if required:
                self.reader.problem(key, REQUIRED, "is required", f"set the {key} object")
            return None
        if not isinstance(raw, Mapping):
            self.reader.problem(key, raw, "must be an object", f"give {key} as a YAML mapping")
            return None
        return _Node(self.reader, key, raw)

    def finish(self) -> None:
        for name in sorted(set(self.data) - self.read):
            key = self.key(name)
            if _SECRET_CLASS.search(name):
                self.reader.problem(
                    key,
                    "<hidden>",
                    "looks like a secret but sits in plain structured config",
                    "remove it; secrets are top-level keys set with `pulumi config set --secret`",
                )
                continue
            close = difflib.get_close_matches(name, sorted(self.read), n=1)
            hint = f"did you mean '{close[0]}'?" if close else "remove it"
            self.reader.problem(key, self.data[name], "is not a known setting", hint)


class _Reader:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def problem(self, key: str, value: Any, what: str, fix: str) -> None:
        self.problems.append(Problem(key, _show(value), what, fix))


# Converters: each raises ValueError with a message saying what was expected.


def _int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("must be a whole number, not a boolean")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip()):
        return int(raw)
    raise ValueError("must be a whole number")


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise ValueError("must be true or false")


def _str(raw: Any) -> str:
    if isinstance(raw, str) and raw.strip():
        return raw.strip()
    raise ValueError("must be a non-empty string")


def _str_list(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return tuple(x.strip() for x in raw)
    raise ValueError("must be a list of strings")


def _decode_top_level(value: str) -> Any:
    text = value.strip()
    if text[:1] in ("{", "["):
        return json.loads(text)
    return value


# ---------------------------------------------------------------------------------------------
# Parsing and validation


def parse_config(raw: Mapping[str, str], secret_keys: Iterable[str], stack: str) -> StackConfig:
    """Build the StackConfig from `<project>:<key>` -> string values, or raise ConfigError."""
    reader = _Reader()
    secret_set = {k.split(":", 1)[1] for k in secret_keys if k.startswith(f"{PROJECT}:")}
    data: dict[str, Any] = {}
    for full_key, value in raw.items():
        namespace, _, key = full_key.partition(":")
        if namespace != PROJECT:
            continue  # provider namespaces (e.g. proxmoxve:) are not ours to check
        try:
            data[key] = value if key in secret_set else _decode_top_level(str(value))
        except json.JSONDecodeError as exc:
            reader.problem(key, value, f"is not valid structured config ({exc.msg})", "fix YAML")

    secrets = _read_secrets(reader, data, secret_set)
    plain = {k: v for k, v in data.items() if k not in secret_set and not _SECRET_CLASS.search(k)}
    root = _Node(reader, "", plain)

    environment = root.value(
        "environment",
        _environment,
        default=stack if stack in ENVIRONMENTS else REQUIRED,
        fix="pulumi config set environment dev   (or prod)",
    )
    proxmox = _read_proxmox(root)
    network = _read_network(root)
    host_shared = _read_host_shared(root)
    authorized = root.value("sshAuthorizedKeys", _authorized_keys, default=())
    if not authorized:
        reader.problem(
            "sshAuthorizedKeys",
            authorized,
            "needs at least one public key, or nobody can log in to the guests",
            "add your ssh-ed25519 public key to sshAuthorizedKeys in Pulumi.<stack>.yaml",
        )
    timeout = root.value("readinessTimeoutSeconds", _int, default=600)
    if not 30 <= timeout <= 3600:
        reader.problem("readinessTimeoutSeconds", timeout, "must be 30..3600 s", "use e.g. 600")
    guests = _read_guests(root, environment, network, host_shared)
    baseline = _read_baseline(root, environment)
    tailnet = _read_tailnet(root)
    app = _read_app(root)
    root.finish()

    _check_proxmox_auth(reader, secrets, guests, proxmox)
    _check_required_secrets(reader, secrets, host_shared, guests)

    if reader.problems:
        raise ConfigError(stack, reader.problems)
    assert proxmox and network and host_shared and baseline and app
    return StackConfig(
        stack=stack,
        environment=environment,
        proxmox=proxmox,
        network=network,
        host_shared=host_shared,
        guests=guests,
        ssh_authorized_keys=authorized,
        readiness_timeout_seconds=timeout,
        baseline=baseline,
        tailnet=tailnet,
        app=app,
        secrets=Secrets(**{_attribute(key): value for key, value in secrets.items()}),
    )


def _attribute(key: str) -> str:
    """`guestSshPrivateKey` -> `guest_ssh_private_key` (the Secrets field of a config key)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _read_secrets(reader: _Reader, data: dict[str, Any], secret_set: set[str]) -> dict[str, Secret]:
    """The known secrets that are set, by config key (plain-text ones are reported)."""
    values: dict[str, Secret] = {}
    for key in data:
        if key in secret_set or not _SECRET_CLASS.search(key):
            continue
        known = _SECRET_BY_NAME.get(key)
        command = known.example if known else f"pulumi config set --secret {key}"
        reader.problem(
            key,
            "<plain text, hidden>",
            "is a secret stored as plain text in the stack file",
            f"run `pulumi config rm {key}` then `{command}`, and rotate the exposed value",
        )
    for key in sorted(secret_set - set(_SECRET_BY_NAME)):
        close = difflib.get_close_matches(key, list(_SECRET_BY_NAME), n=1)
        reader.problem(
            key,
            "<secret>",
            "is not a known secret",
            f"did you mean '{close[0]}'?" if close else f"run `pulumi config rm {key}`",
        )
    for spec in SECRET_KEYS:
        value = data.get(spec.key)
        if spec.key not in secret_set or not isinstance(value, str) or not value.strip():
            continue
        secret = Secret(value)
        if spec.key.endswith("SshPrivateKey") and "PRIVATE KEY" not in value:
            reader.problem(
                spec.key,
                "<secret>",
                "is not a PEM/OpenSSH private key",
                f"`{spec.example}` with the private key file (not the .pub)",
            )
        if spec.key in ("vapidPrivateKey", "backupWebhookUrl") and "\n" in value.strip():
            reader.problem(spec.key, "<secret>", "must be a single line", f"`{spec.example}`")
        if spec.key.startswith("mongo") and len(value) < 16:
            reader.problem(
                spec.key,
                "<secret>",
                "is shorter than 16 characters",
                "use e.g. `openssl rand -base64 32`",
            )
        if spec.key == "backupWebhookUrl" and not value.startswith("https://"):
            reader.problem(spec.key, "<secret>", "must be an https:// URL", f"`{spec.example}`")
        if spec.key == "proxmoxApiToken" and not re.fullmatch(
            r"[^@\s]+@[^!\s]+![^=\s]+=\S+", value
        ):
            reader.problem(
                spec.key,
                "<secret>",
                "must look like user@realm!tokenid=uuid",
                f"`{spec.example}` with the full token",
            )
        values[spec.key] = secret
    return values


def _environment(raw: Any) -> Literal["dev", "prod"]:
    if raw in ENVIRONMENTS:
        return raw
    raise ValueError("must be 'dev' or 'prod'")


def _https_url(raw: Any) -> str:
    url = urlparse(_str(raw))
    if url.scheme != "https" or not url.hostname:
        raise ValueError("must be an https:// URL with a host (the API is TLS-only)")
    return _str(raw)


def _read_proxmox(root: _Node) -> ProxmoxSettings | None:
    node = root.node("proxmox")
    if node is None:
        return None
    endpoint = node.value("endpoint", _https_url, fix="set proxmox.endpoint: https://<host>:8006/")
    name = node.value("node", _str, fix="set proxmox.node to the Proxmox node name (e.g. pve)")
    username = node.value("username", _str, default="root@pam")
    if "@" not in username:
        node.reader.problem(
            "proxmox.username", username, "must include the realm", "use e.g. root@pam"
        )
    insecure = node.value("insecure", _bool, default=False)
    default_ssh = urlparse(endpoint).hostname if isinstance(endpoint, str) else None
    settings = ProxmoxSettings(
        endpoint=endpoint,
        node=name,
        username=username,
        insecure=insecure,
        ssh_username=node.value("sshUsername", _str, default="root"),
        ssh_address=node.value("sshAddress", _str, default=default_ssh or ""),
        ssh_port=node.value("sshPort", _port, default=22),
        ssh_host_key=node.value("sshHostKey", _str, default=None),
    )
    if settings.ssh_host_key is not None and not _is_host_key(settings.ssh_host_key):
        node.reader.problem(
            node.key("sshHostKey"),
            settings.ssh_host_key,
            "is not an SSH public host key",
            "copy /etc/ssh/ssh_host_ed25519_key.pub from the Proxmox node",
        )
    node.finish()
    return settings


def _is_host_key(value: str) -> bool:
    return value.split(" ")[0] in _SSH_KEY_TYPES


def _port(raw: Any) -> int:
    port = _int(raw)
    if not 1 <= port <= 65535:
        raise ValueError("must be a TCP port 1..65535")
    return port


def _read_network(root: _Node) -> NetworkSettings | None:
    node = root.node("network")
    if node is None:
        return None
    reader = node.reader
    cidr = node.value("cidr", _network, fix="use the guest network, e.g. 10.20.0.0/24")
    gateway = node.value("gateway", _ipv4, fix="use the Proxmox host's address on the guest bridge")
    bridge = node.value("bridge", _str, default="vmbr0")
    if not _BRIDGE.match(bridge):
        reader.problem("network.bridge", bridge, "is not a Linux bridge name", "use e.g. vmbr0")
    dns = node.value("dns", _ipv4_list, default=())
    search = node.value("searchDomain", _str, default=None)
    node.finish()
    if cidr is not None and gateway is not None:
        if gateway not in cidr:
            reader.problem(
                "network.gateway",
                str(gateway),
                f"is outside the guest network {cidr}",
                f"use an address inside {cidr} (the Proxmox host's bridge address)",
            )
        elif gateway in (cidr.network_address, cidr.broadcast_address):
            reader.problem(
                "network.gateway",
                str(gateway),
                "is the network or broadcast address",
                "use a host address",
            )
    if not dns:
        reader.problem(
            "network.dns", list(dns), "needs at least one resolver", "use [1.1.1.1, 8.8.8.8]"
        )
    for i, server in enumerate(dns):
        reachable = server == gateway or (cidr is not None and server in cidr)
        if server.is_loopback or server.is_unspecified or (server.is_private and not reachable):
            reader.problem(
                f"network.dns[{i}]",
                str(server),
                "is not reachable from the guests (private or loopback address outside the "
                "guest network: the old setup's 10.0.0.x resolvers broke DNS for weeks)",
                "use public resolvers such as 1.1.1.1 and 8.8.8.8",
            )
    if cidr is None or gateway is None:
        return None
    return NetworkSettings(cidr=cidr, gateway=gateway, bridge=bridge, dns=dns, search_domain=search)


def _network(raw: Any) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(_str(raw), strict=True)
    except ValueError as exc:
        raise ValueError(f"is not an IPv4 network in CIDR form ({exc})") from None
    if not 8 <= net.prefixlen <= 30:
        raise ValueError("prefix must be /8../30")
    return net


def _ipv4(raw: Any) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(_str(raw))
    except ValueError:
        raise ValueError("is not an IPv4 address") from None


def _ipv4_list(raw: Any) -> tuple[ipaddress.IPv4Address, ...]:
    return tuple(_ipv4(x) for x in _str_list(raw))


def _download(node: _Node | None, fix_hint: str) -> Download | None:
    if node is None:
        return None
    url = node.value("url", _https_url, fix=fix_hint)
    file_name = node.value("fileName", _str, default=None)
    if file_name is None and isinstance(url, str):
        file_name = urlparse(url).path.rsplit("/", 1)[-1]
    algorithm = node.value("checksumAlgorithm", _str, default="sha256")
    checksum = node.value("checksum", _str, default=None)
    if algorithm not in _CHECKSUM_LENGTHS:
        node.reader.problem(
            node.key("checksumAlgorithm"), algorithm, "is not supported", "use sha256 or sha512"
        )
    elif checksum is not None and not re.fullmatch(
        rf"[0-9a-f]{{{_CHECKSUM_LENGTHS[algorithm]}}}", checksum
    ):
        node.reader.problem(
            node.key("checksum"),
            checksum,
            f"is not a lower-case hex {algorithm} digest",
            "copy it from the SHA256SUMS file published next to the image",
        )
    node.finish()
    if not isinstance(url, str) or not file_name:
        return None
    return Download(url, file_name, checksum, algorithm)


def _read_host_shared(root: _Node) -> HostShared | None:
    node = root.node("hostShared")
    if node is None:
        return None
    reader = node.reader
    owner = node.value("owner", _bool, fix="set hostShared.owner: true in exactly one stack")
    pool = node.value("pool", _str, default="smart-smoker")
    if not _POOL.match(pool):
        reader.problem("hostShared.pool", pool, "is not a valid pool id", "use e.g. smart-smoker")
    vm_datastore = node.value("vmDatastore", _str, default="local-lvm")
    file_datastore = node.value("fileDatastore", _str, default="local")
    for key, value in (("vmDatastore", vm_datastore), ("fileDatastore", file_datastore)):
        if not _DATASTORE.match(value):
            reader.problem(f"hostShared.{key}", value, "is not a datastore id", "use e.g. local")
    template_id = node.value("vmTemplateId", _vmid, default=9000)
    template_name = node.value("vmTemplateName", _hostname, default="ubuntu-2204-cloudinit")
    nat = node.value("nat", _bool, default=True)

    lxc_template = cloud_image = None
    if owner:
        lxc_template = _download(
            node.node("lxcTemplate"), "set hostShared.lxcTemplate.url to the template tarball"
        )
        cloud_image = _download(
            node.node("cloudImage"), "set hostShared.cloudImage.url to the cloud image"
        )
        if cloud_image is not None and not cloud_image.file_name.endswith(
            (".qcow2", ".raw", ".vmdk")
        ):
            reader.problem(
                "hostShared.cloudImage.fileName",
                cloud_image.file_name,
                "must end in .qcow2, .raw or .vmdk (Proxmox imports disks only by those names)",
                "Ubuntu's .img cloud images are qcow2: name it <image>.qcow2",
            )
        if lxc_template is not None and lxc_template.checksum is None:
            reader.problem(
                "hostShared.lxcTemplate.checksum",
                REQUIRED,
                "is required so the node verifies the template it downloads",
                "copy the sha256 from the SHA256SUMS file published next to the template",
            )
        lxc_file_id = f"{file_datastore}:vztmpl/{lxc_template.file_name if lxc_template else ''}"
        vendor_id = f"{file_datastore}:snippets/{VENDOR_DATA_FILE_NAME}"
        for key in ("lxcTemplateFileId", "vendorDataFileId"):
            if key in node.data:
                node.read.add(key)
                reader.problem(
                    f"hostShared.{key}",
                    node.data[key],
                    "is only for the stack that does not own the host-wide objects",
                    "remove it: the owner stack creates the file itself",
                )
    else:
        for key in ("lxcTemplate", "cloudImage"):
            if key in node.data:
                node.read.add(key)
                reader.problem(
                    f"hostShared.{key}",
                    "{...}",
                    "is only for the owner stack (hostShared.owner: true)",
                    f"remove it; refer to the owner's file with hostShared.{key}FileId",
                )
        fix = "copy the ID from the owner stack's output (e.g. local:vztmpl/<file>)"
        lxc_file_id = node.value("lxcTemplateFileId", _file_id, fix=fix)
        vendor_id = node.value("vendorDataFileId", _file_id, fix=fix)
    node.finish()
    if owner is None:
        return None
    return HostShared(
        owner=owner,
        pool=pool,
        vm_datastore=vm_datastore,
        file_datastore=file_datastore,
        vm_template_id=template_id,
        vm_template_name=template_name,
        nat=nat,
        lxc_template=lxc_template,
        cloud_image=cloud_image,
        lxc_template_file_id=lxc_file_id,
        vendor_data_file_id=vendor_id,
    )


VENDOR_DATA_FILE_NAME = "smart-smoker-vendor-data.yaml"


def _file_id(raw: Any) -> str:
    value = _str(raw)
    if not _FILE_ID.match(value):
        raise ValueError("must be a Proxmox file ID like local:vztmpl/<file>")
    return value


def _vmid(raw: Any) -> int:
    vmid = _int(raw)
    if not VMID_MIN <= vmid <= VMID_MAX:
        raise ValueError(f"VMID must be between {VMID_MIN} and {VMID_MAX}")
    return vmid


def _hostname(raw: Any) -> str:
    value = _str(raw)
    labels = value.split(".")
    if len(value) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in labels):
        raise ValueError(
            "is not an RFC 1123 host name (lower-case letters, digits and '-', labels of 1-63 "
            "characters, not starting or ending with '-')"
        )
    return value


def _tags(raw: Any) -> tuple[str, ...]:
    tags = _str_list(raw)
    bad = [t for t in tags if not _TAG.match(t)]
    if bad:
        raise ValueError(
            f"tags {bad} are not lower-case [a-z0-9_-] (Proxmox lower-cases and sorts tags, "
            "so anything else shows a permanent diff)"
        )
    return tuple(sorted(set(tags)))


def _authorized_keys(raw: Any) -> tuple[str, ...]:
    keys = _str_list(raw)
    for key in keys:
        parts = key.split()
        ok = len(parts) >= 2 and parts[0] in _SSH_KEY_TYPES
        if ok:
            try:
                blob = base64.b64decode(parts[1], validate=True)
                ok = blob[4 : 4 + len(parts[0])] == parts[0].encode()
            except ValueError:
                ok = False
        if not ok:
            shown = key if len(key) < 40 else key[:37] + "..."
            raise ValueError(f"'{shown}' is not an OpenSSH public key line")
    return keys


_LIMITS = {
    # key: (minimum, maximum, unit)
    "cores": (1, 64, "cores"),
    "memoryMb": (256, 262_144, "MB"),
    "swapMb": (0, 65_536, "MB"),
    "diskGb": (4, 4_096, "GB"),
}


def _read_guests(
    root: _Node,
    environment: str | None,
    network: NetworkSettings | None,
    host_shared: HostShared | None,
) -> tuple[GuestSpec, ...]:
    node = root.node("guests")
    if node is None:
        return ()
    reader = node.reader
    guests: list[GuestSpec] = []
    if not node.data:
        reader.problem("guests", {}, "declares no guest", "declare at least one guest")
    for name in node.data:
        guest_node = node.node(name)
        if not _GUEST_NAME.match(name):
            reader.problem(
                f"guests.{name}", name, "is not a valid guest name", "use lower-case [a-z0-9-]"
            )
        if guest_node is not None:
            spec = _read_guest(guest_node, name, environment, network, host_shared)
            if spec is not None:
                guests.append(spec)
    node.finish()
    _check_unique(reader, guests, network, host_shared)
    return tuple(guests)


def _read_guest(
    node: _Node,
    name: str,
    environment: str | None,
    network: NetworkSettings | None,
    host_shared: HostShared | None,
) -> GuestSpec | None:
    reader = node.reader
    kind = node.value("kind", _kind, fix=f"set guests.{name}.kind to lxc or vm")
    vmid = node.value("vmid", _vmid, fix=f"pin guests.{name}.vmid to a free VMID (100..999999)")
    hostname = node.value("hostname", _hostname, fix="use e.g. smart-smoker-dev-cloud")
    ipv4 = node.value("ipv4", _interface, fix=f"set guests.{name}.ipv4 like 10.20.0.20/24")
    sizes: dict[str, int | None] = {}
    for key, (low, high, unit) in _LIMITS.items():
        # A VM keeps its template's disk unless diskGb asks for more.
        default = None if key == "diskGb" and kind == "vm" else REQUIRED
        value = node.value(key, _int, default=default, fix=f"set guests.{name}.{key}")
        if isinstance(value, int) and not low <= value <= high:
            reader.problem(
                node.key(key), value, f"must be {low}..{high} {unit}", "use a value in that range"
            )
        sizes[key] = value
    tags = node.value("tags", _tags, default=())
    protect = node.value("protect", _bool, default=environment == "prod")
    if environment == "prod" and protect is False:
        reader.problem(
            node.key("protect"),
            False,
            "prod guests are always protected from deletion",
            "remove the setting (or set it to true)",
        )
    firewall = node.value("firewall", _bool, default=True)
    start_on_boot = node.value("startOnBoot", _bool, default=True)
    ssh_host = node.value("sshHost", _str, default=None)
    ssh_host_key = node.value("sshHostKey", _str, default=None)
    if ssh_host_key is not None and not _is_host_key(ssh_host_key):
        reader.problem(
            node.key("sshHostKey"),
            ssh_host_key,
            "is not an SSH public host key",
            "copy /etc/ssh/ssh_host_ed25519_key.pub from the guest",
        )

    firewall_allow = node.value("firewallAllow", _port_rules, default=())
    tailscale = _read_guest_tailscale(node.node("tailscale", required=False), environment)

    features = vm_user = machine = bios = None
    if kind == "lxc":
        feature_node = node.node("features", required=False)
        values = {"nesting": True, "keyctl": True, "tun": True}
        if feature_node is not None:
            values = {k: feature_node.value(k, _bool, default=v) for k, v in values.items()}
            feature_node.finish()
        features = LxcFeatures(**values)
    elif kind == "vm":
        vm_user = node.value("user", _str, default="smoker")
        machine = node.value("machine", _str, default="q35")
        bios = node.value("bios", _str, default="ovmf")
        if machine not in ("q35", "pc"):
            reader.problem(node.key("machine"), machine, "is not supported", "use q35")
        if bios not in ("ovmf", "seabios"):
            reader.problem(node.key("bios"), bios, "is not supported", "use ovmf")
    node.finish()

    if network is not None and isinstance(ipv4, ipaddress.IPv4Interface):
        _check_address(reader, node.key("ipv4"), ipv4, network)
    if host_shared is not None and vmid == host_shared.vm_template_id:
        reader.problem(
            node.key("vmid"),
            vmid,
            "is the VM template's VMID (hostShared.vmTemplateId)",
            "pick another VMID",
        )
    required_sizes = [v for k, v in sizes.items() if k != "diskGb" or kind == "lxc"]
    if None in (kind, vmid, hostname, ipv4) or None in required_sizes:
        return None
    assert isinstance(ipv4, ipaddress.IPv4Interface)
    return GuestSpec(
        name=name,
        kind=kind,
        vmid=vmid,
        hostname=hostname,
        ipv4=ipv4,
        cores=sizes["cores"] or 0,
        memory_mb=sizes["memoryMb"] or 0,
        swap_mb=sizes["swapMb"] or 0,
        disk_gb=sizes["diskGb"],
        tags=tags,
        protect=protect,
        firewall=firewall,
        start_on_boot=start_on_boot,
        ssh_host=ssh_host or str(ipv4.ip),
        ssh_host_key=ssh_host_key,
        ssh_user="root" if kind == "lxc" else (vm_user or "smoker"),
        firewall_allow=firewall_allow,
        tailscale=tailscale,
        lxc_features=features,
        vm_user=vm_user,
        machine=machine,
        bios=bios,
    )


def _kind(raw: Any) -> Literal["lxc", "vm"]:
    if raw in ("lxc", "vm"):
        return raw
    raise ValueError("must be 'lxc' or 'vm'")


def _interface(raw: Any) -> ipaddress.IPv4Interface:
    text = _str(raw)
    if "/" not in text:
        raise ValueError("needs a prefix length, e.g. 10.20.0.20/24")
    try:
        return ipaddress.IPv4Interface(text)
    except ValueError:
        raise ValueError("is not an IPv4 address with prefix") from None


def _check_address(
    reader: _Reader, key: str, ipv4: ipaddress.IPv4Interface, network: NetworkSettings
) -> None:
    cidr = network.cidr
    if ipv4.ip not in cidr:
        reader.problem(
            key, str(ipv4), f"is outside the guest network {cidr}", f"pick a free address in {cidr}"
        )
    elif ipv4.network != cidr:
        reader.problem(
            key,
            str(ipv4),
            f"has prefix /{ipv4.network.prefixlen} but the guest network is {cidr}",
            f"write it as {ipv4.ip}/{cidr.prefixlen}",
        )
    elif ipv4.ip in (cidr.network_address, cidr.broadcast_address):
        reader.problem(key, str(ipv4), "is the network or broadcast address", "pick a host address")
    elif ipv4.ip == network.gateway:
        reader.problem(
            key, str(ipv4), "is the gateway's address (the Proxmox host)", "pick another address"
        )


def _check_unique(
    reader: _Reader,
    guests: list[GuestSpec],
    network: NetworkSettings | None,
    host_shared: HostShared | None,
) -> None:
    for attr, label in (("vmid", "VMID"), ("hostname", "hostname"), ("ipv4", "address")):
        seen: dict[Any, str] = {}
        for guest in guests:
            value = getattr(guest, attr)
            value = value.ip if attr == "ipv4" else value
            if value in seen:
                reader.problem(
                    f"guests.{guest.name}.{attr}",
                    str(value),
                    f"is the same {label} as guests.{seen[value]}",
                    f"give every guest its own {label}",
                )
            seen.setdefault(value, guest.name)


def _check_proxmox_auth(
    reader: _Reader,
    secrets: dict[str, Secret],
    guests: tuple[GuestSpec, ...],
    proxmox: ProxmoxSettings | None,
) -> None:
    # Proxmox lets only root@pam (with a password, not an API token) set an LXC's keyctl feature
    # or pass a device (/dev/net/tun) through.
    keyctl = [
        g.name for g in guests if g.lxc_features and (g.lxc_features.keyctl or g.lxc_features.tun)
    ]
    has_password = "proxmoxPassword" in secrets
    if not has_password and "proxmoxApiToken" not in secrets:
        reader.problem(
            "proxmoxPassword",
            REQUIRED,
            "no Proxmox credentials are set",
            f"run `{_SECRET_BY_NAME['proxmoxPassword'].example}` "
            "(or proxmoxApiToken when no guest needs keyctl or /dev/net/tun)",
        )
    elif keyctl and not has_password:
        reader.problem(
            "proxmoxPassword",
            REQUIRED,
            f"guests {keyctl} need the keyctl feature or /dev/net/tun, which only root@pam "
            "with a password may set (an API token cannot)",
            f"run `{_SECRET_BY_NAME['proxmoxPassword'].example}`",
        )
    password_user = proxmox.username if proxmox and has_password else "root@pam"
    if keyctl and password_user != "root@pam":
        reader.problem(
            "proxmox.username",
            password_user,
            "only root@pam may set the keyctl feature and pass /dev/net/tun through",
            "set proxmox.username: root@pam",
        )


def _check_required_secrets(
    reader: _Reader,
    secrets: dict[str, Secret],
    host_shared: HostShared | None,
    guests: tuple[GuestSpec, ...],
) -> None:
    required = ["guestSshPrivateKey"]
    if host_shared is not None and host_shared.owner:
        required.append("proxmoxSshPrivateKey")
    if any(g.tailscale for g in guests):
        required.append("tailscaleAuthKey")
    if any(g.kind == "lxc" for g in guests):
        required += ["mongoRootPassword", "mongoAppPassword", "vapidPrivateKey"]
    for key in required:
        if key not in secrets:
            spec = _SECRET_BY_NAME[key]
            reader.problem(key, REQUIRED, f"is missing: {spec.what}", f"run `{spec.example}`")


def _port_rules(raw: Any) -> tuple[str, ...]:
    rules = _str_list(raw)
    for rule in rules:
        match = re.fullmatch(r"(\d{1,5})/(tcp|udp)", rule)
        if not match or not 1 <= int(match.group(1)) <= 65535:
            raise ValueError(f"'{rule}' is not PORT/tcp or PORT/udp")
    return rules


_TS_TAG = re.compile(r"^tag:[a-z0-9-]+$")
_FUNNEL_PORTS = (443, 8443, 10000)


def _ts_tags(raw: Any) -> tuple[str, ...]:
    tags = _str_list(raw)
    bad = [t for t in tags if not _TS_TAG.match(t)]
    if bad or not tags:
        raise ValueError(f"needs Tailscale ACL tags like tag:server (bad: {bad or 'none given'})")
    return tuple(sorted(set(tags)))


def _serve(raw: Any) -> tuple[ServeMapping, ...]:
    if not isinstance(raw, list):
        raise ValueError("must be a list of {httpsPort, target}")
    mappings = []
    for item in raw:
        if not isinstance(item, Mapping) or set(item) != {"httpsPort", "target"}:
            raise ValueError("each mapping needs exactly httpsPort and target")
        port, target = _port(item["httpsPort"]), _str(item["target"])
        if not re.fullmatch(r"http://127\.0\.0\.1:\d{1,5}(/\S*)?", target):
            raise ValueError(f"target '{target}' must be http://127.0.0.1:<port> (loopback only)")
        mappings.append(ServeMapping(port, target))
    ports = [m.https_port for m in mappings]
    if len(set(ports)) != len(ports):
        raise ValueError("two mappings use the same httpsPort")
    return tuple(sorted(mappings, key=lambda m: m.https_port))


def _read_guest_tailscale(node: _Node | None, environment: str | None) -> TailscaleSettings | None:
    if node is None:
        return None
    hostname = node.value("hostname", _hostname, fix="use e.g. smokecloud")
    tags = node.value("tags", _ts_tags, fix="use e.g. [tag:server, tag:production]")
    accept_dns = node.value("acceptDns", _bool, default=True)
    serve = node.value("serve", _serve, default=())
    funnel = node.value("funnel", _bool, default=False)
    if funnel and environment != "prod":
        node.reader.problem(
            node.key("funnel"),
            True,
            "funnel publishes to the internet and is for prod only",
            "set funnel: false (serve keeps it on the tailnet)",
        )
    if funnel and serve:
        bad = [m.https_port for m in serve if m.https_port not in _FUNNEL_PORTS]
        if bad:
            node.reader.problem(
                node.key("serve"), bad, "funnel only listens on 443, 8443 and 10000", "use those"
            )
    node.finish()
    if hostname is None or tags is None:
        return None
    return TailscaleSettings(hostname, tags, accept_dns, serve, funnel)


def _read_tailnet(root: _Node) -> str:
    node = root.node("tailscale", required=False)
    if node is None:
        return ""
    tailnet = node.value("tailnet", _hostname, default="")
    node.finish()
    return tailnet


def _version(raw: Any) -> str:
    value = _str(raw)
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", value):
        raise ValueError("must be an upstream version like 27.5.1")
    return value


def _address_pools(raw: Any) -> tuple[tuple[ipaddress.IPv4Network, int], ...]:
    if not isinstance(raw, list) or not raw:
        raise ValueError("must be a non-empty list of {base, size}")
    pools = []
    for item in raw:
        if not isinstance(item, Mapping) or set(item) != {"base", "size"}:
            raise ValueError("each pool needs exactly base and size")
        base, size = _network(item["base"]), _int(item["size"])
        if not base.prefixlen < size <= 30:
            raise ValueError(f"size /{size} must be longer than /{base.prefixlen} and at most /30")
        pools.append((base, size))
    return tuple(pools)


def _read_baseline(root: _Node, environment: str | None) -> BaselineSettings | None:
    node = root.node("baseline")
    if node is None:
        return None
    reader = node.reader
    timezone = node.value("timezone", _str, default="America/New_York")
    if not re.fullmatch(r"[A-Za-z_]+(/[A-Za-z0-9_+-]+)*", timezone):
        reader.problem(node.key("timezone"), timezone, "is not a tz name", "use e.g. Europe/Paris")
    app_user = node.value("appUser", _str, default="smoker")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", app_user):
        reader.problem(node.key("appUser"), app_user, "is not a Linux user name", "use smoker")
    app_dir = node.value("appDir", _str, default=f"/opt/smart-smoker-{environment}")
    if not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", app_dir):
        reader.problem(node.key("appDir"), app_dir, "is not an absolute path", "use /opt/...")
    days = node.value("logrotateDays", _int, default=14)
    fail2ban = _read_fail2ban(node.node("fail2ban"))
    docker = _read_docker(node.node("docker"))
    node.finish()
    if fail2ban is None or docker is None:
        return None
    return BaselineSettings(timezone, app_user, app_dir, days, fail2ban, docker)


def _read_fail2ban(node: _Node | None) -> Fail2banSettings | None:
    if node is None:
        return None
    values = {}
    for key, low, high in (
        ("maxRetry", 1, 20),
        ("findTimeSeconds", 60, 86_400),
        ("banTimeSeconds", 60, 31_536_000),
    ):
        value = node.value(key, _int, fix=f"set {node.key(key)}")
        if isinstance(value, int) and not low <= value <= high:
            node.reader.problem(node.key(key), value, f"must be {low}..{high}", "see REFERENCE")
        values[key] = value
    ignore = node.value("ignoreIp", _str_list, default=("127.0.0.1/8", "::1"))
    for entry in ignore:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            node.reader.problem(node.key("ignoreIp"), entry, "is not an address/network", "fix it")
    node.finish()
    if None in values.values():
        return None
    return Fail2banSettings(
        values["maxRetry"], values["findTimeSeconds"], values["banTimeSeconds"], ignore
    )


def _read_docker(node: _Node | None) -> DockerSettings | None:
    if node is None:
        return None
    engine = node.value("engineVersion", _version, fix="pin e.g. 27.5.1")
    compose = node.value("composeVersion", _version, fix="pin e.g. 2.32.4")
    pools = node.value(
        "addressPools", _address_pools, default=((ipaddress.IPv4Network("172.20.0.0/16"), 24),)
    )
    bridge_ip = node.value("bridgeIp", _interface, default=None)
    crun_node = node.node("crun")
    crun = None
    if crun_node is not None:
        version = crun_node.value("version", _version, fix="pin crun >= 1.21")
        url = crun_node.value("url", _https_url, fix="the release asset URL")
        digest = crun_node.value("sha256", _str, fix="the release asset's sha256")
        if isinstance(digest, str) and not re.fullmatch(r"[0-9a-f]{64}", digest):
            node.reader.problem(crun_node.key("sha256"), digest, "is not a sha256", "fix it")
        if isinstance(version, str) and tuple(map(int, version.split("."))) < (1, 21):
            node.reader.problem(
                crun_node.key("version"),
                version,
                "is too old: unprivileged LXC needs crun >= 1.21",
                "pin 1.21 or newer",
            )
        crun_node.finish()
        if version and url and digest:
            crun = CrunSettings(version, url, digest)
    node.finish()
    if engine is None or compose is None or crun is None:
        return None
    return DockerSettings(engine, compose, pools, crun, bridge_ip)


def _retention(node: _Node | None, defaults: tuple[int, int, int]) -> Retention | None:
    if node is None:
        return Retention(*defaults)
    values = []
    for key, default in zip(("daily", "weekly", "monthly"), defaults, strict=True):
        value = node.value(key, _int, default=default)
        if isinstance(value, int) and not 0 <= value <= 1000:
            node.reader.problem(node.key(key), value, "must be 0..1000", "keep e.g. 7/4/12")
        values.append(value)
    node.finish()
    if values[0] == 0 and values[1] == 0 and values[2] == 0:
        node.reader.problem(node.path, values, "keeps no backup at all", "keep at least one class")
    return Retention(*values)


def _calendar(raw: Any) -> str:
    value = _str(raw)
    if not re.fullmatch(r"((Mon|Tue|Wed|Thu|Fri|Sat|Sun) )?([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError("must be HH:MM, optionally after a weekday (e.g. 'Sun 03:00')")
    return value


def _image_repo(raw: Any) -> str:
    value = _str(raw)
    # [registry[:port]/]name[:tag][@sha256:digest]
    if not re.fullmatch(
        r"([a-z0-9.-]+(:\d+)?/)?[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_.-]+)?"
        r"(@sha256:[0-9a-f]{64})?",
        value,
    ):
        raise ValueError("is not an image repository like benjr70/smart-smoker-backend")
    return value


def _read_app(root: _Node) -> AppSettings | None:
    node = root.node("app")
    if node is None:
        return None
    reader = node.reader
    tag = node.value("tag", _str, fix="nightly for dev, vX.Y.Z for prod")
    if isinstance(tag, str) and not re.fullmatch(r"nightly|v\d+\.\d+\.\d+|[A-Za-z0-9_.-]+", tag):
        reader.problem(node.key("tag"), tag, "is not an image tag", "use nightly or vX.Y.Z")
    images_node = node.node("images")
    images: dict[str, str] = {}
    if images_node is not None:
        for name in APP_IMAGES:
            value = images_node.value(name, _image_repo, fix=f"set app.images.{name}")
            if value:
                images[name] = value
        images_node.finish()
    vapid = node.value("vapidPublicKey", _str, default="")
    hc = node.node("healthcheck", required=False)
    health = HealthcheckSettings(30, 10, 3, 60)
    if hc is not None:
        health = HealthcheckSettings(
            hc.value("intervalSeconds", _int, default=30),
            hc.value("timeoutSeconds", _int, default=10),
            hc.value("retries", _int, default=3),
            hc.value("startPeriodSeconds", _int, default=60),
        )
        hc.finish()
    backups_node = node.node("backups", required=False)
    backups = BackupSettings(Retention(7, 4, 12), "02:00", "Sun 03:00", 48)
    if backups_node is not None:
        retention = _retention(backups_node.node("retention", required=False), (7, 4, 12))
        backups = BackupSettings(
            retention or Retention(7, 4, 12),
            backups_node.value("dumpTime", _calendar, default="02:00"),
            backups_node.value("validateCalendar", _calendar, default="Sun 03:00"),
            backups_node.value("maxAgeHours", _int, default=48),
            backups_node.value("preDeployKeep", _int, default=10),
        )
        backups_node.finish()
    vz_node = node.node("vzdump", required=False)
    vzdump = VzdumpSettings("01:00", "local", "snapshot", "zstd", Retention(7, 4, 12))
    if vz_node is not None:
        vz_retention = _retention(vz_node.node("retention", required=False), (7, 4, 12))
        vzdump = VzdumpSettings(
            vz_node.value("schedule", _calendar, default="01:00"),
            vz_node.value("storage", _str, default="local"),
            vz_node.value("mode", _str, default="snapshot"),
            vz_node.value("compress", _str, default="zstd"),
            vz_retention or Retention(7, 4, 12),
        )
        if vzdump.mode not in ("snapshot", "suspend", "stop"):
            reader.problem(vz_node.key("mode"), vzdump.mode, "is not a vzdump mode", "use snapshot")
        if vzdump.compress not in ("zstd", "gzip", "lzo", "0"):
            reader.problem(vz_node.key("compress"), vzdump.compress, "is not supported", "use zstd")
        vz_node.finish()
    deploy = _read_deploy(node.node("deploy", required=False))
    node.finish()
    if tag is None or len(images) != len(APP_IMAGES):
        return None
    return AppSettings(tag, images, vapid, health, backups, vzdump, deploy)


def _read_deploy(node: _Node | None) -> DeploySettings:
    if node is None:
        return DeploySettings()
    d = DeploySettings()
    settings = DeploySettings(
        node.value("verifyTimeoutSeconds", _int, default=d.verify_timeout_seconds),
        node.value("keepReleases", _int, default=d.keep_releases),
        node.value("rollbackRestoresBackup", _bool, default=d.rollback_restores_backup),
        node.value("lockLeaseSeconds", _int, default=d.lock_lease_seconds),
        str(node.value("revision", _str, default=d.revision)),
        node.value("verifyFromOutside", _bool, default=d.verify_from_outside),
    )
    ranges = {
        "verifyTimeoutSeconds": (settings.verify_timeout_seconds, 10, 3600, "use e.g. 300"),
        "keepReleases": (settings.keep_releases, 2, 50, "keep at least 2 so a rollback exists"),
        "lockLeaseSeconds": (settings.lock_lease_seconds, 2, 3600, "use e.g. 120"),
    }
    for name, (value, low, high, fix) in ranges.items():
        if value is not None and not low <= value <= high:
            node.reader.problem(node.key(name), value, f"must be {low}..{high}", fix)
    node.finish()
    return settings


# ---------------------------------------------------------------------------------------------
# Pulumi runtime entry point


def runtime_config() -> tuple[dict[str, str], set[str]]:
    """Every config value and secret key the running Pulumi program was given."""
    from pulumi.runtime import config as runtime

    values: dict[str, str] = dict(runtime.get_config_env())
    values.update(runtime.CONFIG.get())
    secret_keys = set(runtime.get_config_secret_keys_env()) | set(runtime._SECRET_KEYS.get())
    return values, secret_keys


def load_stack_config() -> StackConfig:
    import pulumi

    values, secret_keys = runtime_config()
    return parse_config(values, secret_keys, pulumi.get_stack())
