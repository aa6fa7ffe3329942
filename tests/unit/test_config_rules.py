"""What a fuzz of the stack files found accepted-but-wrong or crashing, refused with a fix; and
how a config error reaches the user (the message alone, never a secret)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config import ConfigError, StackConfig
from tests.configs import Raw, parse, set_path, stack_raw
from tools.synth import REPO

DEV = stack_raw("dev")
SECRET_TEXT = "hunter2-very-secret"
GUEST = "guests.dev-cloud"
VM = "guests.virtual-smoker-device"
# a well-formed ed25519 key line whose blob claims to be an RSA key
MISMATCHED_KEY = "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIHbMWXbmZq4rCkHXHnNaV9zHPkmh0Z3FmQ9YV8oL6yGZ"


def at(path: str, value: object, secret: bool = False) -> Callable[[Raw], Raw]:
    return lambda raw: set_path(raw, path, value, secret)


def both(attr: str, value: object) -> Callable[[Raw], Raw]:
    return lambda raw: set_path(set_path(raw, f"{GUEST}.{attr}", value), f"{VM}.{attr}", value)


def with_key(full_key: str, value: str, secret: bool = False) -> Callable[[Raw], Raw]:
    def mutate(raw: Raw) -> Raw:
        values, secrets = dict(raw[0]), set(raw[1])
        values[full_key] = value
        if secret:
            secrets.add(full_key)
        return values, secrets

    return mutate


POOL = "baseline.docker.addressPools"
BRIDGE = "baseline.docker.bridgeIp"
# (case id, mutation of the valid dev config, key the error must name, text it must contain)
REFUSED: list[tuple[str, Callable[[Raw], Raw], str, str]] = [
    ("app-dir-etc", at("baseline.appDir", "/etc"), "baseline.appDir", "outside /opt"),
    ("app-dir-opt-itself", at("baseline.appDir", "/opt"), "baseline.appDir", "outside /opt"),
    ("app-dir-dotdot", at("baseline.appDir", "/opt/../etc"), "baseline.appDir", "'..'"),
    ("app-dir-relative", at("baseline.appDir", "opt/x"), "baseline.appDir", "absolute"),
    ("environment-not-stack", at("environment", "prod"), "environment", "does not match"),
    (
        "pool-on-guest-network",
        at(POOL, [{"base": "10.20.0.0/16", "size": 24}]),
        f"{POOL}[0].base",
        "guest network",
    ),
    (
        "pool-on-tailnet",
        at(POOL, [{"base": "100.64.0.0/16", "size": 24}]),
        f"{POOL}[0].base",
        "100.64.0.0/10",
    ),
    (
        "pool-size-too-short",
        at(POOL, [{"base": "172.20.0.0/16", "size": 8}]),
        f"{POOL}[0].size",
        "longer than /16",
    ),
    ("pool-extra-key", at(POOL, [{"base": "172.20.0.0/16", "size": 24, "x": 1}]), POOL, "x"),
    (
        "bridge-on-guest-network",
        at("baseline.docker.bridgeIp", "10.20.0.5/24"),
        "bridgeIp",
        "guest",
    ),
    (
        "bridge-on-tailnet",
        at("baseline.docker.bridgeIp", "100.100.0.1/24"),
        "bridgeIp",
        "Tailscale",
    ),
    (
        "ignore-everyone",
        at("baseline.fail2ban.ignoreIp", ["0.0.0.0/0"]),
        "baseline.fail2ban.ignoreIp",
        "never ban",
    ),
    (
        "ignore-everyone-v6",
        at("baseline.fail2ban.ignoreIp", ["::/0"]),
        "baseline.fail2ban.ignoreIp",
        "never ban",
    ),
    ("endpoint-no-port", at("proxmox.endpoint", "https://pve/"), "proxmox.endpoint", "no port"),
    (
        "endpoint-bad-port",
        at("proxmox.endpoint", "https://pve:99999/"),
        "proxmox.endpoint",
        "invalid port",
    ),
    (
        "endpoint-api-path",
        at("proxmox.endpoint", "https://pve:8006/api2/json"),
        "proxmox.endpoint",
        "API path",
    ),
    (
        "endpoint-credentials",
        at("proxmox.endpoint", f"https://root:{SECRET_TEXT}@pve:8006/"),
        "proxmox.endpoint",
        "credentials",
    ),
    (
        "crun-url-credentials",
        at("baseline.docker.crun.url", f"https://u:{SECRET_TEXT}@github.com/crun"),
        "baseline.docker.crun.url",
        "credentials",
    ),
    (
        "guest-host-key-bad-base64",
        at(f"{GUEST}.sshHostKey", "ssh-ed25519 AAAA"),
        f"{GUEST}.sshHostKey",
        "host key",
    ),
    (
        "guest-host-key-type-mismatch",
        at(f"{GUEST}.sshHostKey", MISMATCHED_KEY),
        f"{GUEST}.sshHostKey",
        "host key",
    ),
    (
        "node-host-key-truncated",
        at("proxmox.sshHostKey", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHbMWXbm"),
        "proxmox.sshHostKey",
        "host key",
    ),
    (
        "authorized-key-truncated",
        at("sshAuthorizedKeys", ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHbMWXbm me@x"]),
        "sshAuthorizedKeys",
        "OpenSSH public key",
    ),
    ("vm-user-shell", at(f"{VM}.user", "smoker; rm -rf /"), f"{VM}.user", "Linux user name"),
    ("vm-user-upper", at(f"{VM}.user", "Smoker"), f"{VM}.user", "Linux user name"),
    ("lxc-with-vm-user", at(f"{GUEST}.user", "smoker"), f"{GUEST}.user", "kind: lxc"),
    ("vm-with-features", at(f"{VM}.features", {"nesting": True}), f"{VM}.features", "kind: vm"),
    (
        "healthcheck-interval-zero",
        at("app.healthcheck.intervalSeconds", 0),
        "app.healthcheck.intervalSeconds",
        "1..3600",
    ),
    (
        "healthcheck-timeout-negative",
        at("app.healthcheck.timeoutSeconds", -5),
        "app.healthcheck.timeoutSeconds",
        "1..600",
    ),
    ("healthcheck-retries-zero", at("app.healthcheck.retries", 0), "retries", "1..100"),
    (
        "retention-negative",
        at("app.backups.retention.daily", -1),
        "app.backups.retention.daily",
        "0..1000",
    ),
    (
        "vzdump-retention-none",
        at("app.vzdump.retention", {"daily": 0, "weekly": 0, "monthly": 0}),
        "app.vzdump.retention",
        "no backup",
    ),
    ("max-age-zero", at("app.backups.maxAgeHours", 0), "app.backups.maxAgeHours", "1..8760"),
    ("pre-deploy-keep-zero", at("app.backups.preDeployKeep", 0), "preDeployKeep", "1.."),
    ("logrotate-zero", at("baseline.logrotateDays", 0), "baseline.logrotateDays", "1.."),
    ("tag-leading-dot", at("app.tag", ".nightly"), "app.tag", "image tag"),
    ("tag-with-colon", at("app.tag", "v1:2"), "app.tag", "image tag"),
    ("tag-too-long", at("app.tag", "v" * 129), "app.tag", "image tag"),
    ("image-bad-tag", at("app.images.backend", "benjr70/x:-bad"), "app.images.backend", "repo"),
    ("mongo-without-tag", at("app.images.mongo", "mongo"), "app.images.mongo", "no tag"),
    (
        "tailscale-hostname-duplicate",
        both("tailscale.hostname", "smoker"),
        "tailscale.hostname",
        "same Tailscale hostname",
    ),
    ("newline-in-node", at("proxmox.node", "pve\nrm -rf /"), "proxmox.node", "single line"),
    ("newline-in-tag", at("app.tag", "nightly\nx"), "app.tag", "single line"),
    ("tab-in-hostname", at(f"{GUEST}.hostname", "a\tb"), f"{GUEST}.hostname", "single line"),
    (
        "python-name-not-key",
        at(f"{GUEST}.memory_mb", 4096),
        f"{GUEST}.memory_mb",
        "did you mean 'memoryMb'",
    ),
    ("float-vmid", at(f"{GUEST}.vmid", 104.5), f"{GUEST}.vmid", "whole number"),
    ("guests-not-a-mapping", at("guests", ["dev-cloud"]), "guests", "must be an object"),
    ("guest-not-a-mapping", at(GUEST, "lxc"), GUEST, "must be an object"),
    ("section-not-a-mapping", at("network", "10.20.0.0/24"), "network", "object"),
    (
        "mongo-password-dollar",
        at("mongoRootPassword", "abc$HOME-long-enough-x", secret=True),
        "mongoRootPassword",
        "Compose env file",
    ),
    (
        "mongo-password-quote",
        at("mongoAppPassword", "it's-long-enough-really", secret=True),
        "mongoAppPassword",
        "Compose env file",
    ),
    (
        "vapid-key-hash",
        at("vapidPrivateKey", "abc #comment", secret=True),
        "vapidPrivateKey",
        "Compose env file",
    ),
    (
        "mongo-password-trailing-space",
        at("mongoRootPassword", "long-enough-password-x ", secret=True),
        "mongoRootPassword",
        "Compose env file",
    ),
    ("proxy-by-tag", at("app.proxy.image", "nginx:1.22.1"), "app.proxy.image", "by digest"),
    ("drain-negative", at("app.deploy.drainSeconds", -1), "app.deploy.drainSeconds", "0..600"),
    (
        "failing-window-zero",
        at("app.deploy.failingWindowSeconds", 0),
        "app.deploy.failingWindowSeconds",
        "1..600",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "key", "text"), [pytest.param(m, k, t, id=i) for i, m, k, t in REFUSED]
)
def test_refused_with_key_and_fix(mutate: Callable[[Raw], Raw], key: str, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(mutate(DEV))
    problems = [p for p in caught.value.problems if key in p.key]
    assert problems, f"no problem names {key}: {caught.value}"
    assert any(text in str(p) for p in problems), str(caught.value)
    assert all(p.fix for p in caught.value.problems)
    assert "Fix:" in str(caught.value) and f"smoker-infra:{problems[0].key}" in str(caught.value)
    assert SECRET_TEXT not in str(caught.value), "a secret value leaked into the error"
    for value in ("$HOME", "it's", "#comment", "password-x "):
        assert value not in str(caught.value), "a secret value leaked into the error"


def test_a_namespace_typo_is_named_with_the_right_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(with_key("smoker-infr:network", '{"cidr": "10.20.0.0/24"}')(DEV))
    (problem,) = caught.value.problems
    assert problem.key == "smoker-infr:network"
    assert "did you mean 'smoker-infra:network'" in str(caught.value)
    assert "smoker-infr:network = " in str(caught.value)


def test_provider_namespaces_are_not_ours_to_check() -> None:
    assert parse(with_key("proxmoxve:endpoint", "https://pve:8006/")(DEV)).stack == "dev"


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (with_key("smoker-infra:tailscaleAuthKye", SECRET_TEXT), "tailscaleAuthKye"),
        (with_key("smoker-infra:mongoRootPasword", SECRET_TEXT), "mongoRootPasword"),
        (with_key("smoker-infra:guestSshPrivteKey", SECRET_TEXT, True), "guestSshPrivteKey"),
        (with_key("smoker-infr:proxmoxPassword", SECRET_TEXT), "smoker-infr:proxmoxPassword"),
        (with_key("smoker-infr:proxmoxPassword", SECRET_TEXT, True), "smoker-infr:proxmoxPassword"),
        (at("app.apiToken", SECRET_TEXT), "app.apiToken"),
    ],
)
def test_a_misspelled_or_plain_secret_is_never_echoed(
    mutate: Callable[[Raw], Raw], key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(mutate(DEV))
    assert any(p.key == key for p in caught.value.problems), str(caught.value)
    assert SECRET_TEXT not in str(caught.value)


def test_a_plain_secret_names_the_exact_commands_for_the_stack() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(with_key("smoker-infra:tailscaleAuthKye", SECRET_TEXT)(DEV))
    message = str(caught.value)
    assert "did you mean 'tailscaleAuthKey'" in message
    assert "`pulumi config rm --stack dev tailscaleAuthKye`" in message
    assert "`pulumi config set --secret --stack dev tailscaleAuthKey`" in message


def test_a_missing_secret_names_the_exact_command_for_the_stack() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(set_path(stack_raw("prod"), "mongoAppPassword", None), "prod")
    assert "run `pulumi config set --secret --stack prod mongoAppPassword`" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# The message alone reaches the Pulumi user

_PROGRAM = """
import asyncio, json, os, sys
import pulumi
import pulumi.runtime.settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.stack import run_in_stack

