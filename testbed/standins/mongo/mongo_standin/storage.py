"""The stand-in's "storage engine": documents in memory, one JSON file per database on disk.

``<dbpath>/<database>.json`` holds ``{"format": "smoker-mongo-standin-db", "version": 1,
"database": NAME, "collections": {NAME: [DOC, ...]}}`` in MongoDB canonical Extended JSON (types
such as ObjectId, dates, int64 and binary survive). Every write rewrites that database's file
atomically (temporary file, fsync, rename, fsync of the directory) before the client is answered,
so a killed or restarted container keeps every acknowledged write.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

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
            self.dbs[data["database"]] = {
                name: list(docs) for name, docs in data["collections"].items()
            }

    def is_empty_on_disk(self) -> bool:
        """True when the dbpath holds no database file (first start)."""
        return self.dbpath is None or not any(self.dbpath.glob("*.json"))

    def flush(self, db: str) -> None:
        """Write database ``db`` to disk atomically (or remove its file once it is empty)."""
        if self.dbpath is None:
            return
        path = self._file(db)
        colls = self.dbs.get(db)
        if not colls:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._fsync_dir()
            return
        data = {"format": FORMAT, "version": FORMAT_VERSION, "database": db, "collections": colls}
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
        """Approximate size in bytes (the JSON length) for listDatabases."""
        colls = self.dbs.get(db, {})
        return len(json_util.dumps(colls, json_options=JSON_OPTIONS))
