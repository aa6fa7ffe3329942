"""The smoker-infra policies as plain checks over simple data (`policy.model`).

Importing this module has no side effects: `policy/__main__.py` builds the `PolicyPack` from the
CrossGuard wrappers in `policy.crossguard` (which starts a gRPC server and blocks); tests call
`violations(...)` and the wrappers directly.

A check takes every resource of a stack (`Resource`: type, name, URN, inputs, protect, provider)
and yields `(resource, message)`; each message names the resource and the fix. Secret inputs are
the marker `[secret]` (as `tools.synth` writes them); unknown preview values are `[unknown]`.

Inside the pack, `props` come from the protobuf Struct the engine sends: every number is a float
(`106.0`), unknown preview values are the SDK's sentinel strings, and secret values arrive
decrypted, with nothing saying they were secret (pulumi/pulumi-policy#241). `from_policy_args`
turns that back into the synthesized shape (integral floats -> ints, sentinels -> `[unknown]`).
For secrets that cannot be undone, so inside the pack `secret-inputs` checks what it still can:
no password, token, private key or auth key appears in plain text outside its own input or a
channel meant to carry it (a command's stdin, a release's env files). That the inputs *are*
secret is checked on the synthesized stacks (`python -m policy.check`, and the unit tests), where
markers are visible. tests/sdk/ drives the pack through its own analyzer server with that shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from policy.compose_policies import loopback_ports, release_images_pinned
from policy.model import (
    COMMAND,
    GUESTS,
    LXC,
    NO_EXPLICIT_PROVIDER,
    PROD_STACKS,
    SECRET,
    SENSITIVE_SUFFIXES,
    UNKNOWN,
    VZDUMP,
    Finding,
    Policy,
    Resource,
    Violation,
    is_release,
    items,
    writes,
)

# --- the checks -------------------------------------------------------------------------------


def _id_text(value: Any) -> str:
    """A VMID however it arrives: 106, 106.0 (a Struct number) or "106"."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    return text.removesuffix(".0") if text.removesuffix(".0").isdigit() else text


def lxc_unprivileged(resources: Sequence[Resource]) -> Iterator[Finding]:
    for r in resources:
        if r.type == LXC and r.props.get("unprivileged") is not True:
            yield (
                r,
                (
                    f"LXC guest {r.label} is privileged (unprivileged="
                    f"{r.props.get('unprivileged')!r}); fix: create it with unprivileged=True "
                    "(components/cloud_guest.py) - a privileged container's root is the host's root"
                ),
            )


def prod_guests_protected(resources: Sequence[Resource]) -> Iterator[Finding]:
    for r in resources:
        if r.type not in GUESTS or r.stack not in PROD_STACKS:
            continue
        if not r.protect:
            yield (
                r,
                (
                    f"prod guest {r.label} is not protected from deletion; fix: keep "
                    f"guests.{r.name}.protect: true in Pulumi.{r.stack}.yaml (option protect)"
                ),
            )
        if r.props.get("protection") is not True:
            yield (
                r,
                (
                    f"prod guest {r.label} has Proxmox protection off; fix: set protection=True "
                    f"(guests.{r.name}.protect: true in Pulumi.{r.stack}.yaml)"
                ),
            )


def cloud_nic_firewall(resources: Sequence[Resource]) -> Iterator[Finding]:
    for r in resources:
        if r.type not in GUESTS or not (r.type == LXC or "cloud" in items(r.props.get("tags"))):
            continue
        nics = r.props.get("networkInterfaces" if r.type == LXC else "networkDevices")
        if nics == UNKNOWN:
            continue
        if not items(nics) or any(
            not isinstance(nic, Mapping) or nic.get("firewall") is not True for nic in items(nics)
        ):
            yield (
                r,
                (
                    f"cloud guest {r.label} has a NIC without the Proxmox firewall; fix: set "
                    f"guests.{r.name}.firewall: true in Pulumi.{r.stack}.yaml"
                ),
            )


def _is_default_provider(provider: str | None) -> bool:
    if not provider:
        return True
    parts = provider.split("::")
    name = parts[3] if len(parts) > 3 else provider
    return name == "default" or name.startswith("default_")


def explicit_provider(resources: Sequence[Resource]) -> Iterator[Finding]:
    for r in resources:
        package = r.type.split(":", 1)[0]
        if package not in NO_EXPLICIT_PROVIDER and _is_default_provider(r.provider):
            yield (
                r,
                (
                    f"{r.label} uses a default {package} provider ({r.provider or 'none given'}); "
                    "fix: pass opts=ResourceOptions(provider=<the stack's explicit provider>) "
                    f"and list {package} in pulumi:disable-default-providers in Pulumi.yaml"
                ),
            )