class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args):
        if args.typ == "pulumi:pulumi:StackReference":  # the host stack, never applied
            return [args.resource_id, {"name": args.resource_id, "outputs": {}}]
        return [args.name + "-id", args.inputs]
    def call(self, args):
        return {}

values, secrets = json.loads(os.environ["SMOKER_TEST_CONFIG"])
loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
stack = os.environ["SMOKER_TEST_STACK"]
pulumi.runtime.set_mocks(Mocks(), project="smoker-infra", stack=stack, preview=True)
set_all_config(values, secrets)
pulumi.runtime.settings.ROOT.set(None)  # run_in_stack makes the stack, as under the engine
import stacks.platform

# What the language host does with a program's error (pulumi-language-python-exec):
# a RunError is logged as its message; anything else as a traceback.
try:
    loop.run_until_complete(run_in_stack(stacks.platform.main))
except pulumi.RunError as exc:
    print("error: " + str(exc), file=sys.stderr)
    sys.exit(32)
finally:
    loop.close()
"""


def _run_program(raw: Raw, stack: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SMOKER_TEST_CONFIG": json.dumps([raw[0], sorted(raw[1])]),
        "SMOKER_TEST_STACK": stack,
    }
    return subprocess.run(
        [sys.executable, "-W", "default", "-c", _PROGRAM],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


NOISE = ("Traceback", "ConfigError", "Task exception", "never retrieved", "Warning")


def test_a_config_error_reaches_pulumi_as_the_message_alone() -> None:
    raw = set_path(DEV, f"{GUEST}.vmid", 42)
    raw = set_path(raw, "mongoRootPassword", SECRET_TEXT)  # plain text: must not be echoed
    result = _run_program(raw, "dev")
    output = result.stdout + result.stderr
    assert result.returncode == 32, output
    assert "configuration has 2 problem(s)" in output
    assert "smoker-infra:guests.dev-cloud.vmid = 42" in output
    for noise in NOISE:
        assert noise not in output, output
    assert SECRET_TEXT not in output


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_missing_host_stack_output_reaches_pulumi_as_the_message_alone(stack: str) -> None:
    """Raised inside an apply, the RunError still reaches the language host as itself."""
    result = _run_program(stack_raw(stack), stack)
    output = result.stdout + result.stderr
    assert result.returncode == 32, output
    assert "error: the host stack 'organization/smoker-infra/host' has no output" in output
    # Not ours, and not under the engine: the SDK's DeprecationWarning for CopyFile (shown with
    # -W default), and at exit the event loops the mock monitor opens in the registry lookups'
    # executor threads (pulumi.runtime.mocks._ensure_event_loop), collected unclosed.
    ours = re.sub(
        r"Exception ignored in: <function BaseEventLoop.__del__.*?Invalid file descriptor: -1\n",
        "",
        output,
        flags=re.S,
    )
    for noise in ("Traceback", "Task exception", "never retrieved", "RuntimeWarning"):
        assert noise not in ours, ours


# ---------------------------------------------------------------------------------------------
# Fuzz: any mutation of a stack file parses or raises ConfigError, never another exception


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _tree(raw: Raw) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in raw[0].items():
        text = value.strip()
        tree[key] = json.loads(text) if text[:1] in "[{" else value
    return tree


def _raw(tree: dict[str, Any], secrets: set[str]) -> Raw:
    values = {}
    for key, value in tree.items():
        values[key] = value if isinstance(value, str) else json.dumps(value)
    return values, secrets


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", " ", "\n", "0.0.0.0/0", "::/0", "https://", "/opt/..", "a:b", "{", "["]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _mutate(tree: dict[str, Any], path: tuple[Any, ...], action: str, value: Any) -> None:
    *parents, last = path
    node: Any = tree
    for part in parents:
        node = node[part]
    if action == "delete":
        del node[last]
    elif action == "rename" and isinstance(node, dict):
        node[f"{last}x" if len(str(last)) < 3 else str(last)[:-1]] = node.pop(last)
    else:
        node[last] = value


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    stack=st.sampled_from(["dev", "prod"]),
    data=st.data(),
    action=st.sampled_from(["set", "set", "delete", "rename"]),
    value=VALUES,
)
def test_any_mutation_parses_or_raises_config_error(
    stack: str, data: st.DataObject, action: str, value: Any
) -> None:
    raw = stack_raw(stack)
    tree = _tree(raw)
    path = data.draw(st.sampled_from(_paths(tree)))
    _mutate(tree, path, action, value)
    try:
        result = parse(_raw(tree, raw[1]), stack)
    except ConfigError as exc:
        assert exc.problems and all(p.fix and p.what for p in exc.problems)
        assert "synth-placeholder" not in str(exc)  # never a secret's value
    else:
        assert isinstance(result, StackConfig)
