"""The policies as CrossGuard (pulumi_policy) objects, and the pack's data as `Resource`s.

Inside the pack, `props` come from the protobuf Struct the engine sends: every number is a float,
unknown preview values are the SDK's sentinel strings, and secret values arrive decrypted and
unmarked (pulumi/pulumi-policy#241). `from_policy_args` turns that back into the synthesized
shape the checks read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from policy.model import UNKNOWN, Policy, Resource, Violation
from policy.smoker_policies import POLICIES, violations

# The SDK's sentinels for values unknown during preview (pulumi_policy/proxy.py).
_UNKNOWN_SENTINELS = frozenset(
    {
        "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7",
        "3eeb2bf0-c639-47a8-9e75-3b44932eb421",
        "04da6b54-80e4-46f7-96ec-b56ff0331ba9",
        "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2",
        "030794c1-ac77-496b-92df-f27374a8bd58",
        "e48ece36-62e2-4504-bad9-02848725956a",
        "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",
    }
)


def _plain(value: Any) -> Any:
    """Props as the SDK hands them -> the synthesized shape: the SDK's unknown-checking proxies
    unwrapped, an unknown as the `[unknown]` marker, an integral float (every Struct number) as
    an int."""
    if isinstance(value, (Mapping, Sequence)) and not isinstance(value, (str, bytes, list, tuple)):
        # an SDK proxy: read its raw target (reading through the proxy raises on unknowns)
        proxy: Any = value
        with contextlib.suppress(KeyError, TypeError):
            value = proxy["__target"]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str) and value in _UNKNOWN_SENTINELS:
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def from_policy_args(args: Any) -> Resource:
    """A `ResourceValidationArgs` or a stack's `PolicyResource` as a `Resource`."""
    provider = getattr(args, "provider", None)
    return Resource(
        type=args.resource_type,
        name=args.name,
        urn=args.urn,
        props=_plain(args.props),
        protect=bool(getattr(args.opts, "protect", False)),
        provider=getattr(provider, "urn", None),
    )


def _report(found: Iterable[Violation], report_violation: Callable[..., None]) -> None:
    for v in found:
        report_violation(v.message, v.urn)


def crossguard_policies() -> list[Any]:
    """The policies as mandatory pulumi_policy objects (constructing them starts nothing)."""
    from pulumi_policy import (
        EnforcementLevel,
        ResourceValidationPolicy,
        StackValidationPolicy,
    )

    built: list[Any] = []
    for policy in POLICIES:
        if policy.per_resource:

            def validate_resource(args: Any, report: Any, policy: Policy = policy) -> None:
                _report(violations([from_policy_args(args)], [policy]), report)

            built.append(
                ResourceValidationPolicy(
                    name=policy.name,
                    description=policy.description,
                    validate=validate_resource,
                    enforcement_level=EnforcementLevel.MANDATORY,
                )
            )
        else:

            def validate_stack(args: Any, report: Any, policy: Policy = policy) -> None:
                resources = [from_policy_args(r) for r in args.resources]
                _report(violations(resources, [policy], secrets_visible=False), report)

            built.append(
                StackValidationPolicy(
                    name=policy.name,
                    description=policy.description,
                    validate=validate_stack,
                    enforcement_level=EnforcementLevel.MANDATORY,
                )
            )
    return built