def _sensitive(key: str) -> bool:
    return re.sub("[^a-z]", "", key.lower()).endswith(SENSITIVE_SUFFIXES)


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) for every leaf; a secret or unknown marker is a leaf."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def _last_key(path: str) -> str:
    return re.sub(r"\[\d+\]$", "", path).rsplit(".", 1)[-1]


def _secret_channel(r: Resource, path: str) -> bool:
    """An input meant to carry credentials to a host (it must be secret; see secret_inputs)."""
    if r.type == COMMAND:
        return path == "stdin"
    return is_release(r) and (path == "envFiles" or path.startswith("envFiles."))


def secret_inputs(resources: Sequence[Resource], secrets_visible: bool = True) -> Iterator[Finding]:
    """Credentials are secret inputs (when markers are visible) and never appear in plain text."""
    plain: dict[str, Resource] = {}
    for r in resources:
        for path, value in _leaves(r.props):
            if not _sensitive(_last_key(path)) or value in (None, "", SECRET, UNKNOWN):
                continue
            if isinstance(value, str) and len(value) >= 8:
                plain.setdefault(value, r)
            if secrets_visible:
                yield (
                    r,
                    (
                        f"{r.label} input {path} is not secret; fix: pass it as "
                        "pulumi.Output.secret(...) from `pulumi config set --secret` config"
                    ),
                )
        carries_secret = r.type == COMMAND and r.props.get("logging") == "none"
        if (
            secrets_visible
            and carries_secret
            and r.props.get("stdin") not in (None, SECRET, UNKNOWN)
        ):
            yield (
                r,
                (
                    f"{r.label} carries a secret (logging none) but its stdin is plain; fix: "
                    "wrap stdin in pulumi.Output.secret(...), list it in additional_secret_outputs"
                ),
            )
        env_files = r.props.get("envFiles")
        if secrets_visible and is_release(r) and env_files not in (None, {}, SECRET, UNKNOWN):
            yield (
                r,
                (
                    f"{r.label} input envFiles is not secret (env files carry credentials); "
                    "fix: wrap envFiles in pulumi.Output.secret(...), list it in "
                    "additional_secret_outputs"
                ),
            )
    # Wherever a credential's plain value reaches (command line, environment, trigger...) it is
    # logged or stored unencrypted; a command's stdin and a release's env files are the channels
    # meant to carry it to a host (secret inputs, checked above where secrets are visible).
    for r in resources:
        for path, value in _leaves(r.props):
            if (
                not isinstance(value, str)
                or _sensitive(_last_key(path))
                or _secret_channel(r, path)
            ):
                continue
            for secret, owner in plain.items():
                if secret in value:
                    yield (
                        r,
                        (
                            f"{r.label} input {path} contains the plain value of a credential of "
                            f"{owner.label}; fix: send it on stdin as a secret, never in {path}"
                        ),
                    )


