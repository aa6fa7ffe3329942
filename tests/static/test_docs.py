"""The documentation stays whole: every relative link in README.md and docs/*.md reaches an
existing file (and heading, when it names one), and nothing in the repository cites a document
that is not in it."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Spelled in pieces so that this file does not match itself.
OUTSIDE = ("../" + "shared", "REFERENCE" + ".md", "DESIGN" + ".md")
CHECKED_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".sh"}
SKIPPED_DIRS = {".git", "venv", ".venv", "build", "node_modules", "__pycache__"}

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`+[^`\n]*`+")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The text without code blocks and code spans (links there are not links)."""
    return _FENCE.sub("", text)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, and -N
    for a repeated heading."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for title in _HEADING.findall(_prose(path.read_text(encoding="utf-8"))):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link: its text
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(path: Path) -> list[str]:
    prose = _CODE.sub("", _prose(path.read_text(encoding="utf-8")))
    return _LINK.findall(prose)


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{target}: no file {dest.relative_to(ROOT)}")
        elif ROOT not in dest.parents and dest != ROOT:
            problems.append(f"{target}: outside the repository")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            problems.append(f"{target}: no heading #{fragment} in {dest.relative_to(ROOT)}")
    return problems


def repository_files() -> list[Path]:
    files = []
    for path in sorted(ROOT.rglob("*")):
        parts = path.relative_to(ROOT).parts
        if any(part in SKIPPED_DIRS or part.startswith(".pytest") for part in parts[:-1]):
            continue
        if path.is_file() and (path.suffix in CHECKED_SUFFIXES or path.name == "Makefile"):
            files.append(path)
    return files


def test_the_docs_exist() -> None:
    names = {p.name for p in DOCS}
    assert {"README.md", "operations.md", "safe-deploy.md", "values.md"} <= names


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_anchor_rules() -> None:
    """The slug rule agrees with GitHub on the headings these docs use."""
    sample = ROOT / "docs" / "operations.md"
    assert "when-the-connection-drops-mid-deploy" in anchors(sample)
    assert "state-backend-and-secrets-provider" in anchors(sample)


@pytest.mark.parametrize("path", repository_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_citation_of_a_document_outside_the_repository(path: Path) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    cited = [
        f"line {n}: {line.strip()}"
        for n, line in enumerate(text.splitlines(), 1)
        if any(name in line for name in OUTSIDE)
    ]
    assert cited == [], "state the facts in docs/ instead of citing: " + "; ".join(cited)
