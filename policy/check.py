"""Run every policy over synthesized stacks, where secret inputs are visible as markers.

`python -m policy.check dev prod` exits 1 listing each violation (policy, resource, fix), 0 when
both stacks pass. CI runs it next to the preview, because inside `pulumi preview` the pack cannot
tell a secret input from a plain one (see policy/smoker_policies.py).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from policy.model import Resource, Violation
from policy.smoker_policies import violations
from tools import synth


def from_synth(resources: Sequence[synth.Resource]) -> list[Resource]:
    """tools.synth resources as policy resources (secrets already replaced by the marker)."""
    return [Resource(r.type, r.name, r.urn, r.inputs, r.protect, r.provider) for r in resources]


def check_stack(stack: str) -> list[Violation]:
    return violations(from_synth(synth.synthesize(stack).resources))


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m policy.check STACK...", file=sys.stderr)
        return 2
    failed = False
    for stack in argv:
        found = check_stack(stack)
        for v in found:
            print(f"{stack}: [{v.policy}] {v.message}\n    {v.urn}")
        print(f"{stack}: {len(found)} policy violation(s)")
        failed = failed or bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