def _sshd_options(text: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Global options (first value wins, as in sshd) and every (option, value) inside Match."""
    global_opts: dict[str, str] = {}
    in_match: list[tuple[str, str]] = []
    matching = False
    for line in text.splitlines():
        words = line.split("#", 1)[0].replace("=", " ").split()
        if len(words) < 2:
            continue
        key, value = words[0].lower(), words[1].lower()
        if key == "match":
            matching = True
        elif matching:
            in_match.append((key, value))
        else:
            global_opts.setdefault(key, value)
    return global_opts, in_match


SSHD_REQUIRED = {
    "passwordauthentication": ("no",),
    "kbdinteractiveauthentication": ("no",),
    "permitrootlogin": ("no", "prohibit-password", "without-password", "forced-commands-only"),
}


def sshd_no_passwords(resources: Sequence[Resource]) -> Iterator[Finding]:
    for r in resources:
        if writes(r) != "/etc/ssh/sshd_config":
            continue
        text = r.props.get("stdin")
        if text == UNKNOWN:
            continue
        if not isinstance(text, str) or text == SECRET:
            yield (
                r,
                (
                    f"{r.label} writes sshd_config from input that cannot be checked; fix: render "
                    "it with rendering/ as plain (non-secret) text on stdin"
                ),
            )
            continue
        global_opts, in_match = _sshd_options(text)
        for option, allowed in SSHD_REQUIRED.items():
            have = global_opts.get(option)
            if have not in allowed:
                yield (
                    r,
                    (
                        f"{r.label} renders sshd_config with {option} {have or '(unset)'}; fix: "
                        f"render {option} {allowed[0]} (rendering/, keys only)"
                    ),
                )
        for option, value in in_match:
            if option in SSHD_REQUIRED and value not in SSHD_REQUIRED[option]:
                yield (
                    r,
                    (
                        f"{r.label} renders a Match block with {option} {value}; fix: remove it "
                        "(no exception may re-enable password or root password login)"
                    ),
                )


def prod_backups(resources: Sequence[Resource]) -> Iterator[Finding]:
    """Every prod guest is in an enabled vzdump job with retention; app guests run backup timers."""
    guests = [
        r
        for r in resources
        if r.type in GUESTS and r.stack in PROD_STACKS and not r.props.get("template")
    ]
    jobs = [
        r
        for r in resources
        if r.type == VZDUMP
        and r.props.get("enabled") is not False
        and r.props.get("schedule")
        and r.props.get("pruneBackups")
    ]
    for guest in guests:
        vmid = _id_text(guest.props.get("vmId"))
        covering = [
            j
            for j in jobs
            if UNKNOWN in (vmid, j.props.get("vmids"))
            or vmid in [_id_text(v) for v in items(j.props.get("vmids"))]
        ]
        if not covering:
            yield (
                guest,
                (
                    f"prod guest {guest.label} (VMID {vmid}) is in no enabled vzdump job with a "
                    f"schedule and retention; fix: set app.vzdump in Pulumi.{guest.stack}.yaml"
                ),
            )
        if guest.type != LXC:
            continue
        timers = [
            r
            for r in resources
            if r.type == COMMAND
            and r.name.startswith(f"{guest.name}-")
            and "smart-smoker-backup.timer" in str(r.props.get("create", ""))
            and "enable" in str(r.props.get("create", ""))
        ]
        if not timers:
            yield (
                guest,
                (
                    f"prod guest {guest.label} has no enabled MongoDB backup timer; fix: keep "
                    f"app.backups in Pulumi.{guest.stack}.yaml (the AppStack enables the timers)"
                ),
            )


_FUNNEL = re.compile(r"\btailscale\s+funnel\b")


def funnel_prod_only(resources: Sequence[Resource]) -> Iterator[Finding]:
    for r in resources:
        if r.type != COMMAND or r.stack in PROD_STACKS:
            continue
        scripts = " ".join(str(r.props.get(k, "")) for k in ("create", "update"))
        if _FUNNEL.search(scripts):
            yield (
                r,
                (
                    f"{r.label} turns on Tailscale funnel (public internet) on stack {r.stack}; "
                    "fix: use serve (tailnet only): set tailscale.funnel: false for its guest"
                ),
            )


POLICIES: tuple[Policy, ...] = (
    Policy("lxc-unprivileged", "LXC guests are unprivileged.", lxc_unprivileged, True),
    Policy("prod-guests-protected", "Prod guests are protected.", prod_guests_protected, True),
    Policy(
        "cloud-nic-firewall", "Cloud guests have the NIC firewall on.", cloud_nic_firewall, True
    ),
    Policy(
        "explicit-provider",
        "Every provider-backed resource names the stack's explicit provider (no default provider).",
        explicit_provider,
        True,
    ),
    Policy(
        "secret-inputs",
        "Passwords, tokens, private keys and auth keys are secret inputs, never plain text.",
        secret_inputs,
        False,
    ),
    Policy(
        "sshd-no-passwords",
        "sshd renders with password authentication and root password login off.",
        sshd_no_passwords,
        True,
    ),
    Policy(
        "loopback-ports",
        "MongoDB and the service ports are published on loopback only.",
        loopback_ports,
        False,
    ),
    Policy(
        "release-images-pinned",
        "Every image a release runs is pinned to a digest (planned at preview), never a tag alone.",
        release_images_pinned,
        True,
    ),
    Policy("prod-backups", "Prod guests have vzdump and MongoDB backups.", prod_backups, False),
    Policy("funnel-prod-only", "Tailscale funnel only on prod.", funnel_prod_only, True),
)


def violations(
    resources: Sequence[Resource],
    policies: Sequence[Policy] = POLICIES,
    secrets_visible: bool = True,
) -> list[Violation]:
    found: list[Violation] = []
    for policy in policies:
        if policy.check is secret_inputs:
            findings = secret_inputs(resources, secrets_visible)
        else:
            findings = policy.check(resources)
        found.extend(Violation(policy.name, r.urn, message) for r, message in findings)
    return found
