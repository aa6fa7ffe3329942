"""The stand-in's "storage engine": documents in memory, one JSON file per database on disk.

``<dbpath>/<database>.json`` holds ``{"format": "smoker-mongo-standin-db", "version": 1,
"database": NAME, "collections": {NAME: [DOC, ...]}, "journal": TOKEN}`` in MongoDB canonical
Extended JSON (types such as ObjectId, dates, int64 and binary survive). Inserts are appended to
``<dbpath>/<database>.<TOKEN>.journal`` (one ``[COLLECTION, DOC]`` line each, fsynced), so
loading many documents costs what they weigh, not a rewrite of the database per batch; every
other write rewrites the database file atomically (temporary file, fsync, rename, fsync of the
directory) with a new token, which retires the old journal. Either way the write is on disk
before the client is answered, so a killed or restarted container keeps every acknowledged write
(a torn last journal line was never acknowledged and is ignored).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any

import bson
from bson import json_util

FORMAT = "smoker-mongo-standin-db"
FORMAT_VERSION = 1
JSON_OPTIONS = json_util.CANONICAL_JSON_OPTIONS

Doc = dict[str, Any]
_DB_NAME = re.compile(r"^[^/\\. \"$*<>:|?\x00]{1,63}$")


class StorageError(Exception):
    """A name or file the stand-in cannot accept (error code in ``code``)."""

    def __init__(self, message: str, code: int = 73, code_name: str = "InvalidNamespace") -> None:
        super().__init__(message)
        self.code = code
        self.code_name = code_name


def check_db_name(name: str) -> None:
    """Raise StorageError for a database name MongoDB would reject."""
    if not isinstance(name, str) or not _DB_NAME.match(name):
        raise StorageError(f"Invalid database name: '{name}'")


def check_collection_name(name: str) -> None:
    """Raise StorageError for a collection name MongoDB would reject."""
    if not isinstance(name, str) or not name or "$" in name or "\x00" in name:
        raise StorageError(f"Invalid collection name: '{name}'")


class Storage:
    """All databases; ``dbpath=None`` keeps everything in memory (unit tests)."""

    def __init__(self, dbpath: Path | str | None) -> None:
        self.dbpath = Path(dbpath) if dbpath is not None else None
        self.dbs: dict[str, dict[str, list[Doc]]] = {}
        self._journals: dict[str, str] = {}  # database -> the token of its live journal
        if self.dbpath is not None:
            self.dbpath.mkdir(parents=True, exist_ok=True)
            self._load()

    # -- persistence -----------------------------------------------------------------------

    def _file(self, db: str) -> Path:
        assert self.dbpath is not None
        return self.dbpath / f"{db}.json"

    def _load(self) -> None:
        assert self.dbpath is not None
        for path in sorted(self.dbpath.glob("*.json")):
            data = json_util.loads(path.read_text(encoding="utf-8"), json_options=JSON_OPTIONS)
            if data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
                raise StorageError(f"{path} is not a stand-in database file", 14, "TypeMismatch")
            colls = {name: list(docs) for name, docs in data["collections"].items()}
            self.dbs[data["database"]] = colls
            db, token = data["database"], data.get("journal")
            torn = False
            if isinstance(token, str):
                self._journals[db] = token
                torn = self._replay(self._journal(db, token), colls)
            for stale in self.dbpath.glob(f"{db}.*.journal"):  # left by a crash mid-flush
                if stale != self._journal(db, str(token)):
                    stale.unlink()
            if torn:  # start a clean journal: appends must not follow a torn line
                self.flush(db)

    def _journal(self, db: str, token: str) -> Path:
        assert self.dbpath is not None
        return self.dbpath / f"{db}.{token}.journal"

    @staticmethod
    def _replay(path: Path, colls: dict[str, list[Doc]]) -> bool:
        """Apply a journal's inserts; True if its last line is torn (never acknowledged)."""
        if not path.exists():
            return False
        with path.open("rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    return True
                name, doc = json_util.loads(raw, json_options=JSON_OPTIONS)
                colls.setdefault(name, []).append(doc)
        return False

    def is_empty_on_disk(self) -> bool:
        """True when the dbpath holds no database file (first start)."""
        return self.dbpath is None or not any(self.dbpath.glob("*.json"))

    def append(self, db: str, coll: str, docs: list[Doc]) -> None:
        """Make inserted ``docs`` (already in ``coll``'s list) durable: appended to the journal."""
        if self.dbpath is None or not docs:
            return
        token = self._journals.get(db)
        if token is None or not self._file(db).exists():
            self.flush(db)  # a new database: its first file, with a journal token
            return
        data = b"".join(
            (json_util.dumps([coll, doc], json_options=JSON_OPTIONS) + "\n").encode()
            for doc in docs
        )
        path = self._journal(db, token)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def flush(self, db: str) -> None:
        """Write database ``db`` to disk atomically (or remove its file once it is empty),
        starting a new (empty) journal and removing the old one."""
        if self.dbpath is None:
            return
        path = self._file(db)
        colls = self.dbs.get(db)
        old = self._journals.pop(db, None)
        if not colls:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._fsync_dir()
            self._drop_journal(db, old)
            return
        token = secrets.token_hex(8)
        data = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "database": db,
            "collections": colls,
            "journal": token,
        }
        text = json_util.dumps(data, json_options=JSON_OPTIONS)
        json.loads(text)  # never write something we could not read back
        fd, tmp = tempfile.mkstemp(prefix=f".{db}.", suffix=".tmp", dir=self.dbpath)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._fsync_dir()
        self._journals[db] = token
        self._drop_journal(db, old)

    def _drop_journal(self, db: str, token: str | None) -> None:
        if token is not None:
            with contextlib.suppress(FileNotFoundError):
                self._journal(db, token).unlink()

    def _fsync_dir(self) -> None:
        assert self.dbpath is not None
        fd = os.open(self.dbpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- access ----------------------------------------------------------------------------

    def database_names(self) -> list[str]:
        """Databases that hold at least one collection."""
        return sorted(name for name, colls in self.dbs.items() if colls)

    def collection_names(self, db: str) -> list[str]:
        return sorted(self.dbs.get(db, {}))

    def docs(self, db: str, coll: str) -> list[Doc]:
        """The live document list of a collection (empty list if it does not exist)."""
        return self.dbs.get(db, {}).get(coll, [])

    def has_collection(self, db: str, coll: str) -> bool:
        return coll in self.dbs.get(db, {})

    def create_collection(self, db: str, coll: str) -> list[Doc]:
        """The collection's document list, creating database and collection as needed."""
        check_db_name(db)
        check_collection_name(coll)
        return self.dbs.setdefault(db, {}).setdefault(coll, [])

    def drop_collection(self, db: str, coll: str) -> bool:
        existed = self.dbs.get(db, {}).pop(coll, None) is not None
        if existed:
            if not self.dbs.get(db):
                self.dbs.pop(db, None)
            self.flush(db)
        return existed

    def drop_database(self, db: str) -> bool:
        existed = bool(self.dbs.pop(db, None))
        self.flush(db)
        return existed

    def size_of(self, db: str) -> int:
        """Approximate size in bytes (the documents' BSON length) for listDatabases."""
        return sum(len(bson.encode(d)) for docs in self.dbs.get(db, {}).values() for d in docs)
