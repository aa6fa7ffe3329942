"""The stand-in ``mongod``: the commands it understands (the TCP side is network.py, the CRUD
commands are crud.py).

Behaviour worth knowing (see also the package docstring):
* presents itself as a standalone MongoDB 7.0 (maxWireVersion 21), without compression,
  without ``topologyVersion`` (so drivers poll ``hello`` instead of streaming it);
* authentication is enforced as soon as ``admin.system.users`` holds any user: every command
  except hello/isMaster/ping/buildInfo/saslStart/saslContinue (and the harmless endSessions)
  then needs an authenticated connection, and each command needs the role-derived action on its
  database (see ``users.py``);
* only the commands the program, the stand-in's own tools and the tests send (pymongo's
  handshake, users, insert/find/getMore/killCursors/delete, aggregate for ``count_documents``,
  count for ``estimated_document_count``, listDatabases/listCollections,
  create/drop/dropDatabase); any other is CommandNotFound;
* errors carry MongoDB's codes (18 AuthenticationFailed, 13 Unauthorized, 11 UserNotFound, ...).
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from typing import Any

from bson.binary import Binary
from bson.int64 import Int64

from . import MAX_WIRE_VERSION, VERSION, query, users
from .crud import CommandError, CrudCommands, Cursor, Session
from .scram import ScramConversation, ScramError
from .storage import Storage, StorageError, check_db_name
from .wire import MAX_BSON_SIZE, MAX_MESSAGE_SIZE, Request

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


def log(component: str, msg: str, severity: str = "I", **attr: Any) -> None:
    """One mongod-style structured log line on stdout (never secrets: callers pass none)."""
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    line = {"t": {"$date": now}, "s": severity, "c": component, "msg": msg}
    if attr:
        line["attr"] = attr
    print(json.dumps(line, default=str), flush=True)


def _auth_failed() -> CommandError:
    return CommandError("Authentication failed.", 18, "AuthenticationFailed")


class MongoStandin(CrudCommands):
    """Command processing over a Storage; no I/O of its own (the server feeds it requests)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.cursors: dict[int, Cursor] = {}
        self._id_index = {}
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
            "count": self._count,
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
