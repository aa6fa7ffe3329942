"""The MongoDB STAND-IN (testbed/standins/mongo), run in-process on 127.0.0.1 and driven by pymongo.

What the tier-3 tests rely on: real SCRAM authentication (wrong password => code 18), user
management and password rotation, readWrite confinement, CRUD with cursors, persistence across a
restart, and mongodump/mongorestore archives that round-trip and fail loudly when damaged.
"""

from __future__ import annotations

import datetime
import gzip
import io
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
import yaml

try:
    import pymongo
    from pymongo.errors import DuplicateKeyError, OperationFailure
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("pymongo is not installed (venv/bin/pip install pymongo)", allow_module_level=True)

from testbed.standins.mongo.mongo_standin import STANDIN_VERSION, VERSION, mongod, tools
from testbed.standins.mongo.mongo_standin.network import ServerThread
from testbed.standins.mongo.mongo_standin.storage import Storage

ROOT_PW = "root-Pa55:w/rd@%"  # characters that need URL-encoding, as real secrets do
APP_PW = "app-secret-1"


class Mongo:
    """A running stand-in plus the ways to reach it."""

    def __init__(self, dbpath: Path) -> None:
        self.dbpath = dbpath
        self.thread = ServerThread(dbpath).start()
        self.clients: list[pymongo.MongoClient] = []

    @property
    def port(self) -> int:
        return self.thread.port

    def client(
        self, user: str | None = None, password: str | None = None, **kw: Any
    ) -> pymongo.MongoClient:
        kwargs: dict[str, Any] = {"serverSelectionTimeoutMS": 3000, **kw}
        if user:
            kwargs.update(username=user, password=password, authSource="admin")
        client: pymongo.MongoClient = pymongo.MongoClient("127.0.0.1", self.port, **kwargs)
        self.clients.append(client)
        return client

    def root(self) -> pymongo.MongoClient:
        return self.client("admin", ROOT_PW)

    def restart(self) -> None:
        self.stop()
        self.thread = ServerThread(self.dbpath).start()

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()
        self.thread.stop()

    def tool_args(self, tmp_path: Path, password: str = ROOT_PW, user: str = "admin") -> list[str]:
        config = tmp_path / "tools.yaml"
        config.write_text(yaml.safe_dump({"password": password}))
        config.chmod(0o600)
        return [
            "--host", "127.0.0.1", "--port", str(self.port), f"--config={config}",
            f"--username={user}", "--authenticationDatabase=admin",
        ]  # fmt: skip


@pytest.fixture
def mongo(tmp_path: Path) -> Iterator[Mongo]:
    """A fresh stand-in with the root user and the app user, data under tmp_path/db."""
    dbpath = tmp_path / "db"
    dbpath.mkdir()
    storage = Storage(dbpath)
    from testbed.standins.mongo.mongo_standin.users import create_user

    create_user(storage, "admin", "admin", ROOT_PW, [{"role": "root", "db": "admin"}])
    m = Mongo(dbpath)
    m.root().admin.command(
        "createUser", "smartsmoker", pwd=APP_PW, roles=[{"role": "readWrite", "db": "smartsmoker"}]
    )
    yield m
    m.stop()


def _app(m: Mongo, password: str = APP_PW) -> pymongo.MongoClient:
    uri = f"mongodb://smartsmoker:{password}@127.0.0.1:{m.port}/smartsmoker?authSource=admin"
    client: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=3000)
    m.clients.append(client)
    return client


def _auth_code(client: pymongo.MongoClient) -> int | None:
    try:
        client.admin.command("ping")
    except OperationFailure as exc:
        return exc.code
    return None


# -- handshake and authentication ----------------------------------------------------------------


def test_handshake_without_credentials_answers_ping_and_build_info(mongo: Mongo) -> None:
    client = mongo.client()
    assert client.admin.command("ping")["ok"] == 1
    info = client.server_info()
    assert info["version"] == VERSION and "stand-in" in info["standin"]
    with pytest.raises(OperationFailure) as exc:
        client.smartsmoker.items.find_one()
    assert exc.value.code == 13  # a user exists: everything else needs auth


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", None])
def test_scram_authentication_checks_the_password(mongo: Mongo, mechanism: str | None) -> None:
    kw = {"authMechanism": mechanism} if mechanism else {}
    assert _auth_code(mongo.client("admin", ROOT_PW, **kw)) is None
    assert _auth_code(mongo.client("admin", ROOT_PW + "x", **kw)) == 18
    assert _auth_code(mongo.client("nobody", ROOT_PW, **kw)) == 18


