"""Pulumi's wire encoding of property values, as the program sends them to the engine."""

from __future__ import annotations

from typing import Any

from tools.synth import Resource

SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


def revealed(value: Any) -> Any:
    """Wire inputs with every secret unwrapped (the connection as a whole is secret)."""
    if isinstance(value, dict):
        if SECRET_SIG in value.values():
            return revealed(value["value"])
        return {key: revealed(v) for key, v in value.items()}
    if isinstance(value, list):
        return [revealed(v) for v in value]
    return value


def connection(r: Resource) -> dict[str, Any]:
    return revealed(r.wire_inputs.get("connection")) or {}
