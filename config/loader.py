"""`parse_config`: the raw `smoker-infra:<key> -> text` map Pulumi gives a program, plus the
set of secret keys, to a `StackConfig`, or one `ConfigError` naming every problem."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from typing import Annotated, Any, cast

from pydantic import BaseModel, TypeAdapter, ValidationError

from config.errors import (
    HIDDEN,
    PROJECT,
    REQUIRED,
    ConfigError,
    Problem,
    problem,
    problems_from,
    suggest,
)
from config.fields import STACK_FILE
from config.guests import (
    GUEST_NAME,
    PROXMOX_ONLY,
    Guest,
    GuestSpec,
    HostSpec,
    check_unique,
    is_device,
    refused_on_host,
)
from config.proxmox import HostShared, HostStackRef, NetworkSettings, ProxmoxSettings
from config.secrets import (
    SECRET_BY_NAME,
    Secrets,
    attribute,
    check_offsite,
    check_proxmox_auth,
    check_required,
    looks_secret,
    read_secrets,
    required_secrets,
)
from config.stack import (
    APP_ENVIRONMENTS,
    ENVIRONMENTS,
    Environment,
    HostStackConfig,
    StackConfig,
    StackFile,
)
from config.tailscale import TailnetSettings

SECTIONS = {(f.alias or name): name for name, f in StackFile.model_fields.items()}


@cache
def _adapter(alias: str) -> TypeAdapter[Any]:
    field = StackFile.model_fields[SECTIONS[alias]]
    annotation: Any = (
        Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    )
    return TypeAdapter(annotation)


def _section_model(alias: str) -> type[BaseModel] | None:
    annotation = StackFile.model_fields[SECTIONS[alias]].annotation
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _decode(value: str) -> Any:
    text = value.strip()
    if text[:1] in ("{", "["):
        return json.loads(text)
    return value


def _namespace_typo(namespace: str) -> bool:
    return namespace != PROJECT and bool(
        difflib.get_close_matches(namespace, [PROJECT], n=1, cutoff=0.75)
    )


def parse_config(
    raw: Mapping[str, str], secret_keys: Iterable[str], stack: str
) -> StackConfig | HostStackConfig:
    """The stack's configuration from `<project>:<key>` -> string values, or a ConfigError."""
    problems: list[Problem] = []
    secret_full = set(secret_keys)
    secret_set = {k.split(":", 1)[1] for k in secret_full if k.startswith(f"{PROJECT}:")}
    data: dict[str, Any] = {}
    for full_key, value in raw.items():
        namespace, _, key = full_key.partition(":")
        if namespace != PROJECT:
            # provider namespaces (e.g. proxmoxve:) are not ours to check; near misses of ours are
            if _namespace_typo(namespace):
                hidden = full_key in secret_full or looks_secret(key)
                problems.append(
                    Problem(
                        full_key,
                        HIDDEN if hidden else json.dumps(str(value)),
                        f"is not in the {PROJECT}: namespace, so the program never reads it",
                        f"did you mean '{PROJECT}:{key}'? rename the key in Pulumi.{stack}.yaml",
                    )
                )
            continue
        try:
            data[key] = value if key in secret_set else _decode(str(value))
        except json.JSONDecodeError as exc:
            problems.append(
                problem(key, value, f"is not valid structured config ({exc.msg})", "fix the YAML")
            )

    secrets, secret_problems = read_secrets(data, secret_set, stack)
    problems += secret_problems
    plain = {k: v for k, v in data.items() if k not in secret_set and not looks_secret(k)}

    environment = _environment(plain.get("environment"), stack, problems)
    context = {STACK_FILE: True, "environment": environment}
    sections: dict[str, Any] = {}
    for alias, name in SECTIONS.items():
        if alias == "guests":
            continue
        field = StackFile.model_fields[name]
        section = plain.get(alias)
        misplaced = _misplaced(alias, section, environment)
        if misplaced:
            problems.append(misplaced)
            continue
        if section is None:
            if field.is_required():
                problems.append(problem(alias, REQUIRED, "is required", f"set the {alias} object"))
                continue
            sections[alias] = field.get_default(call_default_factory=True)
            continue
        try:
            sections[alias] = _adapter(alias).validate_python(section, context=context)
        except ValidationError as exc:
            problems += problems_from(exc, (alias,), _section_model(alias))
    for key in sorted(set(plain) - set(SECTIONS)):
        known = [*SECTIONS, *SECRET_BY_NAME]
        problems.append(problem(key, plain[key], "is not a known setting", suggest(key, known)))

    network: NetworkSettings | None = sections.get("network")
    host_shared: HostShared | None = sections.get("hostShared")
    problems += _missing_for_environment(environment, plain)
    guests = _guests(plain.get("guests"), context, problems)
    for guest in guests:
        raw_guest = plain["guests"][guest.name]
        problems += guest.check(
            f"guests.{guest.name}", raw_guest, environment, network, host_shared
        )
        if environment == "host" and guest.kind != "lxc":
            problems.append(
                problem(
                    f"guests.{guest.name}.kind",
                    guest.kind,
                    "the host stack's guests are CI runner LXCs",
                    "declare device VMs in the dev stack, and set kind: lxc here",
                )
            )
    problems += check_unique(guests)
    if network is not None:
        problems += network.check("network")
    if host_shared is not None:
        problems += host_shared.check("hostShared")
    if "baseline" in sections:
        problems += sections["baseline"].docker.check("baseline.docker", network)
    if "sshAuthorizedKeys" in sections and not sections["sshAuthorizedKeys"]:
        problems.append(
            problem(
                "sshAuthorizedKeys",
                [],
                "needs at least one public key, or nobody can log in to the guests",
                f"add your ssh-ed25519 public key to sshAuthorizedKeys in Pulumi.{stack}.yaml",
            )
        )
    proxmox: ProxmoxSettings | None = sections.get("proxmox")
    keyctl = [
        g.name
        for g in guests
        if isinstance(g, GuestSpec)
        and g.lxc_features
        and (g.lxc_features.keyctl or g.lxc_features.tun)
    ]
    problems += check_proxmox_auth(secrets, keyctl, proxmox.username if proxmox else None, stack)
    host = environment == "host"
    tailnet_settings: TailnetSettings = sections.get("tailscale") or TailnetSettings()
    required = required_secrets(
        host=host,
        tailscale=any(g.tailscale for g in guests),
        cloud=not host and any(g.kind == "lxc" for g in guests),
        mint_tailscale_keys=tailnet_settings.mint_keys,
        device_pulls=not host and any(is_device(g) for g in guests),
    )
    problems += check_required(secrets, required, stack)
    if not host and not any(p.key.startswith("guests") for p in problems):
        # (a cloud guest with a bad setting is not "no cloud guest")
        problems += _check_publisher(guests)
    if sections.get("app") is not None and sections["app"].registry_auth is not None:
        problems += check_required(secrets, ["registryPassword"], stack)
    cloud = not host and any(g.kind == "lxc" for g in guests)
    if cloud and sections.get("app") is not None and sections["app"].backups.offsite.enabled:
        problems += check_offsite(secrets, stack)

    if problems:
        raise ConfigError(stack, problems)
    assert environment in ENVIRONMENTS and proxmox and network
    common: dict[str, Any] = dict(
        stack=stack,
        environment=cast(Environment, environment),
        proxmox=proxmox,
        network=network,
        guests=tuple(guests),
        ssh_authorized_keys=sections["sshAuthorizedKeys"],
        readiness_timeout_seconds=sections["readinessTimeoutSeconds"],
        baseline=sections["baseline"],
        tailnet=tailnet_settings.tailnet or "",
        tailscale=tailnet_settings,
        secrets=Secrets(**{attribute(key): value for key, value in secrets.items()}),
    )
    if host:
        assert host_shared is not None
        return HostStackConfig.model_construct(
            **common, host_shared=host_shared, runner=sections["runner"]
        )
    return StackConfig.model_construct(
        **common, host_stack=sections["hostStack"] or HostStackRef(), app=sections["app"]
    )


