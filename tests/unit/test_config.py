"""The stack config validator: every bad input is reported with its key, its value and a fix."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config import ConfigError, Secret, parse_config
from tests.configs import Raw, parse, parse_host, set_path, stack_raw

HOST = stack_raw("host")
DEV = stack_raw("dev")
PROD = stack_raw("prod")
SECRET_TEXT = "hunter2-very-secret"
GUEST = "guests.dev-cloud"


def both_guests_on(attr: str, value: object) -> Callable[[Raw], Raw]:
    def mutate(raw: Raw) -> Raw:
        raw = set_path(raw, f"{GUEST}.{attr}", value)
        return set_path(raw, f"guests.virtual-smoker-device.{attr}", value)

    return mutate


def at(path: str, value: object, secret: bool = False) -> Callable[[Raw], Raw]:
    return lambda raw: set_path(raw, path, value, secret)


# (case id, mutation of the valid dev config, key the error must name, text it must contain)
BAD_INPUTS: list[tuple[str, Callable[[Raw], Raw], str, str]] = [
    ("vmid-too-low", at(f"{GUEST}.vmid", 42), f"{GUEST}.vmid", "between 100 and 999999"),
    ("vmid-too-high", at(f"{GUEST}.vmid", 10**7), f"{GUEST}.vmid", "between 100 and 999999"),
    ("vmid-not-a-number", at(f"{GUEST}.vmid", "one-oh-four"), f"{GUEST}.vmid", "whole number"),
    ("vmid-duplicate", both_guests_on("vmid", 104), "vmid", "same VMID"),
    ("ip-outside-network", at(f"{GUEST}.ipv4", "10.30.0.20/24"), f"{GUEST}.ipv4", "outside"),
    ("ip-duplicate", both_guests_on("ipv4", "10.20.0.20/24"), "ipv4", "same address"),
    ("ip-is-gateway", at(f"{GUEST}.ipv4", "10.20.0.1/24"), f"{GUEST}.ipv4", "gateway"),
    ("ip-is-broadcast", at(f"{GUEST}.ipv4", "10.20.0.255/24"), f"{GUEST}.ipv4", "broadcast"),
    ("ip-wrong-prefix", at(f"{GUEST}.ipv4", "10.20.0.20/16"), f"{GUEST}.ipv4", "prefix"),
    ("ip-no-prefix", at(f"{GUEST}.ipv4", "10.20.0.20"), f"{GUEST}.ipv4", "prefix length"),
    ("ip-garbage", at(f"{GUEST}.ipv4", "10.20.0.300/24"), f"{GUEST}.ipv4", "not an IPv4"),
    ("gateway-outside", at("network.gateway", "10.99.0.1"), "network.gateway", "outside"),
    ("network-not-cidr", at("network.cidr", "10.20.0.1/24"), "network.cidr", "CIDR"),
    ("dns-invalid", at("network.dns", ["1.1.1.1", "dns.google"]), "network.dns", "IPv4"),
    ("dns-empty", at("network.dns", []), "network.dns", "at least one"),
    ("dns-unreachable-private", at("network.dns", ["10.0.0.1"]), "network.dns[0]", "reachable"),
    ("hostname-underscore", at(f"{GUEST}.hostname", "dev_cloud"), f"{GUEST}.hostname", "1123"),
    ("hostname-leading-dash", at(f"{GUEST}.hostname", "-dev"), f"{GUEST}.hostname", "1123"),
    ("hostname-too-long", at(f"{GUEST}.hostname", "a" * 64), f"{GUEST}.hostname", "1123"),
    ("hostname-duplicate", both_guests_on("hostname", "smoker"), "hostname", "same hostname"),
    ("tag-upper-case", at(f"{GUEST}.tags", ["Cloud"]), f"{GUEST}.tags", "lower-case"),
    ("tag-bad-char", at(f"{GUEST}.tags", ["dev cloud"]), f"{GUEST}.tags", "lower-case"),
    ("cores-zero", at(f"{GUEST}.cores", 0), f"{GUEST}.cores", "1..64"),
    ("memory-tiny", at(f"{GUEST}.memoryMb", 64), f"{GUEST}.memoryMb", "256.."),
    ("swap-negative", at(f"{GUEST}.swapMb", -1), f"{GUEST}.swapMb", "0.."),
    ("disk-huge", at(f"{GUEST}.diskGb", 100_000), f"{GUEST}.diskGb", "4..4096"),
    ("lxc-disk-missing", at(f"{GUEST}.diskGb", None), f"{GUEST}.diskGb", "required"),
    ("kind-unknown", at(f"{GUEST}.kind", "docker"), f"{GUEST}.kind", "'lxc' or 'vm'"),
    ("guest-typo-key", at(f"{GUEST}.memroyMb", 4096), f"{GUEST}.memroyMb", "memoryMb"),
    ("top-level-typo", at("netwrok", {"cidr": "10.20.0.0/24"}), "netwrok", "not a known"),
    ("bool-not-bool", at(f"{GUEST}.firewall", "yes"), f"{GUEST}.firewall", "true or false"),
    ("endpoint-http", at("proxmox.endpoint", "http://pve:8006/"), "proxmox.endpoint", "https"),
    ("username-no-realm", at("proxmox.username", "root"), "proxmox.username", "realm"),
    ("bridge-invalid", at("network.bridge", "vm br0"), "network.bridge", "bridge"),
    ("restic-repo-missing", at("resticRepository", None), "resticRepository", "is missing"),
    (
        "restic-repo-unknown-kind",
        at("resticRepository", f"ftp://{SECRET_TEXT}/x", secret=True),
        "resticRepository",
        "kind of repository",
    ),
    (
        "restic-sftp-not-parsed",
        at("resticRepository", f"sftp:{SECRET_TEXT}", secret=True),
        "resticRepository",
        "sftp:[user@]host:path",
    ),
    ("restic-no-known-hosts", at("resticSshKnownHosts", None), "resticSshKnownHosts", "missing"),
    (
        "restic-known-hosts-garbage",
        at("resticSshKnownHosts", SECRET_TEXT, secret=True),
        "resticSshKnownHosts",
        "known_hosts",
    ),
    (
        "restic-s3-without-keys",
        lambda raw: set_path(
            set_path(raw, "resticRepository", f"s3:https://s3.test/{SECRET_TEXT}", True),
            "resticAwsAccessKeyId",
            None,
        ),
        "resticAwsAccessKeyId",
        "missing",
    ),
    (
        "restic-subset-over-100",
        at("app.backups.offsite.readDataSubset", "150%"),
        "app.backups.offsite.readDataSubset",
        "percentage",
    ),
    (
        "secret-in-plain-text",
        at("proxmoxPassword", SECRET_TEXT),
        "proxmoxPassword",
        "--secret --stack dev proxmoxPassword",
    ),
    (
        "unknown-secret-plain",
        at("tailscaleAuthKey", SECRET_TEXT),
        "tailscaleAuthKey",
        "--secret --stack dev tailscaleAuthKey",
    ),
    (
        "secret-nested-in-object",
        at("proxmox.password", SECRET_TEXT),
        "proxmox.password",
        "pulumi config set --secret",
    ),
    ("missing-guest-key", at("guestSshPrivateKey", None), "guestSshPrivateKey", "--secret"),
    (
        "key-expiry-too-short",
        at("tailscale.keyExpirySeconds", 60),
        "keyExpirySeconds",
        "600..86400",
    ),
    (
        "key-expiry-too-long",
        at("tailscale.keyExpirySeconds", 7776000),
        "tailscale.keyExpirySeconds",
        "until the guest joins",
    ),
    (
        "mint-keys-not-bool",
        at("tailscale.mintKeys", "maybe"),
        "tailscale.mintKeys",
        "true or false",
    ),
    (
        "mint-keys-without-oauth-client",
        lambda raw: set_path(
            set_path(raw, "tailscale.mintKeys", True), "tailscaleOauthClientSecret", None
        ),
        "tailscaleOauthClientSecret",
        "`pulumi config set --secret --stack dev tailscaleOauthClientSecret`",
    ),
    (
        "oauth-secret-in-plain-text",
        at("tailscaleOauthClientSecret", "tskey-client-" + SECRET_TEXT),
        "tailscaleOauthClientSecret",
        "--secret --stack dev tailscaleOauthClientSecret",
    ),
    (
        "oauth-secret-is-an-auth-key",
        at("tailscaleOauthClientSecret", "tskey-auth-" + SECRET_TEXT, secret=True),
        "tailscaleOauthClientSecret",
        "not an OAuth client credential",
    ),
    (
        "oauth-client-id-two-words",
        at("tailscaleOauthClientId", "client " + SECRET_TEXT, secret=True),
        "tailscaleOauthClientId",
        "single word",
    ),
    (
        "guest-key-is-public",
        at("guestSshPrivateKey", "ssh-ed25519 AAAA " + SECRET_TEXT, secret=True),
        "guestSshPrivateKey",
        "not a PEM/OpenSSH private key",
    ),
    (
        "no-proxmox-credentials",
        at("proxmoxPassword", None),
        "proxmoxPassword",
        "--secret --stack dev proxmoxPassword",
    ),
    (
        "keyctl-needs-password",
        lambda raw: set_path(
            set_path(raw, "proxmoxPassword", None),
            "proxmoxApiToken",
            "root@pam!ci=" + SECRET_TEXT,
            secret=True,
        ),
        "proxmoxPassword",
        "keyctl",
    ),
    (
        "tun-needs-password",  # Proxmox lets only root@pam pass a device through, like keyctl
        lambda raw: set_path(
            set_path(
                set_path(raw, f"{GUEST}.features", {"keyctl": False}),
                "proxmoxPassword",
                None,
            ),
            "proxmoxApiToken",
            "root@pam!ci=" + SECRET_TEXT,
            secret=True,
        ),
        "proxmoxPassword",
        "/dev/net/tun",
    ),
    (
        "node-host-key-garbage",
        at("proxmox.sshHostKey", "not-a-key AAAA"),
        "proxmox.sshHostKey",
        "ssh_host_ed25519_key.pub",
    ),
    (
        "api-token-malformed",
        at("proxmoxApiToken", SECRET_TEXT, secret=True),
        "proxmoxApiToken",
        "user@realm!tokenid=uuid",
    ),
    ("authorized-keys-empty", at("sshAuthorizedKeys", []), "sshAuthorizedKeys", "at least one"),
    (
        "authorized-key-garbage",
        at("sshAuthorizedKeys", ["ssh-ed25519 not-base64!"]),
        "sshAuthorizedKeys",
        "OpenSSH public key",
    ),
    ("environment-unknown", at("environment", "staging"), "environment", "'host', 'dev' or 'prod'"),
    (
        "dev-owns-host-objects",
        at("hostShared", {"pool": "smart-smoker"}),
        "hostShared",
        "host stack owns",
    ),
    ("dev-without-app", at("app", None), "app", "required in the dev stack"),
    (
        "registry-auth-without-password",
        lambda raw: set_path(
            set_path(raw, "app.registryAuth", {"address": "ghcr.io", "username": "benjr70"}),
            "registryPassword",
            None,
        ),
        "registryPassword",
        "--secret",
    ),
    (
        "registry-address-url",
        at("app.registryAuth", {"address": "https://ghcr.io", "username": "u"}),
        "app.registryAuth.address",
        "host[:port]",
    ),
    ("dev-with-runner", at("runner", {"url": "https://github.com/a/b"}), "runner", "host stack"),
    ("host-stack-ref-bad", at("hostStack", {"stack": "no/slash"}), "hostStack.stack", "stack name"),
    ("structured-json-broken", at("guests", "{not json"), "guests", "structured"),
    ("readiness-too-short", at("readinessTimeoutSeconds", "5"), "readinessTimeoutSeconds", "30"),
    ("host-key-garbage", at(f"{GUEST}.sshHostKey", "hello"), f"{GUEST}.sshHostKey", "host key"),
    (
        "mongo-password-short",
        at("mongoRootPassword", "short", secret=True),
        "mongoRootPassword",
        "16 characters",
    ),
    ("missing-app-password", at("mongoAppPassword", None), "mongoAppPassword", "--secret"),
    ("backup-time-bad", at("app.backups.dumpTime", "2am"), "app.backups.dumpTime", "HH:MM"),
    ("image-repo-bad", at("app.images.backend", "Bad Repo"), "app.images.backend", "repository"),
    ("keep-one-release", at("app.deploy.keepReleases", 1), "app.deploy.keepReleases", "2..50"),
    (
        "device-pull-too-often",
        at("app.deviceUpdates.intervalSeconds", 60),
        "app.deviceUpdates.intervalSeconds",
        "300..604800 s",
    ),
    (
        "verify-timeout-bad",
        at("app.deploy.verifyTimeoutSeconds", "soon"),
        "app.deploy.verifyTimeoutSeconds",
        "whole number",
    ),
    ("deploy-typo", at("app.deploy.keepRelease", 3), "app.deploy.keepRelease", "keepReleases"),
    ("app-image-missing", at("app.images.smokerUi", None), "app.images.smokerUi", "required"),
    (
        "funnel-on-dev",
        at(f"{GUEST}.tailscale.funnel", True),
        f"{GUEST}.tailscale.funnel",
        "prod only",
    ),
    (
        "crun-too-old",
        at("baseline.docker.crun.version", "1.8"),
        "baseline.docker.crun.version",
        "1.21",
    ),
    ("ts-tag-bad", at(f"{GUEST}.tailscale.tags", ["server"]), f"{GUEST}.tailscale.tags", "tag:"),
    ("firewall-port-bad", at(f"{GUEST}.firewallAllow", ["http"]), f"{GUEST}.firewallAllow", "PORT"),
    (
        "serve-target-not-loopback",
        at(f"{GUEST}.tailscale.serve", [{"httpsPort": 443, "target": "http://10.0.0.5:80"}]),
        f"{GUEST}.tailscale.serve",
        "loopback",
    ),
    (
        "fail2ban-bantime-tiny",
        at("baseline.fail2ban.banTimeSeconds", 5),
        "baseline.fail2ban.banTimeSeconds",
        "60..",
    ),
    (
        "retention-none",
        at("app.backups.retention", {"daily": 0, "weekly": 0, "monthly": 0}),
        "app.backups.retention",
        "no backup",
    ),
]


RUNNER = "guests.github-runner"
# (case id, mutation of the valid host config, key the error must name, text it must contain)
HOST_BAD_INPUTS: list[tuple[str, Callable[[Raw], Raw], str, str]] = [
    ("vmid-is-template", at(f"{RUNNER}.vmid", 9000), f"{RUNNER}.vmid", "template's VMID"),
    ("host-missing-runner-token", at("githubRunnerToken", None), "githubRunnerToken", "--secret"),
    (
        "runner-token-with-space",
        at("githubRunnerToken", "ghp_" + SECRET_TEXT + " x", secret=True),
        "githubRunnerToken",
        "personal access token",
    ),
    ("host-missing-node-key", at("proxmoxSshPrivateKey", None), "proxmoxSshPrivateKey", "--secret"),
    (
        "template-checksum-bad",
        at("hostShared.lxcTemplate.checksum", "abc"),
        "hostShared.lxcTemplate.checksum",
        "sha256",
    ),
    (
        "template-checksum-missing",
        at("hostShared.lxcTemplate.checksum", None),
        "hostShared.lxcTemplate.checksum",
        "SHA256SUMS",
    ),
    (
        "cloud-image-not-importable",
        at("hostShared.cloudImage.fileName", "jammy.img"),
        "hostShared.cloudImage.fileName",
        ".qcow2",
    ),
    (
        "download-url-no-file",
        at("hostShared.lxcTemplate.url", "https://cloud-images.ubuntu.com/releases/"),
        "hostShared.lxcTemplate.url",
        "names no file",
    ),
    (
        "download-file-name-path",
        at("hostShared.cloudImage.fileName", "../x.qcow2"),
        "hostShared.cloudImage.fileName",
        "file name",
    ),
    ("host-without-runner", at("runner", None), "runner", "required in the host stack"),
    ("runner-sha-bad", at("runner.sha256", "abc"), "runner.sha256", "sha256"),
    ("host-without-shared", at("hostShared", None), "hostShared", "required in the host stack"),
    ("host-with-app", lambda raw: set_path(raw, "app", DEV_APP), "app", "runs no services"),
    ("host-with-reference", at("hostStack", {}), "hostStack", "reads no other stack"),
    ("host-guest-vm", at(f"{RUNNER}.kind", "vm"), f"{RUNNER}.kind", "runner LXCs"),
]
DEV_APP = json.loads(DEV[0]["smoker-infra:app"])

# kind: host, the physical smoker of the prod stack (guests.smoker)
SMOKER = "guests.smoker"
SMOKER_BODY = json.loads(PROD[0]["smoker-infra:guests"])["smoker"]
PIN = "repo:tag@sha256:<digest> (or at least repo:tag)"


def smoker_on(stack_guest: str) -> Callable[[Raw], Raw]:
    """Declare the physical smoker's body as `stack_guest` (a guest of another stack)."""
    return at(stack_guest, SMOKER_BODY)


