"""Pulumi's wire encoding of property values, as the program sends them to the engine: the SDK's
own signatures (`pulumi.runtime.rpc`) and the one reader of wire-encoded values the tests share."""

from __future__ import annotations

from typing import Any

from pulumi.runtime import rpc

from tools.synth import Resource

SIG = rpc._special_sig_key
SECRET_SIG = rpc._special_secret_sig
RESOURCE_SIG = rpc._special_resource_sig
OUTPUT_SIG = rpc._special_output_value_sig
UNKNOWN = rpc.UNKNOWN


def plain(value: Any) -> Any:
    """Wire value -> plain value: secrets unwrapped, resource references as their URN, output
    values as their value (unknown if they have none), unknowns kept as the UNKNOWN sentinel."""
    if isinstance(value, dict):
        sig = value.get(SIG)
        if sig == SECRET_SIG:
            return plain(value.get("value"))
        if sig == RESOURCE_SIG:
            return value.get("id") or value.get("urn")
        if sig == OUTPUT_SIG:
            return plain(value["value"]) if "value" in value else UNKNOWN
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def connection(r: Resource) -> dict[str, Any]:
    """A command's SSH connection as registered (the whole connection is a secret)."""
    return plain(r.wire_inputs.get("connection")) or {}