def test_legacy_op_query_is_master_gets_an_op_reply(mongo: Mongo) -> None:
    query = bson.encode({"isMaster": 1, "helloOk": True})
    body = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + query
    message = struct.pack("<iiii", 16 + len(body), 7, 0, 2004) + body
    with socket.create_connection(("127.0.0.1", mongo.port), timeout=5) as sock:
        sock.sendall(message)
        header = sock.recv(16, socket.MSG_WAITALL)
        length, _, response_to, op_code = struct.unpack("<iiii", header)
        rest = sock.recv(length - 16, socket.MSG_WAITALL)
    assert (response_to, op_code) == (7, 1)
    reply = bson.decode(rest[20:])
    assert reply["ismaster"] is True and reply["helloOk"] is True and reply["maxWireVersion"] == 21


# -- users -----------------------------------------------------------------------------------------


def test_users_info_shows_roles_and_mechanisms_never_passwords(mongo: Mongo) -> None:
    info = mongo.root().admin.command("usersInfo", "smartsmoker")
    [user] = info["users"]
    assert user["roles"] == [{"role": "readWrite", "db": "smartsmoker"}]
    assert user["mechanisms"] == ["SCRAM-SHA-1", "SCRAM-SHA-256"]
    assert "credentials" not in user
    on_disk = (mongo.dbpath / "admin.json").read_text()
    assert APP_PW not in on_disk and ROOT_PW not in on_disk
    assert "storedKey" in on_disk and (mongo.dbpath / "admin.json").stat().st_mode & 0o077 == 0
    all_users = mongo.root().admin.command("usersInfo", 1)["users"]
    assert sorted(u["user"] for u in all_users) == ["admin", "smartsmoker"]


def test_update_user_rotates_the_password(mongo: Mongo) -> None:
    assert _auth_code(_app(mongo)) is None
    mongo.root().admin.command("updateUser", "smartsmoker", pwd="rotated-2")
    assert _auth_code(_app(mongo)) == 18
    assert _auth_code(_app(mongo, "rotated-2")) is None
    mongo.root().admin.command("updateUser", "smartsmoker", roles=[{"role": "read", "db": "x"}])
    assert mongo.root().admin.command("usersInfo", "smartsmoker")["users"][0]["roles"] == [
        {"role": "read", "db": "x"}
    ]
    mongo.root().admin.command("dropUser", "smartsmoker")
    assert _auth_code(_app(mongo, "rotated-2")) == 18


def test_user_management_errors_carry_mongodb_codes(mongo: Mongo) -> None:
    admin = mongo.root().admin
    with pytest.raises(OperationFailure) as exc:
        admin.command("createUser", "smartsmoker", pwd="x", roles=[])
    assert exc.value.code == 51003
    with pytest.raises(OperationFailure) as exc:
        admin.command("updateUser", "ghost", pwd="x")
    assert exc.value.code == 11
    with pytest.raises(OperationFailure) as exc:
        admin.command("createUser", "u2", pwd="x", roles=[{"role": "wizard", "db": "admin"}])
    assert exc.value.code == 31


def test_read_write_is_confined_to_its_database(mongo: Mongo) -> None:
    app = _app(mongo)
    db = app.get_default_database()
    db.items.insert_one({"k": 1})
    assert db.items.count_documents({}) == 1
    assert app.list_database_names() == ["smartsmoker"]
    for action in (
        lambda: app.other.items.insert_one({"k": 1}),
        lambda: app.other.items.find_one(),
        lambda: app.admin.command("createUser", "evil", pwd="x", roles=["root"]),
        lambda: app.admin.command("usersInfo", "admin"),
        lambda: app.drop_database("smartsmoker"),
        lambda: app.admin.system.users.find_one(),
    ):
        with pytest.raises(OperationFailure) as exc:
            action()
        assert exc.value.code == 13
    assert app.admin.command("usersInfo", "smartsmoker")["users"]  # a user may view itself


