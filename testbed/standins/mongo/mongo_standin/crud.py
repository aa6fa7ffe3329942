"""The stand-in ``mongod``'s CRUD commands (insert/find/getMore/killCursors/delete/aggregate),
the authorization checks every command uses, and the per-connection state they share with
``MongoStandin`` (server.py), which inherits them."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import bson
from bson import ObjectId
from bson.int64 import Int64

from . import query, users
from .scram import ScramConversation
from .storage import Storage, check_collection_name, check_db_name

Doc = dict[str, Any]

DEFAULT_BATCH = 101
#: A reply batch holds at most this many bytes of documents (as MongoDB's cursors do).
BATCH_BYTES = 16 * 1024 * 1024
CURSOR_IDLE_SECONDS = 600


class CommandError(Exception):
    """A command failed; becomes ``{ok: 0, errmsg, code, codeName}``."""

    def __init__(self, message: str, code: int = 2, code_name: str = "BadValue") -> None:
        super().__init__(message)
        self.code = code
        self.code_name = code_name


@dataclass
class Session:
    """Per-connection state: who is authenticated and any SASL conversation in flight."""

    conn_id: int
    client: str = "?"
    user: tuple[str, str] | None = None  # (db, name)
    conversations: dict[int, tuple[str, ScramConversation, bool]] = field(default_factory=dict)
    next_conversation: int = 1


@dataclass
class Cursor:
    id: int
    ns: str
    docs: list[Doc]
    owner: tuple[str, str] | None
    pos: int = 0
    touched: float = field(default_factory=time.monotonic)


def _id_key(value: Any) -> Any:
    """Hashable identity of an ``_id`` value (1 and 1.0 are the same _id, True is not)."""
    rank = query.sort_key(value)[0]
    if isinstance(value, dict | list):
        return (rank, repr(value))
    return (rank, value)


def _capped(docs: list[Doc]) -> list[Doc]:
    """The longest prefix of ``docs`` within MongoDB's 16 MiB batch limit (at least one)."""
    total = 0
    for index, doc in enumerate(docs):
        total += len(bson.encode(doc))
        if total > BATCH_BYTES and index:
            return docs[:index]
    return docs