# stack-file sections of some stacks only: (stacks that need it, stacks that may have it, fix)
_SECTION_RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "hostShared": (
        ("host",),
        ("host",),
        "the host stack owns the host-wide objects now: remove hostShared from this stack "
        "(moving existing objects: docs/operations.md, 'Migrating to the host stack')",
    ),
    "hostStack": ((), APP_ENVIRONMENTS, "remove it: the host stack reads no other stack"),
    "app": (APP_ENVIRONMENTS, APP_ENVIRONMENTS, "remove it: the host stack runs no services"),
    "runner": (("host",), ("host",), "remove it: the runner is the host stack's guest"),
}


def _misplaced(alias: str, section: Any, environment: str) -> Problem | None:
    rule = _SECTION_RULES.get(alias)
    if rule is None or section is None or environment not in ENVIRONMENTS:
        return None
    _, allowed_in, fix = rule
    if environment in allowed_in:
        return None
    return problem(alias, "{...}", f"is not a setting of the {environment} stack", fix)


def _check_publisher(guests: Sequence[Guest]) -> Iterator[Problem]:
    """A device (kind vm or host) updates by pull: it reads its signed desired release from
    the stack's cloud guest, which publishes it. The stack needs one."""
    if any(g.kind == "lxc" for g in guests):
        return
    for device in (g for g in guests if is_device(g)):
        yield problem(
            f"guests.{device.name}",
            f"kind: {device.kind}",
            "updates by pull from the desired release the stack's cloud guest publishes, "
            "and this stack has no cloud guest",
            "add the stack's cloud guest (kind: lxc), or move the device to the stack that has it",
        )