# -- CRUD ------------------------------------------------------------------------------------------


def test_crud_with_cursors(mongo: Mongo) -> None:
    coll = _app(mongo).smartsmoker.readings
    coll.insert_many([{"i": i, "k": i % 3, "tags": ["a", f"t{i % 2}"]} for i in range(250)])
    assert coll.count_documents({}) == 250
    assert coll.count_documents({"k": 1}) == 83
    assert len(list(coll.find({"k": 2}))) == 83
    assert [d["i"] for d in coll.find({"tags": "t1"}).sort("i", -1).skip(2).limit(3)] == [
        245,
        243,
        241,
    ]
    assert len(list(coll.find().batch_size(7))) == 250  # first batch + many getMores
    cursor = coll.find().batch_size(10)
    next(cursor)
    cursor.close()  # killCursors
    assert coll.find_one({"i": {"$gte": 248}}, {"_id": 0, "i": 1}) == {"i": 248}
    assert coll.delete_many({"k": 0}).deleted_count == 84
    assert coll.delete_one({"i": 1}).deleted_count == 1
    doc = coll.find_one({"i": 2})
    assert doc is not None
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"_id": doc["_id"]})
    assert coll.database.list_collection_names() == ["readings"]
    coll.drop()
    assert coll.database.list_collection_names() == []


def test_data_and_users_survive_a_restart(mongo: Mongo) -> None:
    _app(mongo).smartsmoker.items.insert_one({"_id": 1, "when": datetime.datetime(2024, 5, 1)})
    mongo.restart()
    assert _auth_code(mongo.client("admin", ROOT_PW + "x")) == 18
    doc = _app(mongo).smartsmoker.items.find_one({"_id": 1})
    assert doc == {"_id": 1, "when": datetime.datetime(2024, 5, 1)}


def test_inserts_go_to_the_journal_and_a_rewrite_retires_it(mongo: Mongo) -> None:
    items = _app(mongo).smartsmoker.items
    items.insert_many([{"_id": i, "v": i} for i in range(5)])
    items.insert_many([{"_id": i, "v": i} for i in range(5, 9)])
    assert len(list(mongo.dbpath.glob("smartsmoker.*.journal"))) == 1
    mongo.restart()
    assert [d["_id"] for d in _app(mongo).smartsmoker.items.find()] == list(range(9))
    _app(mongo).smartsmoker.items.delete_one({"_id": 0})  # a rewrite: a new, empty journal
    assert not list(mongo.dbpath.glob("smartsmoker.*.journal"))
    mongo.restart()
    assert _app(mongo).smartsmoker.items.count_documents({}) == 8


def test_a_torn_journal_line_is_dropped_and_appends_continue(mongo: Mongo) -> None:
    _app(mongo).smartsmoker.items.insert_many([{"_id": 1}, {"_id": 2}])
    _app(mongo).smartsmoker.items.insert_one({"_id": 3})
    mongo.stop()
    journal = next(mongo.dbpath.glob("smartsmoker.*.journal"))
    journal.write_bytes(journal.read_bytes() + b'["items", {"_id": {"$numberInt": "4"')
    mongo.restart()
    _app(mongo).smartsmoker.items.insert_one({"_id": 5})
    mongo.restart()
    assert [d["_id"] for d in _app(mongo).smartsmoker.items.find()] == [1, 2, 3, 5]


def test_counts_and_listing_as_the_app_user(mongo: Mongo) -> None:
    db = _app(mongo).smartsmoker
    assert db.list_collection_names() == [] and db.items.estimated_document_count() == 0
    db.items.insert_many([{"_id": i, "k": i % 2} for i in range(7)])
    db.other.insert_one({"_id": 1})
    assert sorted(db.list_collection_names()) == ["items", "other"]
    assert db.items.estimated_document_count() == 7
    assert db.items.count_documents({}) == 7 and db.items.count_documents({"k": 1}) == 3


def test_large_results_come_in_batches_within_the_message_limit(mongo: Mongo) -> None:
    items = _app(mongo).smartsmoker.items
    items.insert_many([{"_id": i, "blob": bytes(1 << 20)} for i in range(60)])  # 60 MiB
    assert [d["_id"] for d in items.find({}, sort=[("_id", 1)])] == list(range(60))


