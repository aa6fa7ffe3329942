"""Just enough of MongoDB's query language: filters, sort, projection, aggregation (no updates:
neither the program nor its tests update documents).

Filters: equality on (dotted) fields, ``$eq $ne $gt $gte $lt $lte $in $nin $exists``,
``$and $or $nor``. Aggregation: the
stages ``$match $sort $skip $limit $project $count $group`` (``_id`` a constant or ``"$field"``,
accumulator ``$sum``), which covers pymongo's ``count_documents``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from bson import ObjectId
from bson.binary import Binary
from bson.int64 import Int64

Doc = dict[str, Any]
MISSING = object()


class QueryError(Exception):
    """A query/update/pipeline the stand-in does not understand (code 2, BadValue)."""

    def __init__(self, message: str, code: int = 2, code_name: str = "BadValue") -> None:
        super().__init__(message)
        self.code = code
        self.code_name = code_name


def _type_rank(value: Any) -> int:
    """BSON comparison order of types (enough of it)."""
    if value is None or value is MISSING:
        return 1
    if isinstance(value, bool):
        return 8
    if isinstance(value, int | float | Int64):
        return 2
    if isinstance(value, str):
        return 3
    if isinstance(value, dict):
        return 4
    if isinstance(value, list):
        return 5
    if isinstance(value, bytes | Binary):
        return 6
    if isinstance(value, ObjectId):
        return 7
    if isinstance(value, datetime.datetime):
        return 9
    return 10


def sort_key(value: Any) -> tuple[int, Any]:
    """A total order close to MongoDB's for values of mixed types."""
    rank = _type_rank(value)
    if rank == 1:
        return (rank, 0)
    if rank in (4, 5, 10):
        return (rank, repr(value))
    return (rank, value)


def values_equal(a: Any, b: Any) -> bool:
    """BSON equality: booleans never equal numbers; a missing field equals null."""
    if a is MISSING:
        a = None
    if _type_rank(a) != _type_rank(b):
        return False
    return bool(a == b)


def get_path(doc: Any, path: str) -> Any:
    """Value at a dotted path, or ``MISSING``."""
    node = doc
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part, MISSING)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
        if node is MISSING:
            return MISSING
    return node


def _candidates(value: Any) -> list[Any]:
    # An array field matches if the array itself or any element matches.
    return [value, *value] if isinstance(value, list) else [value]


def _compare(value: Any, op: str, arg: Any) -> bool:
    for candidate in _candidates(value):
        if candidate is MISSING or _type_rank(candidate) != _type_rank(arg):
            continue
        try:
            if (
                (op == "$gt" and candidate > arg)
                or (op == "$gte" and candidate >= arg)
                or (op == "$lt" and candidate < arg)
                or (op == "$lte" and candidate <= arg)
            ):
                return True
        except TypeError:
            continue
    return False


def _eq(value: Any, arg: Any) -> bool:
    return any(values_equal(c, arg) for c in _candidates(value))


def _is_operator_doc(cond: Any) -> bool:
    return isinstance(cond, dict) and bool(cond) and all(k.startswith("$") for k in cond)


def _match_condition(value: Any, cond: Any) -> bool:
    if not _is_operator_doc(cond):
        return _eq(value, cond)
    for op, arg in cond.items():
        if op == "$eq":
            ok = _eq(value, arg)
        elif op == "$ne":
            ok = not _eq(value, arg)
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            ok = _compare(value, op, arg)
        elif op in ("$in", "$nin"):
            if not isinstance(arg, list):
                raise QueryError(f"{op} needs an array")
            found = any(_eq(value, a) for a in arg)
            ok = found if op == "$in" else not found
        elif op == "$exists":
            ok = (value is not MISSING) == bool(arg)
        else:
            raise QueryError(f"unknown operator: {op} (not supported by the stand-in)")
        if not ok:
            return False
    return True


def matches(doc: Doc, filt: Doc | None) -> bool:
    """Whether ``doc`` matches the filter ``filt``."""
    for key, cond in (filt or {}).items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(cond, list) or not cond:
                raise QueryError(f"{key} must be a nonempty array")
            results = (matches(doc, sub) for sub in cond)
            ok = all(results) if key == "$and" else any(results)
            if (key == "$nor") == ok:
                return False
        elif key.startswith("$"):
            raise QueryError(f"unknown top level operator: {key}")
        elif not _match_condition(get_path(doc, key), cond):
            return False
    return True


def sort_docs(docs: list[Doc], spec: Doc | None) -> list[Doc]:
    """Sort by a ``{field: 1|-1, ...}`` spec (stable, last key first)."""
    out = list(docs)
    for field, direction in reversed(list((spec or {}).items())):

        def key(doc: Doc, path: str = field) -> tuple[int, Any]:
            return sort_key(get_path(doc, path))

        out.sort(key=key, reverse=direction == -1)
    return out


def project(doc: Doc, spec: Doc | None) -> Doc:
    """Apply a top-level inclusion or exclusion projection."""
    if not spec:
        return doc
    include_id = bool(spec.get("_id", 1))
    fields = {k: v for k, v in spec.items() if k != "_id"}
    if fields and all(bool(v) for v in fields.values()):
        out = {"_id": doc["_id"]} if include_id and "_id" in doc else {}
        for key in fields:
            value = get_path(doc, key)
            if value is not MISSING and "." not in key:
                out[key] = value
        return out
    out = {k: v for k, v in doc.items() if k not in fields}
    if not include_id:
        out.pop("_id", None)
    return out


def _group(docs: Iterable[Doc], spec: Doc) -> list[Doc]:
    if "_id" not in spec:
        raise QueryError("a group specification must include an _id")
    key_expr = spec["_id"]
    groups: dict[Any, Doc] = {}
    order: list[Any] = []
    for doc in docs:
        if isinstance(key_expr, str) and key_expr.startswith("$"):
            key = get_path(doc, key_expr[1:])
            key = None if key is MISSING else key
        else:
            key = key_expr
        marker = repr(sort_key(key))
        if marker not in groups:
            groups[marker] = {"_id": key}
            order.append(marker)
        out = groups[marker]
        for name, acc in spec.items():
            if name == "_id":
                continue
            if not (isinstance(acc, dict) and list(acc) == ["$sum"]):
                raise QueryError(f"$group accumulator {acc} is not supported by the stand-in")
            arg = acc["$sum"]
            if isinstance(arg, str) and arg.startswith("$"):
                value = get_path(doc, arg[1:])
                arg = value if _type_rank(value) == 2 else 0
            out[name] = out.get(name, 0) + arg
    return [groups[m] for m in order]


def aggregate(docs: list[Doc], pipeline: list[Doc]) -> list[Doc]:
    """Run a (minimal) aggregation pipeline over ``docs``."""
    out = list(docs)
    for stage in pipeline:
        if not isinstance(stage, dict) or len(stage) != 1:
            raise QueryError("a pipeline stage specification must contain exactly one field")
        name, arg = next(iter(stage.items()))
        if name == "$match":
            out = [d for d in out if matches(d, arg)]
        elif name == "$sort":
            out = sort_docs(out, arg)
        elif name == "$skip":
            out = out[int(arg) :]
        elif name == "$limit":
            out = out[: int(arg)]
        elif name == "$project":
            out = [project(d, arg) for d in out]
        elif name == "$count":
            out = [{arg: len(out)}] if out else []
        elif name == "$group":
            out = _group(out, arg)
        else:
            raise QueryError(
                f"Unrecognized pipeline stage name: '{name}' (not supported by the stand-in)",
                40324,
                "Location40324",
            )
    return out