PROD_BAD_INPUTS: list[tuple[str, Callable[[Raw], Raw], str, str]] = [
    *(
        (
            f"host-kind-refuses-{key}",
            at(f"{SMOKER}.{key}", value),
            f"{SMOKER}.{key}",
            "is not a setting of a kind: host guest",
        )
        for key, value in (
            ("vmid", 107),
            ("ipv4", "10.20.0.50/24"),
            ("cores", 4),
            ("memoryMb", 1024),
            ("swapMb", 100),
            ("diskGb", 16),
            ("features", {"nesting": True}),
            ("machine", "q35"),
            ("bios", "ovmf"),
            ("firewall", True),
            ("startOnBoot", True),
            ("protect", True),
        )
    ),
    (
        "host-key-missing",
        at(f"{SMOKER}.sshHostKey", None),
        f"{SMOKER}.sshHostKey",
        "ssh-keyscan -t ed25519",
    ),
    (
        "host-key-bad",
        at(f"{SMOKER}.sshHostKey", "ssh-ed25519 AAAA"),
        f"{SMOKER}.sshHostKey",
        "host key",
    ),
    ("host-ssh-host-missing", at(f"{SMOKER}.sshHost", None), f"{SMOKER}.sshHost", "tailnet name"),
    ("host-user-bad", at(f"{SMOKER}.user", "Smoker!"), f"{SMOKER}.user", "Linux user name"),
    ("host-arch-unknown", at(f"{SMOKER}.arch", "amd64"), f"{SMOKER}.arch", "'armhf' or 'arm64'"),
    ("host-hostname-missing", at(f"{SMOKER}.hostname", None), f"{SMOKER}.hostname", "required"),
    ("host-typo-key", at(f"{SMOKER}.sshHots", "smoker"), f"{SMOKER}.sshHots", "sshHost"),
    (
        "host-hostname-duplicate",
        at(f"{SMOKER}.hostname", "smart-smoker-cloud-prod"),
        "hostname",
        "same hostname",
    ),
    (
        "host-tailscale-hostname-duplicate",
        at(f"{SMOKER}.tailscale.hostname", "smokecloud"),
        "tailscale.hostname",
        "same Tailscale hostname",
    ),
    (
        "serial-device-relative",
        at(f"{SMOKER}.device.serialDevice", "ttyS0"),
        f"{SMOKER}.device.serialDevice",
        "absolute /dev path",
    ),
    (
        "serial-device-outside-dev",
        at(f"{SMOKER}.device.serialDevice", "/tmp/ttyS0"),
        f"{SMOKER}.device.serialDevice",
        "/dev/ttyS0",
    ),
    (
        "serial-device-escapes-dev",
        at(f"{SMOKER}.device.serialDevice", "/dev/../etc/passwd"),
        f"{SMOKER}.device.serialDevice",
        "absolute /dev path",
    ),
    (
        "kiosk-without-image",
        at(f"{SMOKER}.device.kiosk", {"enabled": True}),
        f"{SMOKER}.device.kiosk.image",
        PIN,
    ),
    (
        "kiosk-image-unpinned",
        at(f"{SMOKER}.device.kiosk", {"enabled": True, "image": "benjr70/electron-shell"}),
        f"{SMOKER}.device.kiosk.image",
        "pinned by a tag or a digest",
    ),
    (
        "kiosk-typo",
        at(f"{SMOKER}.device.kiosk", {"enable": True}),
        f"{SMOKER}.device.kiosk.enable",
        "enabled",
    ),
]
HOST_BAD_INPUTS.append(("host-guest-kind-host", smoker_on(RUNNER), f"{RUNNER}.kind", "runner LXCs"))