# -- CLIs ------------------------------------------------------------------------------------------


def _dump(mongo: Mongo, tmp_path: Path, *extra: str, password: str = ROOT_PW):
    out, err = io.BytesIO(), io.StringIO()
    args = ["--archive", "--gzip", *extra, *mongo.tool_args(tmp_path, password)]
    rc = tools.mongodump_main(args, stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def _restore(mongo: Mongo, tmp_path: Path, data: bytes, *extra: str):
    err = io.StringIO()
    args = ["--archive", "--gzip", *extra, *mongo.tool_args(tmp_path)]
    rc = tools.mongorestore_main(args, stdin=io.BytesIO(data), stderr=err)
    return rc, err.getvalue()


SAMPLE = [
    {
        "_id": bson.ObjectId(),
        "n": 1,
        "big": bson.Int64(2**40),
        "f": 1.5,
        "s": "é",
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5, 678000),
        "bin": b"\x00\x01",
        "md5": bson.Binary(b"x" * 16, 5),
        "nested": {"a": [1, {"b": None}]},
        "flag": True,
    },
    {"_id": "string-id", "n": 2},
]


def test_dump_and_restore_round_trip(mongo: Mongo, tmp_path: Path) -> None:
    app_db = _app(mongo).smartsmoker
    app_db.items.insert_many([dict(d) for d in SAMPLE])
    app_db.empty.insert_one({"_id": 0})
    app_db.empty.delete_one({"_id": 0})
    rc, archive, err = _dump(mongo, tmp_path)
    assert rc == 0, err
    assert "done dumping smartsmoker.items (2 documents)" in err
    assert "done dumping admin.system.users (2 documents)" in err
    assert ROOT_PW not in err and gzip.decompress(archive)  # valid gzip

    rc, err = _restore(mongo, tmp_path, archive, "--dryRun")
    assert rc == 0, err
    assert "0 document(s) restored successfully" in err

    root = mongo.root()
    root.drop_database("smartsmoker")
    app_only = "--nsInclude=smartsmoker.*"  # as the backup tool restores
    rc, err = _restore(mongo, tmp_path, archive, app_only)
    assert rc == 0, err
    assert "finished restoring smartsmoker.items (2 documents, 0 failures)" in err
    assert list(root.smartsmoker.items.find().sort("n", 1)) == SAMPLE
    assert "empty" in root.smartsmoker.list_collection_names()

    rc, err = _restore(mongo, tmp_path, archive, app_only)  # no --drop: duplicates fail
    assert rc == 0 and "2 document(s) failed to restore" in err
    rc, err = _restore(mongo, tmp_path, archive, app_only, "--drop")
    assert rc == 0 and "0 document(s) failed to restore" in err
    assert root.smartsmoker.items.count_documents({}) == 2


def test_restore_renames_databases(mongo: Mongo, tmp_path: Path) -> None:
    _app(mongo).smartsmoker.items.insert_many([dict(d) for d in SAMPLE])
    _rc, archive, _err = _dump(mongo, tmp_path)
    rc, err = _restore(
        mongo,
        tmp_path,
        archive,
        "--drop",
        "--nsInclude=smartsmoker.*",
        "--nsFrom=smartsmoker.*",
        "--nsTo=drill.*",
    )
    assert rc == 0, err
    root = mongo.root()
    assert list(root.drill.items.find().sort("n", 1)) == SAMPLE
    assert root.smartsmoker.items.count_documents({}) == 2


def test_users_are_never_restored(mongo: Mongo, tmp_path: Path) -> None:
    """The project restores the application database only (users belong to Pulumi); the
    stand-in refuses a restore that would include users, before restoring anything."""
    _app(mongo).smartsmoker.items.insert_many([dict(d) for d in SAMPLE])
    _rc, archive, _err = _dump(mongo, tmp_path)
    mongo.root().admin.command("updateUser", "smartsmoker", pwd="newer")
    mongo.root().drop_database("smartsmoker")
    rc, err = _restore(mongo, tmp_path, archive, "--drop")
    assert rc != 0 and "restoring users (admin.system.users) is not supported" in err
    assert mongo.root().smartsmoker.list_collection_names() == []
    rc, err = _restore(mongo, tmp_path, archive, "--drop", "--nsInclude=smartsmoker.*")
    assert rc == 0, err
    assert _auth_code(_app(mongo, "newer")) is None  # users excluded: untouched


