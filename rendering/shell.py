"""Long shell programs as verbatim `.sh` files, with their values set by a prologue from Python.

A program that is more than a few lines lives in a `.sh` file next to its renderer, exactly as it
runs on the guest (so shellcheck, an editor and a reader see the real thing); the renderer only
puts a prologue of quoted variable assignments in front of it. The programs read their values
from UPPER_CASE variables, which shellcheck takes for the environment: the files check clean on
their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
ShellValue = str | int | Mapping[str, str | int]


def program(name: str) -> str:
    """The verbatim text of `rendering/<name>`."""
    return (HERE / name).read_text()


def quoted(value: str | int) -> str:
    """A number as it is; a string always in single quotes (`admin` is also a command name)."""
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "'\"'\"'") + "'"


def assignment(name: str, value: ShellValue) -> str:
    """`NAME=value`, quoted for the shell; a mapping becomes a bash associative array."""
    if isinstance(value, Mapping):
        items = " ".join(f"[{key}]={quoted(v)}" for key, v in value.items())
        return f"declare -A {name}=({items})"
    return f"{name}={quoted(value)}"


def with_prologue(name: str, header: str, values: Mapping[str, ShellValue]) -> str:
    """`rendering/<name>` with `header` comment lines and the assignments after its shebang
    (or, for a file without one, before its first line)."""
    text = program(name)
    shebang, rest = text.split("\n", 1) if text.startswith("#!") else ("", text)
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += [assignment(key, value) for key, value in values.items()]
    return (shebang + "\n" if shebang else "") + "\n".join(lines) + "\n" + rest
