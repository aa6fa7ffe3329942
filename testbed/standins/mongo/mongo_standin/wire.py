"""MongoDB wire protocol framing: OP_MSG and the legacy OP_QUERY / OP_REPLY pair.

Only what a driver's command traffic needs: OP_MSG with body (kind 0) and document-sequence
(kind 1) sections, and OP_QUERY on ``<db>.$cmd`` (old drivers' first ``isMaster``). Compression
is never advertised, so OP_COMPRESSED never arrives.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import bson

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013

HEADER = struct.Struct("<iiii")  # messageLength, requestID, responseTo, opCode
MAX_MESSAGE_SIZE = 48_000_000
MAX_BSON_SIZE = 16 * 1024 * 1024

_CHECKSUM_PRESENT = 1 << 0
_MORE_TO_COME = 1 << 1
_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")
_REPLY_FIELDS = struct.Struct("<iqii")  # responseFlags, cursorID, startingFrom, numberReturned


class ProtocolError(Exception):
    """The peer sent something that is not a message we understand; the connection closes."""


@dataclass
class Request:
    """One decoded client message: a command document addressed to a database."""

    request_id: int
    op_code: int
    db: str
    body: dict[str, Any]
    more_to_come: bool = False

    @property
    def command(self) -> str:
        """The command name (first key of the body)."""
        return next(iter(self.body), "")


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\x00", pos)
    return data[pos:end].decode(), end + 1


def _bson_at(data: bytes, pos: int) -> tuple[dict[str, Any], int]:
    (size,) = _INT32.unpack_from(data, pos)
    if size < 5 or pos + size > len(data):
        raise ProtocolError("BSON document overruns the message")
    return bson.decode(data[pos : pos + size]), pos + size


def parse_op_msg(request_id: int, payload: bytes) -> Request:
    """Decode an OP_MSG body (everything after the 16-byte header)."""
    (flags,) = _UINT32.unpack_from(payload, 0)
    end = len(payload) - (4 if flags & _CHECKSUM_PRESENT else 0)
    pos = 4
    body: dict[str, Any] | None = None
    sequences: dict[str, list[dict[str, Any]]] = {}
    while pos < end:
        kind = payload[pos]
        pos += 1
        if kind == 0:
            body, pos = _bson_at(payload, pos)
        elif kind == 1:
            (size,) = _INT32.unpack_from(payload, pos)
            section_end = pos + size
            identifier, pos = _cstring(payload, pos + 4)
            docs = sequences.setdefault(identifier, [])
            while pos < section_end:
                doc, pos = _bson_at(payload, pos)
                docs.append(doc)
        else:
            raise ProtocolError(f"unknown OP_MSG section kind {kind}")
    if body is None:
        raise ProtocolError("OP_MSG without a body section")
    for identifier, docs in sequences.items():
        body.setdefault(identifier, [])
        body[identifier].extend(docs)
    db = body.get("$db")
    if not isinstance(db, str):
        raise ProtocolError("OP_MSG body has no $db")
    return Request(request_id, OP_MSG, db, body, bool(flags & _MORE_TO_COME))


def parse_op_query(request_id: int, payload: bytes) -> Request:
    """Decode an OP_QUERY; only commands (``<db>.$cmd``) are accepted."""
    pos = 4  # flags
    full_name, pos = _cstring(payload, pos)
    pos += 8  # numberToSkip, numberToReturn
    query, pos = _bson_at(payload, pos)
    db, _, collection = full_name.partition(".")
    if collection != "$cmd":
        raise ProtocolError(f"legacy OP_QUERY on {full_name} is not supported (commands only)")
    if "$query" in query:  # {$query: {...}, $readPreference: ...}
        query = dict(query["$query"])
    return Request(request_id, OP_QUERY, db, dict(query))


def parse_message(header: tuple[int, int, int, int], payload: bytes) -> Request:
    """Decode one message given its unpacked header and the bytes after it."""
    _length, request_id, _response_to, op_code = header
    try:
        if op_code == OP_MSG:
            return parse_op_msg(request_id, payload)
        if op_code == OP_QUERY:
            return parse_op_query(request_id, payload)
    except (struct.error, ValueError, IndexError, bson.errors.BSONError) as exc:
        raise ProtocolError(f"malformed message (opCode {op_code}): {exc}") from exc
    raise ProtocolError(f"unsupported opCode {op_code}")


_response_ids = iter(range(1, 2**31))


def encode_reply(request: Request, doc: dict[str, Any]) -> bytes:
    """The reply to ``request``: OP_MSG for OP_MSG, OP_REPLY for a legacy OP_QUERY."""
    body = bson.encode(doc)
    if request.op_code == OP_QUERY:
        payload = _REPLY_FIELDS.pack(0, 0, 0, 1) + body
        op_code = OP_REPLY
    else:
        payload = _UINT32.pack(0) + b"\x00" + body
        op_code = OP_MSG
    header = HEADER.pack(
        HEADER.size + len(payload), next(_response_ids), request.request_id, op_code
    )
    return header + payload
