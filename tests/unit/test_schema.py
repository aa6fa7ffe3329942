"""The stack files' JSON Schema and the configuration reference are current and fit the files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from config.schema import SCHEMA_ID, stack_file_schema
from tools.schema import REPO, generated


@pytest.mark.parametrize("name", sorted(generated()))
def test_the_checked_in_file_is_what_the_models_generate(name: str) -> None:
    path = REPO / name
    assert path.is_file() and path.read_text() == generated()[name], (
        f"{name} is not current: run `make schema`"
    )


@pytest.mark.parametrize("stack", ["host", "dev", "prod"])
def test_stack_files_name_the_schema_on_their_first_line(stack: str) -> None:
    first = (REPO / f"Pulumi.{stack}.yaml").read_text().splitlines()[0]
    assert first == f"# yaml-language-server: $schema={SCHEMA_ID}"


def _check(value: Any, spec: dict[str, Any], defs: dict[str, Any], path: str) -> list[str]:
    """A small JSON Schema check: refs, anyOf, types, enums, ranges, keys (enough for ours)."""
    if "$ref" in spec:
        spec = {**defs[spec["$ref"].rsplit("/", 1)[-1]], **spec}
        spec.pop("$ref")
    if "anyOf" in spec:
        results = [_check(value, option, defs, path) for option in spec["anyOf"]]
        return [] if any(not r for r in results) else min(results, key=len)
    kind = spec.get("type")
    types = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool}
    if kind == "null":
        return [] if value is None else [f"{path}: not null"]
    if kind in types and not isinstance(value, types[kind]):
        return [f"{path}: {value!r} is not {kind}"]
    if "enum" in spec and value not in spec["enum"]:
        return [f"{path}: {value!r} not in {spec['enum']}"]
    if isinstance(value, int) and not spec.get("minimum", value) <= value <= spec.get(
        "maximum", value
    ):
        return [f"{path}: {value} out of range"]
    errors: list[str] = []
    if isinstance(value, dict):
        props = spec.get("properties", {})
        for key in spec.get("required", []):
            if key not in value:
                errors.append(f"{path}.{key}: required")
        for key, item in value.items():
            if key in props:
                errors += _check(item, props[key], defs, f"{path}.{key}")
            elif any(__import__("re").match(p, key) for p in spec.get("patternProperties", {})):
                continue
            elif isinstance(spec.get("additionalProperties"), dict):
                errors += _check(item, spec["additionalProperties"], defs, f"{path}.{key}")
            elif spec.get("additionalProperties") is False:
                errors.append(f"{path}.{key}: not allowed")
    if isinstance(value, list) and isinstance(spec.get("items"), dict):
        for i, item in enumerate(value):
            errors += _check(item, spec["items"], defs, f"{path}[{i}]")
    return errors


def _stack_file(stack: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())
    return data


@pytest.mark.parametrize("stack", ["host", "dev", "prod"])
def test_the_stack_files_fit_the_schema(stack: str) -> None:
    schema = stack_file_schema()
    data = _stack_file(stack)
    data["config"]["smoker-infra:guestSshPrivateKey"] = {"secure": "v1:abc"}
    data["config"]["proxmoxve:someProviderKey"] = "not ours"
    assert _check(data, schema, schema["$defs"], "") == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("smoker-infra:netwrok", {"cidr": "10.20.0.0/24"}),
        ("smoker-infra:proxmoxPassword", "plain text"),
        ("smoker-infra:readinessTimeoutSeconds", 5),
    ],
)
def test_the_schema_flags_what_an_editor_should(key: str, value: Any) -> None:
    schema = stack_file_schema()
    data = _stack_file("dev")
    data["config"][key] = value
    assert _check(data, schema, schema["$defs"], "")


def test_the_reference_lists_every_key_of_the_stack_files() -> None:
    reference = (REPO / "docs/configuration.md").read_text()

    def keys(node: Any, prefix: str) -> list[str]:
        if not isinstance(node, dict):
            return [prefix]
        out = [prefix] if prefix else []
        for key, value in node.items():
            name = "<name>" if prefix == "guests" else key
            out += keys(value, f"{prefix}.{name}" if prefix else name)
        return out

    config = _stack_file("dev")["config"]
    for top, value in config.items():
        for key in keys(value, top.removeprefix("smoker-infra:")):
            assert f"`{key}`" in reference, key
    assert Path(REPO / "README.md").read_text().count("docs/configuration.md") >= 1