def _missing_for_environment(environment: str, plain: Mapping[str, Any]) -> Iterator[Problem]:
    for alias, (needed_by, _, _) in _SECTION_RULES.items():
        if environment in needed_by and plain.get(alias) is None:
            yield problem(
                alias,
                REQUIRED,
                f"is required in the {environment} stack",
                f"set the {alias} object",
            )


def _environment(raw: Any, stack: str, problems: list[Problem]) -> str:
    fix = (
        f"pulumi config set --stack {stack} environment {stack if stack in ENVIRONMENTS else 'dev'}"
    )
    if raw is None:
        if stack in ENVIRONMENTS:
            return stack
        problems.append(problem("environment", REQUIRED, "is required", fix + "   (or host, prod)"))
        return ""
    if raw not in ENVIRONMENTS:
        problems.append(problem("environment", raw, "must be 'host', 'dev' or 'prod'", fix))
        return ""
    if stack in ENVIRONMENTS and raw != stack:
        problems.append(
            problem(
                "environment",
                raw,
                f"does not match the stack '{stack}' (a {raw} setting would be applied to {stack})",
                f"set it to {stack}: `pulumi config set --stack {stack} environment {stack}`",
            )
        )
    return str(raw)


def _guests(raw: Any, context: dict[str, Any], problems: list[Problem]) -> list[Guest]:
    if raw is None:
        problems.append(problem("guests", REQUIRED, "is required", "set the guests object"))
        return []
    if not isinstance(raw, dict):
        problems.append(
            problem("guests", raw, "must be an object", "give guests as a YAML mapping")
        )
        return []
    if not raw:
        problems.append(problem("guests", {}, "declares no guest", "declare at least one guest"))
    guests: list[Guest] = []
    for name, body in raw.items():
        if not re.fullmatch(GUEST_NAME, name):
            problems.append(
                problem(
                    f"guests.{name}", name, "is not a valid guest name", "use lower-case [a-z0-9-]"
                )
            )
        if not isinstance(body, dict):
            problems.append(
                problem(
                    f"guests.{name}",
                    body,
                    "must be an object",
                    f"give guests.{name} as a YAML mapping",
                )
            )
            continue
        model: type[GuestSpec | HostSpec] = GuestSpec
        if body.get("kind") == "host":
            # an existing machine: its Proxmox-only keys are refused by name, not as unknown
            model = HostSpec
            problems += refused_on_host(f"guests.{name}", body)
            body = {k: v for k, v in body.items() if k not in PROXMOX_ONLY}
        try:
            guests.append(model.model_validate({**body, "<name>": name}, context=context))
        except ValidationError as exc:
            problems += problems_from(exc, ("guests", name), model)
    return guests
