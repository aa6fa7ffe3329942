"""The stand-in's dump archive format (NOT the real mongodump archive format).

``smoker-mongo-standin-archive`` version 1 is UTF-8 JSON Lines (optionally gzip-compressed as a
whole, with ``--gzip``). Every line is a two-element JSON array ``[TAG, VALUE]``; documents are
MongoDB canonical Extended JSON, so BSON types survive a round trip::

    ["H", {"format": "smoker-mongo-standin-archive", "version": 1, "tool": ..., "server": ...,
           "created": ISO-8601}]                                   # exactly once, first
    ["C", {"db": DB, "collection": NAME}]                          # a collection starts
    ["D", DOCUMENT]                                                # zero or more documents
    ["E", {"db": DB, "collection": NAME, "count": N,
           "sha256": HEX}]                                         # sha256 of the D lines' bytes
    ...                                                            # more C/D/E groups
    ["Z", {"collections": K, "documents": M}]                      # exactly once, last

The reader checks all of it (header, order, counts, checksums, trailer, nothing after the trailer,
a final newline), so a truncated or corrupted archive fails ``mongorestore --dryRun``.
``admin.system.users`` appears like any collection (user documents with SCRAM credentials,
never passwords), as the real tool includes it when it dumps every database.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from bson import json_util

from . import STANDIN_VERSION, TOOLS_VERSION

FORMAT = "smoker-mongo-standin-archive"
FORMAT_VERSION = 1
JSON_OPTIONS = json_util.CANONICAL_JSON_OPTIONS

Doc = dict[str, Any]


class ArchiveError(Exception):
    """The archive is not a complete, intact stand-in archive."""


def _line(tag: str, value: Any) -> bytes:
    return (json_util.dumps([tag, value], json_options=JSON_OPTIONS) + "\n").encode()


class ArchiveWriter:
    """Streams an archive to a binary file object (compressed with ``gzip=True``)."""

    def __init__(self, out: IO[bytes], compress: bool) -> None:
        self._raw = out
        self._gz = gzip.GzipFile(fileobj=out, mode="wb") if compress else None
        self._out: IO[bytes] = self._gz if self._gz is not None else out  # type: ignore[assignment]
        self.collections = 0
        self.documents = 0
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self._out.write(
            _line(
                "H",
                {
                    "format": FORMAT,
                    "version": FORMAT_VERSION,
                    "tool": f"mongodump {TOOLS_VERSION}",
                    "server": STANDIN_VERSION,
                    "created": now,
                },
            )
        )

    def collection(self, db: str, name: str, docs: Iterable[Doc]) -> int:
        """Write one collection; returns its document count."""
        self._out.write(_line("C", {"db": db, "collection": name}))
        digest = hashlib.sha256()
        count = 0
        for doc in docs:
            line = _line("D", doc)
            digest.update(line)
            self._out.write(line)
            count += 1
        self._out.write(
            _line("E", {"db": db, "collection": name, "count": count, "sha256": digest.hexdigest()})
        )
        self.collections += 1
        self.documents += count
        return count

    def close(self) -> None:
        """Write the trailer and finish the gzip member (does not close ``out``)."""
        self._out.write(_line("Z", {"collections": self.collections, "documents": self.documents}))
        if self._gz is not None:
            self._gz.close()
        self._raw.flush()


@dataclass
class ArchivedCollection:
    db: str
    name: str
    docs: list[Doc] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return f"{self.db}.{self.name}"


@dataclass
class Archive:
    header: Doc
    collections: list[ArchivedCollection]

    @property
    def documents(self) -> int:
        return sum(len(c.docs) for c in self.collections)


def _decompress(data: bytes) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"the archive is not valid gzip data ({exc})") from None


def parse_archive(data: bytes, compressed: bool) -> Archive:
    """Parse and fully verify an archive; raises ArchiveError naming the first problem."""
    if compressed:
        data = _decompress(data)
    elif data[:2] == b"\x1f\x8b":
        raise ArchiveError("the archive is gzip-compressed: use --gzip")
    if not data:
        raise ArchiveError("the archive is empty")
    if not data.endswith(b"\n"):
        raise ArchiveError("the archive is truncated (no final newline)")
    lines = data[:-1].split(b"\n")
    header: Doc | None = None
    collections: list[ArchivedCollection] = []
    current: ArchivedCollection | None = None
    digest = hashlib.sha256()
    trailer: Doc | None = None
    for number, raw in enumerate(lines, 1):
        try:
            item = json_util.loads(raw.decode("utf-8"), json_options=JSON_OPTIONS)
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as exc:
            raise ArchiveError(f"line {number} is not valid JSON ({exc})") from None
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise ArchiveError(f"line {number} is not a [tag, value] pair")
        tag, value = item
        if trailer is not None:
            raise ArchiveError(f"line {number}: data after the archive trailer")
        if header is None:
            if tag != "H" or value.get("format") != FORMAT:
                raise ArchiveError("not a smoker-mongo-standin-archive (bad header)")
            if value.get("version") != FORMAT_VERSION:
                raise ArchiveError(f"unsupported archive version {value.get('version')}")
            header = value
        elif tag == "C":
            if current is not None:
                raise ArchiveError(f"line {number}: collection {current.ns} was not closed")
            current = ArchivedCollection(str(value["db"]), str(value["collection"]))
            digest = hashlib.sha256()
        elif tag == "D":
            if current is None or not isinstance(value, dict):
                raise ArchiveError(f"line {number}: document outside a collection")
            digest.update(raw + b"\n")
            current.docs.append(value)
        elif tag == "E":
            if current is None or (value.get("db"), value.get("collection")) != (
                current.db,
                current.name,
            ):
                raise ArchiveError(f"line {number}: unexpected end of collection")
            if value.get("count") != len(current.docs):
                raise ArchiveError(
                    f"{current.ns}: {len(current.docs)} documents, expected {value.get('count')}"
                )
            if value.get("sha256") != digest.hexdigest():
                raise ArchiveError(f"{current.ns}: checksum mismatch")
            collections.append(current)
            current = None
        elif tag == "Z":
            if current is not None:
                raise ArchiveError(f"line {number}: trailer inside collection {current.ns}")
            trailer = value
        else:
            raise ArchiveError(f"line {number}: unknown tag {tag!r}")
    if header is None:
        raise ArchiveError("the archive has no header")
    if trailer is None:
        raise ArchiveError("the archive is truncated (no trailer)")
    archive = Archive(header, collections)
    if (trailer.get("collections"), trailer.get("documents")) != (
        len(collections),
        archive.documents,
    ):
        raise ArchiveError("the archive trailer does not match its contents")
    return archive
