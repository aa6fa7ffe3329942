"""What the stack configuration reports: one `Problem` per bad key, all raised together.

A problem names the key (`smoker-infra:<path>`), the value (never a secret's), what is wrong and
the fix. Validators raise `fail(...)`, a pydantic error that carries the fix; `problems_from`
turns a pydantic `ValidationError` into problems.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from errors import SmokerError

PROJECT = "smoker-infra"

# A key whose name looks like one of these must be a Pulumi secret.
SECRET_CLASS = re.compile(
    r"pass(word|phrase)|token|private_?key|auth_?key|api_?key|secret", re.IGNORECASE
)
HIDDEN = "<hidden>"
UNKNOWN = "<unknown>"  # prefix of a stack-file key that is a Python name, not a key


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Missing()


def show(value: Any) -> str:
    """A value as the user wrote it (JSON-quoted), or "(not set)"."""
    if isinstance(value, _Missing):
        return "(not set)"
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, default=str)


@dataclass(frozen=True)
class Problem:
    key: str
    value: str
    what: str
    fix: str

    def __str__(self) -> str:
        # A key in another namespace (a typo of ours) is shown whole.
        key = self.key if ":" in self.key else f"{PROJECT}:{self.key}"
        return f"{key} = {self.value}: {self.what}. Fix: {self.fix}"


def problem(key: str, value: Any, what: str, fix: str) -> Problem:
    return Problem(key, show(value), what, fix)


class ConfigError(SmokerError, ValueError):
    """Every problem with the stack configuration, reported at once."""

    def __init__(self, stack: str, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"stack '{stack}' configuration has {len(problems)} problem(s); "
            f"nothing was changed:\n{lines}"
        )


def fail(what: str, fix: str, *, at: str | None = None, value: Any = REQUIRED) -> Exception:
    """The error a validator raises: `what` is wrong, `fix` says how to put it right.

    `at` names a key below the one being validated (a model-level rule about one of its
    fields); `value` replaces the input shown (e.g. one bad entry of a list).
    """
    ctx: dict[str, Any] = {"what": what, "fix": fix}
    if at is not None:
        ctx["at"] = at
    if not isinstance(value, _Missing):
        ctx["value"] = value
    return PydanticCustomError("smoker", "{what}", ctx)


def key_of(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("["):
            out += part
        else:
            out += f".{part}" if out else str(part)
    return out


def suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean '{close[0]}'?" if close else "remove it"


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that holds the key at `loc` (relative to `model`), if any."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next(
            (f for name, f in current.model_fields.items() if (f.alias or name) == part), None
        )
        if field is None:
            return None
        current = _inner_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    """The model inside `X | None`, `tuple[X, ...]`, `dict[str, X]`, or `annotation` itself."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        inner = _inner_model(arg)
        if inner is not None:
            return inner
    return None


def fields_of(model: type[BaseModel]) -> dict[str, str]:
    """`alias -> fix` for the keys a model accepts (fix from its FIXES, if any)."""
    fixes: dict[str, str] = getattr(model, "FIXES", {})
    return {
        (f.alias or name): fixes.get(f.alias or name, "")
        for name, f in model.model_fields.items()
        if not (f.alias or name).startswith("<")
    }


def problems_from(
    exc: ValidationError, prefix: tuple[str | int, ...], model: type[BaseModel] | None
) -> list[Problem]:
    """One problem per pydantic error, keyed from the stack file's top."""
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        value = ctx.get("value", err.get("input"))
        if err["type"] == "smoker":
            where = loc + tuple(p for p in re.split(r"\.|(?=\[)", str(ctx.get("at", ""))) if p)
            out.append(problem(key_of(prefix + where), value, ctx["what"], ctx["fix"]))
            continue
        loc = tuple(p.removeprefix(UNKNOWN) if isinstance(p, str) else p for p in loc)
        key = key_of(prefix + loc)
        holder = _model_at(model, loc[:-1]) if model is not None else None
        known = fields_of(holder) if holder is not None else {}
        name = str(loc[-1]) if loc else ""
        if err["type"] == "missing":
            out.append(problem(key, REQUIRED, "is required", known.get(name) or f"set {key}"))
        elif err["type"] == "extra_forbidden":
            if SECRET_CLASS.search(name):
                out.append(
                    Problem(
                        key,
                        HIDDEN,
                        "looks like a secret but sits in plain structured config",
                        "remove it; secrets are top-level keys set with "
                        "`pulumi config set --secret`",
                    )
                )
            else:
                out.append(problem(key, value, "is not a known setting", suggest(name, [*known])))
        elif err["type"] in ("model_type", "model_attributes_type", "dict_type"):
            out.append(problem(key, value, "must be an object", f"give {key} as a YAML mapping"))
        else:
            out.append(problem(key, value, err["msg"], f"set {key} to a valid value"))
    return out
