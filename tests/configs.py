"""Helpers to build and mutate raw stack config the way the Pulumi CLI hands it to the program."""

from __future__ import annotations

import json
from typing import Any

from config import PROJECT, HostStackConfig, StackConfig, parse_config
from tools.synth import stack_file_config

Raw = tuple[dict[str, str], set[str]]


def stack_raw(stack: str) -> Raw:
    values, secrets = stack_file_config(stack)
    return dict(values), set(secrets)


def set_path(raw: Raw, path: str, value: Any, secret: bool = False) -> Raw:
    """Set `a.b.c` (first segment is the top-level key); value None deletes the entry."""
    values, secrets = dict(raw[0]), set(raw[1])
    top, *rest = path.split(".")
    key = f"{PROJECT}:{top}"
    if not rest:
        if value is None:
            values.pop(key, None)
            secrets.discard(key)
        else:
            values[key] = value if isinstance(value, str) else json.dumps(value)
            (secrets.add if secret else secrets.discard)(key)
        return values, secrets
    data = json.loads(values[key])
    node = data
    for part in rest[:-1]:
        node = node[part]
    if value is None:
        node.pop(rest[-1], None)
    else:
        node[rest[-1]] = value
    values[key] = json.dumps(data)
    return values, secrets


def evolve(model: Any, **changes: Any) -> Any:
    """A copy of a config model with `changes` (field names), not validated again."""
    return model.model_copy(update=changes)


def parse(raw: Raw, stack: str = "dev") -> StackConfig:
    """A dev or prod stack's configuration."""
    cfg = parse_config(raw[0], raw[1], stack)
    assert isinstance(cfg, StackConfig)
    return cfg


def parse_host(raw: Raw) -> HostStackConfig:
    cfg = parse_config(raw[0], raw[1], "host")
    assert isinstance(cfg, HostStackConfig)
    return cfg