class CrudCommands:
    """CRUD command handlers and authorization checks; ``MongoStandin`` supplies the state."""

    storage: Storage
    cursors: dict[int, Cursor]
    #: (db, collection) -> (its document list, its length, the _id keys in it): kept by inserts,
    #: rebuilt whenever the list is another one or changed length behind our back.
    _id_index: dict[tuple[str, str], tuple[list[Doc], int, set[Any]]]

    def _ids_of(self, db: str, coll: str, docs: list[Doc]) -> set[Any]:
        cached = self._id_index.get((db, coll))
        if cached is not None and cached[0] is docs and cached[1] == len(docs):
            return cached[2]
        return {_id_key(d["_id"]) for d in docs if "_id" in d}

    def _require(self, session: Session, db: str, action: str, command: str) -> None:
        if not users.any_user_exists(self.storage):
            return  # no user yet: like a server started without --auth
        if action not in users.actions_on(self.storage, session.user, db):
            raise CommandError(
                f"not authorized on {db} to execute command {{ {command}: ... }}",
                13,
                "Unauthorized",
            )

    def _require_ns(self, session: Session, db: str, coll: str, action: str, cmd: str) -> None:
        check_db_name(db)
        check_collection_name(coll)
        if coll == users.USERS_COLL:
            if db != users.USERS_DB:
                raise CommandError(
                    f"stand-in: {db}.{coll} is not supported", 73, "InvalidNamespace"
                )
            if action != "read":
                raise CommandError(
                    "stand-in: admin.system.users changes only through user-management commands",
                    13,
                    "Unauthorized",
                )
            self._require(session, db, "users", cmd)
            return
        self._require(session, db, action, cmd)

    # -- CRUD ------------------------------------------------------------------------------

    def _insert(self, session: Session, db: str, body: Doc) -> Doc:
        coll = body["insert"]
        self._require_ns(session, db, coll, "write", "insert")
        docs = body.get("documents") or []
        ordered = body.get("ordered", True)
        created = not self.storage.has_collection(db, coll)
        target = self.storage.create_collection(db, coll)
        seen = self._ids_of(db, coll, target)
        before = len(target)
        n = 0
        errors: list[Doc] = []
        for index, doc in enumerate(docs):
            if "_id" not in doc:
                doc = {"_id": ObjectId(), **doc}
            key = _id_key(doc["_id"])
            if key in seen:
                errors.append(
                    {
                        "index": index,
                        "code": 11000,
                        "errmsg": f"E11000 duplicate key error collection: {db}.{coll} index: _id_ "
                        f"dup key: {{ _id: {doc['_id']!r} }}",
                        "keyPattern": {"_id": 1},
                        "keyValue": {"_id": doc["_id"]},
                    }
                )
                if ordered:
                    break
                continue
            seen.add(key)
            target.append(doc)
            n += 1
        self._id_index[(db, coll)] = (target, len(target), seen)
        if n:
            self.storage.append(db, coll, target[before:])
        elif created:
            self.storage.flush(db)
        reply: Doc = {"n": n}
        if errors:
            reply["writeErrors"] = errors
        return reply

    def _new_cursor(
        self, session: Session, ns: str, docs: list[Doc], batch: Any, single: bool = False
    ) -> Doc:
        size = DEFAULT_BATCH if batch is None else max(0, int(batch))
        first = _capped(docs[:size])
        rest = docs[len(first) :]
        cursor_id = 0
        if rest and not single:
            self._expire_cursors()
            cursor_id = secrets.randbits(62) + 1
            self.cursors[cursor_id] = Cursor(cursor_id, ns, rest, session.user)
        return {"cursor": {"firstBatch": first, "id": Int64(cursor_id), "ns": ns}}

    def _expire_cursors(self) -> None:
        limit = time.monotonic() - CURSOR_IDLE_SECONDS
        for cid in [c.id for c in self.cursors.values() if c.touched < limit]:
            del self.cursors[cid]

    def _find(self, session: Session, db: str, body: Doc) -> Doc:
        coll = body["find"]
        self._require_ns(session, db, coll, "read", "find")
        docs = [d for d in self.storage.docs(db, coll) if query.matches(d, body.get("filter"))]
        docs = query.sort_docs(docs, body.get("sort"))
        skip = int(body.get("skip") or 0)
        limit = int(body.get("limit") or 0)
        docs = docs[skip:]
        if limit:
            docs = docs[: abs(limit)]
        docs = [query.project(d, body.get("projection")) for d in docs]
        single = bool(body.get("singleBatch")) or limit < 0
        return self._new_cursor(session, f"{db}.{coll}", docs, body.get("batchSize"), single)

    def _get_more(self, session: Session, db: str, body: Doc) -> Doc:
        cursor_id = int(body["getMore"])
        cursor = self.cursors.get(cursor_id)
        ns = f"{db}.{body.get('collection')}"
        if cursor is None:
            raise CommandError(f"cursor id {cursor_id} not found", 43, "CursorNotFound")
        if cursor.ns != ns:
            raise CommandError(
                f"Requested getMore on namespace '{ns}', but cursor belongs to "
                f"a different namespace {cursor.ns}",
                13,
                "Unauthorized",
            )
        if users.any_user_exists(self.storage) and cursor.owner != session.user:
            raise CommandError(
                f"cursor id {cursor_id} was not created by the authenticated user",
                13,
                "Unauthorized",
            )
        size = int(body.get("batchSize") or 0) or len(cursor.docs)
        batch = _capped(cursor.docs[cursor.pos : cursor.pos + size])
        cursor.pos += len(batch)
        cursor.touched = time.monotonic()
        next_id = cursor_id
        if cursor.pos >= len(cursor.docs):
            del self.cursors[cursor_id]
            next_id = 0
        return {"cursor": {"nextBatch": batch, "id": Int64(next_id), "ns": ns}}

    def _kill_cursors(self, session: Session, db: str, body: Doc) -> Doc:
        killed, not_found = [], []
        for cid in body.get("cursors", []):
            if self.cursors.pop(int(cid), None) is not None:
                killed.append(cid)
            else:
                not_found.append(cid)
        return {
            "cursorsKilled": killed,
            "cursorsNotFound": not_found,
            "cursorsAlive": [],
            "cursorsUnknown": [],
        }

    def _count(self, session: Session, db: str, body: Doc) -> Doc:
        coll = body["count"]
        self._require_ns(session, db, coll, "read", "count")
        docs = self.storage.docs(db, coll)
        n = (
            sum(1 for d in docs if query.matches(d, body.get("query")))
            if body.get("query")
            else len(docs)
        )
        n = max(0, n - int(body.get("skip") or 0))
        limit = abs(int(body.get("limit") or 0))
        return {"n": min(n, limit) if limit else n}

    def _delete(self, session: Session, db: str, body: Doc) -> Doc:
        coll = body["delete"]
        self._require_ns(session, db, coll, "write", "delete")
        docs = self.storage.docs(db, coll)
        n = 0
        for spec in body.get("deletes") or []:
            hits = [d for d in docs if query.matches(d, spec.get("q"))]
            if spec.get("limit") == 1:
                hits = hits[:1]
            if hits:
                gone = {id(d) for d in hits}
                docs[:] = [d for d in docs if id(d) not in gone]
            n += len(hits)
        if n:
            self._id_index.pop((db, coll), None)
            self.storage.flush(db)
        return {"n": n}

    def _aggregate(self, session: Session, db: str, body: Doc) -> Doc:
        coll = body["aggregate"]
        if not isinstance(coll, str):
            raise CommandError("stand-in: database-level aggregate is not supported")
        self._require_ns(session, db, coll, "read", "aggregate")
        if "cursor" not in body and not body.get("explain"):
            raise CommandError("The 'cursor' option is required", 9, "FailedToParse")
        pipeline = body.get("pipeline") or []
        if any(isinstance(s, dict) and ("$out" in s or "$merge" in s) for s in pipeline):
            raise CommandError("stand-in: $out/$merge are not supported")
        docs = query.aggregate(list(self.storage.docs(db, coll)), pipeline)
        batch = (body.get("cursor") or {}).get("batchSize")
        return self._new_cursor(session, f"{db}.{coll}", docs, batch)
