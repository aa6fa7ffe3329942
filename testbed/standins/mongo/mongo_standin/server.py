"""The stand-in ``mongod``: an asyncio TCP server and the commands it understands.

Behaviour worth knowing (see also the package docstring):
* presents itself as a standalone MongoDB 7.0 (maxWireVersion 21), without compression,
  without ``topologyVersion`` (so drivers poll ``hello`` instead of streaming it);
* authentication is enforced as soon as ``admin.system.users`` holds any user: every command
  except hello/isMaster/ping/buildInfo/saslStart/saslContinue (and the harmless endSessions)
  then needs an authenticated connection, and each command needs the role-derived action on its
  database (see ``users.py``);
* only the commands the program, the stand-in's own tools and the tests send (pymongo's
  handshake, users, insert/find/getMore/killCursors/delete, aggregate for ``count_documents``,
  listDatabases/listCollections, create/drop/dropDatabase); any other is CommandNotFound;
* errors carry MongoDB's codes (18 AuthenticationFailed, 13 Unauthorized, 11 UserNotFound, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson import ObjectId
from bson.binary import Binary
from bson.int64 import Int64

from . import DEFAULT_PORT, MAX_WIRE_VERSION, VERSION, query, users
from .scram import ScramConversation, ScramError
from .storage import Storage, StorageError, check_collection_name, check_db_name
from .wire import (
    HEADER,
    MAX_BSON_SIZE,
    MAX_MESSAGE_SIZE,
    ProtocolError,
    Request,
    encode_reply,
    parse_message,
)

Doc = dict[str, Any]

#: Commands that never need an authenticated connection.
NO_AUTH_COMMANDS = frozenset(
    {
        "hello",
        "isMaster",
        "ismaster",
        "ping",
        "buildInfo",
        "buildinfo",
        "saslStart",
        "saslContinue",
        "endSessions",
    }
)
DEFAULT_BATCH = 101
CURSOR_IDLE_SECONDS = 600


def log(component: str, msg: str, severity: str = "I", **attr: Any) -> None:
    """One mongod-style structured log line on stdout (never secrets: callers pass none)."""
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    line = {"t": {"$date": now}, "s": severity, "c": component, "msg": msg}
    if attr:
        line["attr"] = attr
    print(json.dumps(line, default=str), flush=True)


class CommandError(Exception):
    """A command failed; becomes ``{ok: 0, errmsg, code, codeName}``."""

    def __init__(self, message: str, code: int = 2, code_name: str = "BadValue") -> None:
        super().__init__(message)
        self.code = code
        self.code_name = code_name


def _auth_failed() -> CommandError:
    return CommandError("Authentication failed.", 18, "AuthenticationFailed")


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


class MongoStandin:
    """Command processing over a Storage; no I/O of its own (the server feeds it requests)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.cursors: dict[int, Cursor] = {}
        self.started = time.monotonic()
        self.connections = 0
        self._handlers: dict[str, Callable[[Session, str, Doc], Doc]] = {
            "hello": self._hello,
            "isMaster": self._hello,
            "ismaster": self._hello,
            "ping": lambda s, db, b: {},
            "buildInfo": self._build_info,
            "buildinfo": self._build_info,
            "endSessions": lambda s, db, b: {},
            "saslStart": self._sasl_start,
            "saslContinue": self._sasl_continue,
            "createUser": self._create_user,
            "updateUser": self._update_user,
            "dropUser": self._drop_user,
            "usersInfo": self._users_info,
            "insert": self._insert,
            "find": self._find,
            "getMore": self._get_more,
            "killCursors": self._kill_cursors,
            "delete": self._delete,
            "aggregate": self._aggregate,
            "listDatabases": self._list_databases,
            "listCollections": self._list_collections,
            "create": self._create,
            "drop": self._drop,
            "dropDatabase": self._drop_database,
        }

    # -- dispatch --------------------------------------------------------------------------

    def handle(self, session: Session, request: Request) -> Doc:
        """Run one command; always returns a reply document."""
        name = request.command
        try:
            handler = self._handlers.get(name)
            if handler is None:
                raise CommandError(f"no such command: '{name}'", 59, "CommandNotFound")
            if (
                name not in NO_AUTH_COMMANDS
                and session.user is None
                and users.any_user_exists(self.storage)
            ):
                raise CommandError(f"Command {name} requires authentication", 13, "Unauthorized")
            reply = handler(session, request.db, request.body)
        except CommandError as exc:
            return {"ok": 0.0, "errmsg": str(exc), "code": exc.code, "codeName": exc.code_name}
        except (query.QueryError, users.UserError, StorageError) as exc:
            return {"ok": 0.0, "errmsg": str(exc), "code": exc.code, "codeName": exc.code_name}
        except (KeyError, TypeError, ValueError) as exc:
            return {
                "ok": 0.0,
                "errmsg": f"stand-in could not process {name}: {exc!r}",
                "code": 2,
                "codeName": "BadValue",
            }
        reply.setdefault("ok", 1.0)
        return reply

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

    # -- handshake and info ----------------------------------------------------------------

    def _hello(self, session: Session, db: str, body: Doc) -> Doc:
        reply: Doc = {
            "isWritablePrimary": True,
            "maxBsonObjectSize": MAX_BSON_SIZE,
            "maxMessageSizeBytes": MAX_MESSAGE_SIZE,
            "maxWriteBatchSize": 100000,
            "localTime": datetime.datetime.now(datetime.UTC),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": session.conn_id,
            "minWireVersion": 0,
            "maxWireVersion": MAX_WIRE_VERSION,
            "readOnly": False,
        }
        # No topologyVersion: drivers then poll hello instead of streaming it (exhaust).
        if "hello" not in body:
            reply = {"ismaster": True, **reply}
            del reply["isWritablePrimary"]
            if body.get("helloOk"):
                reply["helloOk"] = True
        mechs_for = body.get("saslSupportedMechs")
        if isinstance(mechs_for, str) and "." in mechs_for:
            user_db, name = mechs_for.split(".", 1)
            user = users.find_user(self.storage, user_db, name)
            if user is not None:
                reply["saslSupportedMechs"] = sorted(user["credentials"])
        return reply

    def _build_info(self, session: Session, db: str, body: Doc) -> Doc:
        return {
            "version": VERSION,
            "gitVersion": "smoker-infra-standin",
            "versionArray": [*map(int, VERSION.split(".")), 0],
            "bits": 64,
            "debug": False,
            "maxBsonObjectSize": MAX_BSON_SIZE,
            "storageEngines": ["standin-json"],
            "javascriptEngine": "none",
            "modules": [],
            "standin": "smoker-infra test stand-in, NOT MongoDB",
        }

    # -- authentication --------------------------------------------------------------------

    def _sasl_start(self, session: Session, db: str, body: Doc) -> Doc:
        mechanism = body.get("mechanism", "")
        payload = bytes(body.get("payload", b""))

        def lookup(name: str) -> Doc | None:
            user = users.find_user(self.storage, db, name)
            return user["credentials"].get(mechanism) if user else None

        conv = ScramConversation(mechanism, lookup)
        try:
            server_first = conv.start(payload)
        except (ScramError, ValueError, UnicodeDecodeError) as exc:
            self._auth_log(session, db, conv.user, mechanism, f"failed: {exc}")
            raise _auth_failed() from None
        cid = session.next_conversation
        session.next_conversation += 1
        skip_empty = bool((body.get("options") or {}).get("skipEmptyExchange"))
        session.conversations[cid] = (db, conv, skip_empty)
        return {"conversationId": cid, "done": False, "payload": Binary(server_first)}

    def _sasl_continue(self, session: Session, db: str, body: Doc) -> Doc:
        cid = body.get("conversationId")
        entry = session.conversations.get(cid) if isinstance(cid, int) else None
        if not isinstance(cid, int) or entry is None or entry[0] != db:
            raise CommandError("No SASL session state found", 17, "ProtocolError")
        conv_db, conv, skip_empty = entry
        try:
            out = conv.step(bytes(body.get("payload", b"")))
        except (ScramError, ValueError, UnicodeDecodeError) as exc:
            session.conversations.pop(cid, None)
            self._auth_log(session, db, conv.user, conv.mechanism, f"failed: {exc}")
            raise _auth_failed() from None
        done = conv.done or skip_empty
        if done:
            session.conversations.pop(cid, None)
            session.user = (conv_db, conv.user)
            self._auth_log(session, db, conv.user, conv.mechanism, "succeeded")
        return {"conversationId": cid, "done": done, "payload": Binary(out)}

    @staticmethod
    def _auth_log(session: Session, db: str, user: str, mechanism: str, result: str) -> None:
        severity = "I" if result == "succeeded" else "W"
        log(
            "ACCESS",
            f"Authentication {result.split(':')[0]}",
            severity,
            user=user,
            db=db,
            mechanism=mechanism,
            client=session.client,
            result=result,
        )

    # -- user management -------------------------------------------------------------------

    def _create_user(self, session: Session, db: str, body: Doc) -> Doc:
        self._require(session, db, "users", "createUser")
        if "roles" not in body:
            raise CommandError('"createUser" command requires a "roles" array', 2, "BadValue")
        users.create_user(
            self.storage,
            db,
            body["createUser"],
            body.get("pwd"),
            body["roles"],
            body.get("mechanisms"),
            body.get("customData"),
        )
        log("ACCESS", "Created user", user=body["createUser"], db=db)
        return {}

    def _update_user(self, session: Session, db: str, body: Doc) -> Doc:
        self._require(session, db, "users", "updateUser")
        if not any(k in body for k in ("pwd", "roles", "customData")):
            raise CommandError("Must specify at least one field to update in updateUser")
        users.update_user(
            self.storage,
            db,
            body["updateUser"],
            body.get("pwd"),
            body.get("roles"),
            body.get("mechanisms"),
            body.get("customData"),
        )
        changed = [k for k in ("pwd", "roles", "customData") if k in body]
        log("ACCESS", "Updated user", user=body["updateUser"], db=db, changed=changed)
        return {}

    def _drop_user(self, session: Session, db: str, body: Doc) -> Doc:
        self._require(session, db, "users", "dropUser")
        users.drop_user(self.storage, db, body["dropUser"])
        log("ACCESS", "Dropped user", user=body["dropUser"], db=db)
        return {}

    def _users_info(self, session: Session, db: str, body: Doc) -> Doc:
        spec = body["usersInfo"]
        show = bool(body.get("showCredentials"))
        if spec == 1 or (isinstance(spec, dict) and spec.get("forAllDBs")):
            scope = None if spec != 1 else db
            self._require(session, scope or "admin", "users", "usersInfo")
            found = users.users_of(self.storage, scope)
            return {"users": [users.public_view(u, show) for u in found]}
        found = []
        for item in spec if isinstance(spec, list) else [spec]:
            if isinstance(item, str):
                user_db, name = db, item
            elif isinstance(item, dict) and "user" in item:
                user_db, name = str(item.get("db", db)), str(item["user"])
            else:
                raise CommandError(f"invalid usersInfo argument {item!r}")
            if session.user != (user_db, name):  # a user may always view itself
                self._require(session, user_db, "users", "usersInfo")
            user = users.find_user(self.storage, user_db, name)
            if user is not None:
                found.append(user)
        return {"users": [users.public_view(u, show) for u in found]}

    # -- CRUD ------------------------------------------------------------------------------

    def _insert(self, session: Session, db: str, body: Doc) -> Doc:
        coll = body["insert"]
        self._require_ns(session, db, coll, "write", "insert")
        docs = body.get("documents") or []
        ordered = body.get("ordered", True)
        target = self.storage.create_collection(db, coll)
        seen = {_id_key(d["_id"]) for d in target if "_id" in d}
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
        self.storage.flush(db)
        reply: Doc = {"n": n}
        if errors:
            reply["writeErrors"] = errors
        return reply

    def _new_cursor(
        self, session: Session, ns: str, docs: list[Doc], batch: Any, single: bool = False
    ) -> Doc:
        size = DEFAULT_BATCH if batch is None else max(0, int(batch))
        first = docs[:size]
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
        batch = cursor.docs[cursor.pos : cursor.pos + size]
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

    def _delete(self, session: Session, db: str, body: Doc) -> Doc:
        coll = body["delete"]
        self._require_ns(session, db, coll, "write", "delete")
        docs = self.storage.docs(db, coll)
        n = 0
        for spec in body.get("deletes") or []:
            hits = [d for d in docs if query.matches(d, spec.get("q"))]
            if spec.get("limit") == 1:
                hits = hits[:1]
            for doc in hits:
                docs.remove(doc)
            n += len(hits)
        if n:
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

    # -- namespaces ------------------------------------------------------------------------

    def _visible_databases(self, session: Session) -> list[str]:
        names = self.storage.database_names()
        if not users.any_user_exists(self.storage):
            return names
        if "cluster" in users.actions_on(self.storage, session.user, "admin"):
            return names
        return [n for n in names if users.actions_on(self.storage, session.user, n)]

    def _list_databases(self, session: Session, db: str, body: Doc) -> Doc:
        if db != "admin":
            raise CommandError(
                "listDatabases may only be run against the admin database.", 13, "Unauthorized"
            )
        entries: list[Doc] = []
        total = 0
        for name in self._visible_databases(session):
            size = self.storage.size_of(name)
            entry: Doc = {"name": name, "sizeOnDisk": Int64(size), "empty": False}
            if query.matches(entry, body.get("filter")):
                entries.append({"name": name} if body.get("nameOnly") else entry)
                total += size
        reply: Doc = {"databases": entries}
        if not body.get("nameOnly"):
            reply.update(totalSize=Int64(total), totalSizeMb=Int64(total // (1024 * 1024)))
        return reply

    def _list_collections(self, session: Session, db: str, body: Doc) -> Doc:
        check_db_name(db)
        actions = users.actions_on(self.storage, session.user, db)
        if users.any_user_exists(self.storage) and not actions & {"read", "write", "dbAdmin"}:
            raise CommandError(
                f"not authorized on {db} to execute command {{ listCollections: 1 }}",
                13,
                "Unauthorized",
            )
        hide_users = users.any_user_exists(self.storage) and "users" not in actions
        infos = []
        for name in self.storage.collection_names(db):
            if name == users.USERS_COLL and hide_users:
                continue
            info = {
                "name": name,
                "type": "collection",
                "options": {},
                "info": {"readOnly": False},
                "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            }
            if query.matches(info, body.get("filter")):
                infos.append({"name": name, "type": "collection"} if body.get("nameOnly") else info)
        return {"cursor": {"id": Int64(0), "ns": f"{db}.$cmd.listCollections", "firstBatch": infos}}

    def _create(self, session: Session, db: str, body: Doc) -> Doc:
        coll = body["create"]
        self._require_ns(session, db, coll, "write", "create")
        if self.storage.has_collection(db, coll):
            raise CommandError(f"Collection {db}.{coll} already exists.", 48, "NamespaceExists")
        self.storage.create_collection(db, coll)
        self.storage.flush(db)
        return {}

    def _drop(self, session: Session, db: str, body: Doc) -> Doc:
        coll = body["drop"]
        self._require_ns(session, db, coll, "write", "drop")
        self.storage.drop_collection(db, coll)
        for cid in [c.id for c in self.cursors.values() if c.ns == f"{db}.{coll}"]:
            del self.cursors[cid]
        return {"ns": f"{db}.{coll}", "nIndexesWas": 1}

    def _drop_database(self, session: Session, db: str, body: Doc) -> Doc:
        check_db_name(db)
        self._require(session, db, "dbAdmin", "dropDatabase")
        if db == users.USERS_DB:
            self._require(session, db, "users", "dropDatabase")
        self.storage.drop_database(db)
        return {"dropped": db}


# ---------------------------------------------------------------------------------------------
# Network


class StandinServer:
    """The TCP side: one asyncio server feeding a MongoStandin."""

    def __init__(
        self, core: MongoStandin, host: str | list[str] = "127.0.0.1", port: int = DEFAULT_PORT
    ) -> None:
        self.core = core
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None
        self._conn_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind and listen (``port=0`` picks a free port, stored in ``self.port``)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log("NETWORK", "Waiting for connections", port=self.port, host=self.host, ssl="off")

    async def close(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        session = Session(next(self._conn_ids), client)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.core.connections += 1
        try:
            while True:
                header = HEADER.unpack(await reader.readexactly(HEADER.size))
                if not HEADER.size < header[0] <= MAX_MESSAGE_SIZE:
                    raise ProtocolError(f"invalid message length {header[0]}")
                payload = await reader.readexactly(header[0] - HEADER.size)
                request = parse_message(header, payload)
                reply = self.core.handle(session, request)
                if not request.more_to_come:
                    writer.write(encode_reply(request, reply))
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except ProtocolError as exc:
            log(
                "NETWORK",
                "Closing connection on a protocol error",
                "W",
                client=client,
                error=str(exc),
            )
        finally:
            if task is not None:
                self._tasks.discard(task)
            self.core.connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class ServerThread:
    """A stand-in server on a background thread (unit tests): ``with ServerThread() as s:``."""

    def __init__(
        self, dbpath: Path | str | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.storage = Storage(dbpath)
        self.core = MongoStandin(self.storage)
        self.server = StandinServer(self.core, host, port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="mongo-standin", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def uri(self) -> str:
        return f"mongodb://{self.server.host}:{self.server.port}/"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.close())
        self._loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the stand-in server did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def serve(dbpath: Path, host: str | list[str], port: int) -> None:
    """Run until SIGTERM/SIGINT (the container's PID 1 must handle them itself)."""
    storage = Storage(dbpath)
    server = StandinServer(MongoStandin(storage), host, port)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log("CONTROL", "Shutting down (every acknowledged write is already on disk)")
    await server.close()
    log("CONTROL", "Now exiting", exitCode=0)
    sys.stdout.flush()
