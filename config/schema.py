"""The stack file's JSON Schema and its configuration reference, both from the models.

`tools/schema.py` writes them to `docs/stack-config.schema.json` and `docs/configuration.md`
(`make schema`); a unit test keeps the checked-in files equal to what this module produces.
"""

from __future__ import annotations

import json
import re
from typing import Any

from config.errors import PROJECT
from config.guests import GUEST_NAME
from config.secrets import SECRET_KEYS
from config.stack import StackFile

SCHEMA_ID = "docs/stack-config.schema.json"


def stack_file_schema() -> dict[str, Any]:
    """JSON Schema of `Pulumi.<stack>.yaml` (the `yaml-language-server` comment points at it)."""
    base = StackFile.model_json_schema(by_alias=True, mode="validation")
    defs = base.pop("$defs", {})
    properties: dict[str, Any] = {}
    for key, spec in base["properties"].items():
        spec.pop("title", None)
        properties[f"{PROJECT}:{key}"] = spec
    properties[f"{PROJECT}:guests"]["propertyNames"] = {"pattern": f"^{GUEST_NAME}$"}
    for secret in SECRET_KEYS:
        properties[f"{PROJECT}:{secret.key}"] = {
            "description": f"secret: {secret.what}; set it with `{secret.example}`",
            "type": "object",
            "properties": {"secure": {"type": "string"}},
            "required": ["secure"],
            "additionalProperties": False,
        }
    for spec in defs.values():
        spec.pop("title", None)
        for prop in spec.get("properties", {}).values():
            prop.pop("title", None)
    config = {
        "description": base["description"],
        "type": "object",
        "properties": properties,
        "required": [f"{PROJECT}:{key}" for key in base.get("required", [])],
        # other namespaces (e.g. proxmoxve:) belong to providers
        "patternProperties": {f"^(?!{re.escape(PROJECT)}:)[A-Za-z0-9_.-]+:": {}},
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"Pulumi.<stack>.yaml of {PROJECT}",
        "type": "object",
        "properties": {
            "config": config,
            "secretsprovider": {"type": "string"},
            "encryptedkey": {"type": "string"},
            "encryptionsalt": {"type": "string"},
        },
        "additionalProperties": False,
        "$defs": defs,
    }


def schema_text() -> str:
    return json.dumps(stack_file_schema(), indent=2, sort_keys=True) + "\n"


# ---------------------------------------------------------------------------------------------
# The reference


def _resolve(spec: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = spec.get("$ref")
    if ref:
        merged = {**defs[ref.rsplit("/", 1)[-1]], **{k: v for k, v in spec.items() if k != "$ref"}}
        return merged
    return spec


def _unwrap(spec: dict[str, Any], defs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the non-null alternative, whether null is allowed)."""
    options = spec.get("anyOf")
    if not options:
        return _resolve(spec, defs), False
    rest = [o for o in options if o.get("type") != "null"]
    inner = _resolve(rest[0], defs) if len(rest) == 1 else spec
    outer = {k: v for k, v in spec.items() if k != "anyOf"}
    return {**inner, **outer}, len(rest) < len(options)


def _type(spec: dict[str, Any]) -> str:
    if "enum" in spec:
        return "one of " + ", ".join(f"`{v}`" for v in spec["enum"])
    kind = spec.get("type", "object" if "properties" in spec else "any")
    if kind == "array":
        items = spec.get("items", {})
        inner = items.get("type", "object") if isinstance(items, dict) else "value"
        return f"list of {items.get('format', inner)}" if isinstance(items, dict) else "list"
    if "format" in spec:
        return f"{kind} ({spec['format']})"
    return str(kind)


def _range(spec: dict[str, Any]) -> str:
    parts = []
    if "minimum" in spec or "maximum" in spec:
        parts.append(f"{spec.get('minimum', '')}..{spec.get('maximum', '')}")
    if "pattern" in spec:
        parts.append(f"`{spec['pattern']}`")
    if "minItems" in spec:
        parts.append(f"at least {spec['minItems']}")
    return "; ".join(parts)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|")


def _rows(
    key: str, spec: dict[str, Any], defs: dict[str, Any], required: bool, out: list[str]
) -> None:
    spec, nullable = _unwrap(spec, defs)
    choices = [o for o in spec.get("anyOf", []) if o.get("type") != "null"]
    if len(choices) > 1:  # e.g. a guest: a Proxmox guest or an existing machine, by `kind`
        for choice in choices:
            inner = _resolve(choice, defs)
            kinds = inner.get("properties", {}).get("kind", {}).get("enum")
            if kinds:
                what = inner.get("description", "")
                inner = {**inner, "description": f"kind {' or '.join(kinds)}: {what}"}
            _rows(key, inner, defs, required, out)
        return
    default = spec.get("default")
    if required:
        need = "required"
    elif default is None or default == "":
        need = "optional" if default is None else "derived (see description)"
    else:
        need = f"`{_cell(default)}`"
    example = spec.get("examples", [None])[0]
    out.append(
        f"| `{key}` | {_type(spec)} | {need} | {_cell(_range(spec))} | "
        f"{'`' + _cell(example) + '`' if example is not None else ''} | "
        f"{_cell(spec.get('description', ''))} |"
    )
    props = spec.get("properties")
    if props:
        for name, sub in props.items():
            _rows(f"{key}.{name}", sub, defs, name in spec.get("required", []), out)
    extra = spec.get("additionalProperties")
    if isinstance(extra, dict):
        _rows(f"{key}.<name>", extra, defs, False, out)
    items = spec.get("items")
    if isinstance(items, dict) and (items.get("$ref") or items.get("properties")):
        _rows(f"{key}[]", items, defs, False, out)
    del nullable


def reference_markdown() -> str:
    """docs/configuration.md: every key of a stack file, from the models."""
    schema = stack_file_schema()
    defs = schema["$defs"]
    config = schema["properties"]["config"]
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from the config/ models by `make schema`; do not edit by hand. -->",
        "",
        f"Every key of `Pulumi.<stack>.yaml`, under `config:` and the `{PROJECT}:` namespace. "
        "Editors that read the `yaml-language-server` comment on the first line of a stack file "
        f"complete and check keys from `{SCHEMA_ID}`. The program checks everything again, "
        "reporting every problem at once with its key, its value (never a secret's) and a fix.",
        "",
        "## Settings",
        "",
        "| key | type | default | range | example | description |",
        "|---|---|---|---|---|---|",
    ]
    rows: list[str] = []
    for key, spec in config["properties"].items():
        if spec.get("properties", {}).get("secure"):
            continue
        _rows(key.removeprefix(f"{PROJECT}:"), spec, defs, key in config["required"], rows)
    lines += rows
    lines += [
        "",
        "## Secrets",
        "",
        "Set each with `pulumi config set --secret --stack <stack> <key>`; never in the stack file "
        "as plain text. Which ones a stack needs depends on its guests (the program names any "
        "that is missing, with the exact command).",
        "",
        "| key | what | set with |",
        "|---|---|---|",
    ]
    lines += [
        f"| `{s.key}` | {_cell(s.what)} | `{_cell(s.command('<stack>'))}` |" for s in SECRET_KEYS
    ]
    return "\n".join(lines) + "\n"