@pytest.mark.parametrize(
    ("stack", "mutate", "key", "text"),
    [pytest.param("dev", m, k, t, id=i) for i, m, k, t in BAD_INPUTS]
    + [pytest.param("host", m, k, t, id=f"host-{i}") for i, m, k, t in HOST_BAD_INPUTS]
    + [pytest.param("prod", m, k, t, id=f"prod-{i}") for i, m, k, t in PROD_BAD_INPUTS],
)
def test_bad_input_is_reported_with_key_value_and_fix(
    stack: str, mutate: Callable[[Raw], Raw], key: str, text: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(*mutate({"host": HOST, "prod": PROD}.get(stack, DEV)), stack)
    problems = [p for p in caught.value.problems if key in p.key]
    assert problems, f"no problem names {key}: {caught.value}"
    assert any(text in str(p) for p in problems), str(caught.value)
    message = str(caught.value)
    assert "Fix:" in message and f"smoker-infra:{problems[0].key}" in message
    assert SECRET_TEXT not in message, "a secret value leaked into the error"


def test_there_are_at_least_25_distinct_bad_inputs() -> None:
    assert len({case[0] for case in BAD_INPUTS}) >= 25


def test_all_problems_are_reported_at_once() -> None:
    raw = set_path(DEV, f"{GUEST}.vmid", 1)
    raw = set_path(raw, f"{GUEST}.hostname", "Bad_Name")
    raw = set_path(raw, "network.dns", ["10.0.0.1"])
    with pytest.raises(ConfigError) as caught:
        parse(raw)
    keys = {p.key for p in caught.value.problems}
    assert {f"{GUEST}.vmid", f"{GUEST}.hostname", "network.dns[0]"} <= keys
    assert "3 problem(s)" in str(caught.value)


def test_prod_guests_cannot_be_unprotected() -> None:
    with pytest.raises(ConfigError, match="always protected"):
        parse(set_path(PROD, "guests.prod-cloud.protect", False), "prod")


def test_the_three_stack_files_are_valid() -> None:
    host, dev, prod = parse_host(HOST), parse(DEV, "dev"), parse(PROD, "prod")
    assert [g.vmid for g in host.proxmox_guests] == [105]
    assert [g.vmid for g in dev.proxmox_guests] == [104, 9001]
    assert [g.vmid for g in prod.proxmox_guests] == [106]
    assert [g.name for g in prod.hosts] == ["smoker"]  # the physical smoker: no VMID
    # dev and prod read the host stack (organization/smoker-infra/host) by default
    assert dev.host_stack.name == prod.host_stack.name == "organization/smoker-infra/host"


def test_a_host_guests_problems_are_reported_at_once() -> None:
    raw = at(f"{SMOKER}.vmid", 107)(PROD)
    raw = at(f"{SMOKER}.sshHostKey", None)(raw)
    raw = at(f"{SMOKER}.device.serialDevice", "ttyS0")(raw)
    with pytest.raises(ConfigError) as caught:
        parse(raw, "prod")
    keys = {p.key for p in caught.value.problems}
    assert {f"{SMOKER}.vmid", f"{SMOKER}.sshHostKey", f"{SMOKER}.device.serialDevice"} <= keys


def test_the_physical_smoker_is_a_host_guest_with_defaults() -> None:
    body = {
        k: v for k, v in SMOKER_BODY.items() if k in ("kind", "sshHost", "sshHostKey", "hostname")
    }
    cfg = parse(at(SMOKER, body)(PROD), "prod")
    smoker = cfg.guest("smoker")
    assert smoker.kind == "host" and smoker.ssh_user == "smoker" and smoker.arch == "armhf"
    assert smoker.platform == "linux/arm/v7" and smoker.ssh_host == "smoker"
    assert smoker.device.serial_device == "/dev/ttyS0" and not smoker.device.kiosk.enabled
    assert [g.name for g in cfg.proxmox_guests] == ["prod-cloud"]
    arm64 = parse(at(f"{SMOKER}.arch", "arm64")(PROD), "prod").guest("smoker")
    assert arm64.platform == "linux/arm64"  # type: ignore[union-attr]
    pinned = "benjr70/smart-smoker-electron-shell:v1.0.0@sha256:" + "0" * 64
    for image in ("benjr70/smart-smoker-electron-shell:v1", pinned):
        kiosk = {"enabled": True, "image": image}
        guest = parse(at(f"{SMOKER}.device.kiosk", kiosk)(PROD), "prod").guest("smoker")
        assert guest.device.kiosk.image == image  # type: ignore[union-attr]


def test_a_host_guest_may_sit_in_dev_next_to_the_device_vm() -> None:
    cfg = parse(smoker_on("guests.smoker")(DEV), "dev")
    assert [g.name for g in cfg.hosts] == ["smoker"]
    assert [g.vmid for g in cfg.proxmox_guests] == [104, 9001]


def test_secret_never_prints() -> None:
    cfg = parse(DEV)
    assert "PRIVATE" not in repr(cfg) + str(cfg.secrets.guest_ssh_private_key)
    assert repr(Secret("x")) == "Secret(***)"


def test_defaults_come_from_reference() -> None:
    cfg = parse(DEV)
    cloud = cfg.guest("dev-cloud")
    assert (cloud.cores, cloud.memory_mb, cloud.swap_mb, cloud.disk_gb) == (2, 4096, 1024, 20)
    assert cloud.tags == ("cloud", "dev") and cloud.ssh_user == "root" and not cloud.protect
    device = cfg.guest("virtual-smoker-device")
    assert device.disk_gb is None and device.ssh_user == "smoker" and device.machine == "q35"
    assert [str(s) for s in cfg.network.dns] == ["1.1.1.1", "8.8.8.8"]
    assert parse(PROD, "prod").guest("prod-cloud").protect


# ---------------------------------------------------------------------------------------------
# Properties of the address and VMID rules

NETWORK = ipaddress.IPv4Network("10.20.0.0/24")
GATEWAY = ipaddress.IPv4Address("10.20.0.1")


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_any_address_is_accepted_exactly_when_it_is_a_free_host_in_the_network(n: int) -> None:
    address = ipaddress.IPv4Address(n)
    raw = set_path(DEV, f"{GUEST}.ipv4", f"{address}/24")
    usable = (
        address in NETWORK
        and address not in (NETWORK.network_address, NETWORK.broadcast_address, GATEWAY)
        and address != ipaddress.IPv4Address("10.20.0.40")  # the device VM's
    )
    if usable:
        assert parse(raw).guest("dev-cloud").ipv4.ip == address
    else:
        with pytest.raises(ConfigError) as caught:
            parse(raw)
        assert {p.key for p in caught.value.problems} & {f"{GUEST}.ipv4", "guests.dev-cloud.ipv4"}


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=-(10**7), max_value=10**7))
def test_any_vmid_is_accepted_exactly_when_in_range_and_unique(vmid: int) -> None:
    raw = set_path(DEV, f"{GUEST}.vmid", vmid)
    # (9000, the VM template's VMID, is refused once dev reads the host stack: test_host_stack)
    if 100 <= vmid <= 999_999 and vmid != 9001:
        assert parse(raw).guest("dev-cloud").vmid == vmid
    else:
        with pytest.raises(ConfigError) as caught:
            parse(raw)
        assert any(p.key.endswith(".vmid") for p in caught.value.problems)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=100, max_value=999_999), min_size=2, max_size=2))
def test_two_guests_never_share_a_vmid(vmids: list[int]) -> None:
    raw = set_path(DEV, f"{GUEST}.vmid", vmids[0])
    raw = set_path(raw, "guests.virtual-smoker-device.vmid", vmids[1])
    if vmids[0] == vmids[1]:
        with pytest.raises(ConfigError):
            parse(raw)
    else:
        assert {g.vmid for g in parse(raw).guests} == set(vmids)