def test_dump_with_a_wrong_password_fails_without_echoing_it(mongo: Mongo, tmp_path: Path) -> None:
    rc, archive, err = _dump(mongo, tmp_path, password="wrong-pw-123")
    assert rc == 1 and archive == b""
    assert "(AuthenticationFailed) Authentication failed." in err
    assert "wrong-pw-123" not in err


def test_password_on_the_command_line_is_refused(mongo: Mongo) -> None:
    err = io.StringIO()
    rc = tools.mongodump_main(["--archive", "-u", "admin", "-p", "x"], io.BytesIO(), err)
    assert rc == 2 and "--config" in err.getvalue()


def test_dry_run_rejects_damaged_archives(mongo: Mongo, tmp_path: Path) -> None:
    _app(mongo).smartsmoker.items.insert_many([{"i": i} for i in range(50)])
    rc, archive, _err = _dump(mongo, tmp_path)
    assert rc == 0
    raw = gzip.decompress(archive)
    damaged = {
        "truncated gzip": archive[: len(archive) // 2],
        "flipped byte": archive[:40] + bytes([archive[40] ^ 0xFF]) + archive[41:],
        "no trailer": gzip.compress(raw[: raw.rindex(b'["Z"')]),
        "edited document": gzip.compress(raw.replace(b'"i": {"$numberInt": "7"}', b'"i": 8')),
        "not gzip": raw,
        "empty": b"",
    }
    before = list(mongo.root().smartsmoker.items.find())
    for what, data in damaged.items():
        rc, err = _restore(mongo, tmp_path, data, "--dryRun", "--drop")
        assert rc == 1, f"{what}: {err}"
        assert "Failed:" in err, what
    assert list(mongo.root().smartsmoker.items.find()) == before


def test_mongosh_answers_the_two_supported_expressions(
    mongo: Mongo, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--host", f"127.0.0.1:{mongo.port}"]
    assert tools.mongosh_main([*where, "--quiet", "--eval", "db.adminCommand('ping').ok"]) == 0
    assert capsys.readouterr().out == "1\n"
    assert tools.mongosh_main([*where, "--quiet", "--eval", "db.version()"]) == 0
    assert capsys.readouterr().out == f"{VERSION}\n"
    secret_expr = "db.createUser({user: 'x', pwd: 'hunter2', roles: []})"
    assert tools.mongosh_main([*where, "--quiet", "--eval", secret_expr]) == 2
    captured = capsys.readouterr()
    assert "not supported by the stand-in" in captured.err and "hunter2" not in captured.err


def test_mongosh_fails_when_nothing_listens(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tools, "MONGOSH_TIMEOUT_MS", 300)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["--host", f"127.0.0.1:{port}", "--quiet", "--eval", "db.adminCommand('ping').ok"]
    assert tools.mongosh_main(argv) == 1
    assert capsys.readouterr().out == ""


def test_mongod_version_names_the_stand_in(capsys: pytest.CaptureFixture[str]) -> None:
    assert mongod.mongod_main(["--version"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"db version v{STANDIN_VERSION}" and first.endswith("-standin")


def test_entrypoint_creates_the_root_user_only_on_first_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONGO_INITDB_ROOT_USERNAME", "admin")
    monkeypatch.setenv("MONGO_INITDB_ROOT_PASSWORD", "first")
    err = io.StringIO()
    assert mongod.init_root_user(tmp_path, err) is True
    monkeypatch.setenv("MONGO_INITDB_ROOT_PASSWORD", "second")
    assert mongod.init_root_user(tmp_path, err) is False  # data exists: env is ignored
    assert "first" not in (tmp_path / "admin.json").read_text()
    with ServerThread(tmp_path) as srv:
        client: pymongo.MongoClient = pymongo.MongoClient(
            "127.0.0.1", srv.port, username="admin", password="first", serverSelectionTimeoutMS=3000
        )
        assert _auth_code(client) is None
        client.close()
    monkeypatch.delenv("MONGO_INITDB_ROOT_PASSWORD")
    with pytest.raises(tools.ToolError):
        mongod.init_root_user(tmp_path / "other", err)
