"""Write (or check) the stack files' JSON Schema and the configuration reference.

`python -m tools.schema` writes docs/stack-config.schema.json and docs/configuration.md from the
config models; `--check` exits 1 naming every file that is not current.
"""

from __future__ import annotations

import sys
from pathlib import Path

from config.schema import SCHEMA_ID, reference_markdown, schema_text

REPO = Path(__file__).resolve().parent.parent
REFERENCE = "docs/configuration.md"


def generated() -> dict[str, str]:
    return {SCHEMA_ID: schema_text(), REFERENCE: reference_markdown()}


def main(argv: list[str]) -> int:
    stale = []
    for name, text in generated().items():
        path = REPO / name
        if path.is_file() and path.read_text() == text:
            continue
        if "--check" in argv:
            stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {name}")
    for name in stale:
        print(f"{name} is not current: run `make schema`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
