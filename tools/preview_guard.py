"""Refuse a deploy whose preview would delete or replace a Proxmox guest.

`pulumi preview --json --stack dev | python -m tools.preview_guard` (or give the file as the
argument) exits 0 when no guest would be deleted or replaced, 1 listing every such step, 2 when
the input is not a `pulumi preview --json` document. The document is Pulumi's PreviewDigest:
`{"steps": [{"op", "urn", "oldState", "newState", ...}], "changeSummary": {...}}`.

Only guests are guarded: commands are replaced by design (a changed trigger always replaces a
pulumi-command resource), while losing a guest loses its disks. `discard` steps are refused too:
they drop a guest from the state, after which nothing manages it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

GUARDED_TYPES = frozenset(
    {
        "proxmoxve:index/containerLegacy:ContainerLegacy",
        "proxmoxve:index/vmLegacy:VmLegacy",
    }
)
DESTRUCTIVE_OPS = frozenset(
    {"delete", "replace", "create-replacement", "delete-replaced", "discard", "discard-replaced"}
)


def urn_type(urn: str) -> str:
    """The resource type in `urn:pulumi:<stack>::<project>::<parent$...$type>::<name>`."""
    parts = urn.split("::")
    return parts[2].rsplit("$", 1)[-1] if len(parts) >= 4 else ""


def destructive_steps(digest: Any) -> list[tuple[str, str]]:
    """(op, urn) of every step that would delete or replace a guarded resource."""
    if not isinstance(digest, dict) or not isinstance(digest.get("steps", []), list):
        raise ValueError('expected a "pulumi preview --json" object with a "steps" list')
    found = []
    for step in digest.get("steps", []):
        op, urn = step.get("op", ""), step.get("urn", "")
        if op in DESTRUCTIVE_OPS and urn_type(urn) in GUARDED_TYPES:
            found.append((op, urn))
    return found


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(
            "usage: python -m tools.preview_guard [PREVIEW.json]  (default: stdin)", file=sys.stderr
        )
        return 2
    source = argv[0] if argv else "stdin"
    try:
        text = Path(argv[0]).read_text() if argv else sys.stdin.read()
        found = destructive_steps(json.loads(text))
    except (OSError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        print(
            f"preview_guard: cannot read {source}: {err}; fix: pass the output of "
            "`pulumi preview --json` (and make sure the preview itself succeeded)",
            file=sys.stderr,
        )
        return 2
    if not found:
        print("preview_guard: no guest would be deleted or replaced")
        return 0
    for op, urn in found:
        print(f"preview_guard: refusing: {op} {urn}", file=sys.stderr)
    print(
        f"preview_guard: {len(found)} step(s) would delete or replace a guest; fix: find what "
        "forces it (`pulumi preview --diff`), or do it by hand after a backup, never automatically",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
