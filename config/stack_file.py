"""A stack file (`Pulumi.<stack>.yaml`, with the project's defaults from `Pulumi.yaml`) read
the way the Pulumi CLI passes it to the program, with no Pulumi: for the operator CLI and for
synth. Secrets are never needed: each is replaced by a syntactically valid placeholder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from config.errors import PROJECT
from config.secrets import SECRET_KEYS
from errors import SmokerError

REPO = Path(__file__).resolve().parent.parent


class StackFileError(SmokerError):
    """The stack file cannot be read."""


# RFC 8032's first Ed25519 test key, as PKCS#8 PEM: public, so it signs nothing a device trusts
PLACEHOLDER_SIGNING_KEY = (
    "-----BEGIN " + "PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
    "-----END PRIVATE KEY-----\n"
)


def placeholder_secret(key: str) -> str:
    """A syntactically valid stand-in for a secret, so validation passes without real secrets."""
    if key == "deviceReleaseSigningKey":
        return PLACEHOLDER_SIGNING_KEY
    if key.endswith("SshPrivateKey"):
        begin, end = "-----BEGIN OPENSSH " + "PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----"
        return f"{begin}\nsynth-placeholder-{key}\n{end}\n"
    if key == "proxmoxApiToken":
        return "synth@pve!placeholder=00000000-0000-0000-0000-000000000000"
    if key == "githubRunnerToken":
        return "synth_placeholder_githubRunnerToken"
    if key.endswith("Url"):
        return "https://synth-placeholder.invalid/hook"
    if key == "resticRepository":
        return "sftp:restic@synth-placeholder.invalid:/srv/restic/placeholder"
    if key == "resticSshKnownHosts":
        return "synth-placeholder.invalid ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlaceholder"
    return f"synth-placeholder-{key}"


def _config_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _read(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise StackFileError(
            f"cannot read {path}: {exc.strerror or exc}; pass the directory that holds the "
            "stack files (--stack-dir) or a stack that exists (--stack)"
        ) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise StackFileError(f"{path} is not valid YAML{line}: {exc}".replace("\n", " ")) from None


def stack_file_config(stack: str, root: Path = REPO) -> tuple[dict[str, str], set[str]]:
    """The stack file's config as the Pulumi CLI would pass it, secrets replaced by placeholders."""
    project = _read(root / "Pulumi.yaml")
    values: dict[str, str] = {}
    for key, spec in (project.get("config") or {}).items():
        if isinstance(spec, dict) and "value" in spec:
            values[key] = _config_value(spec["value"])
    stack_file = root / f"Pulumi.{stack}.yaml"
    data = _read(stack_file)
    secret_keys: set[str] = set()
    for key, value in (data.get("config") or {}).items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            secret_keys.add(key)
            values[key] = placeholder_secret(key.split(":", 1)[-1])
        else:
            values[key] = _config_value(value)
    # Without secrets of its own, the stack still synthesizes: fill in the ones it would need.
    for spec in SECRET_KEYS:
        full = f"{PROJECT}:{spec.key}"
        if full not in values and spec.key != "proxmoxApiToken":
            values[full] = placeholder_secret(spec.key)
            secret_keys.add(full)
    return values, secret_keys
