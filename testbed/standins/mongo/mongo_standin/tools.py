"""The stand-in's command-line tools, with the real tools' shapes (as the project uses them).

* ``mongod [--bind_ip IP[,IP] | --bind_ip_all] [--port N] [--dbpath DIR]`` and ``mongod --version``
  (prints ``db version v7.0.14-standin``);
* ``docker-entrypoint.sh mongod ...``: on the first start (no database file in the dbpath) with
  ``MONGO_INITDB_ROOT_USERNAME`` / ``MONGO_INITDB_ROOT_PASSWORD`` (or ``..._FILE``) set, creates
  that root user (SCRAM credentials only), then execs ``mongod --bind_ip_all``;
* ``mongosh --quiet --eval EXPR`` for exactly ``db.adminCommand('ping').ok`` (and the same
  ping spelt as ``{ping: 1}`` / ``runCommand``) and ``db.version()``; anything else exits 2;
* ``mongodump --archive[=PATH] [--gzip]`` (every database) and ``mongorestore --archive[=PATH]
  [--gzip] [--drop] [--dryRun] [--nsFrom=A --nsTo=B] [--nsInclude=P]`` (never users: a restore
  that would include ``admin.system.users`` is refused), both with ``--config=FILE`` (YAML,
  ``password:``), ``--username``, ``--authenticationDatabase``, ``--host``, ``--port``,
  ``--uri``. A password on the command line (``-p``/``--password``) is refused on purpose: the
  project must pass it with ``--config``. Nothing else: only what the backup tool and the tests
  run.

Exit codes: 0 success, 1 failure (as the real tools), 2 usage the stand-in does not support.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

from . import DEFAULT_PORT, TOOLS_VERSION, VERSION
from .archive import ArchivedCollection, ArchiveError, ArchiveWriter, parse_archive
from .users import USERS_COLL, USERS_DB

EXIT_FAILURE = 1
EXIT_UNSUPPORTED = 2
TIMEOUT_MS = int(os.environ.get("MONGO_STANDIN_TIMEOUT_MS", "10000"))
#: mongosh gives up sooner: it is the container's health check.
MONGOSH_TIMEOUT_MS = 5000
#: Collections of admin the dump carries when it dumps every database (as the real tool does).
ADMIN_SYSTEM_DUMPED = ("system.users", "system.roles", "system.version")
RESTORE_BATCH = 1000


class UnsupportedError(Exception):
    """Something the stand-in does not do (exit 2)."""


class ToolError(Exception):
    """The tool failed like the real one would (exit 1)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UnsupportedError(f"error parsing command line options: {message}")


def _stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def _say(err: IO[str], message: str) -> None:
    err.write(f"{_stamp()}\t{message}\n")
    err.flush()


# ---------------------------------------------------------------------------------------------
# Connecting (mongodump/mongorestore/mongosh are clients of the stand-in server, via pymongo)


def _tool_parser(prog: str) -> _Parser:
    p = _Parser(prog=prog, add_help=True, allow_abbrev=False)
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--uri", default=None)
    p.add_argument("-u", "--username", default=None)
    p.add_argument("-p", "--password", default=None)
    p.add_argument("--config", default=None)
    p.add_argument("--authenticationDatabase", default="admin")
    p.add_argument("--archive", nargs="?", const="-", default=None)
    p.add_argument("--gzip", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--version", action="store_true")
    return p


def read_tools_config(path: str) -> dict[str, Any]:
    """The ``--config`` YAML file (``password: ...``); errors never quote its content."""
    import yaml  # python3-yaml in the image; PyYAML on the host

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ToolError(f"error opening config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ToolError(f"error parsing config file {path}: not valid YAML") from None
    if not isinstance(data, dict):
        raise ToolError(f"error parsing config file {path}: expected a mapping")
    unknown = set(data) - {"password", "uri", "sslPEMKeyPassword"}
    if unknown:
        raise ToolError(f"error parsing config file {path}: unknown keys {sorted(unknown)}")
    return data


def _connect(args: argparse.Namespace, appname: str) -> Any:
    """An authenticated (when --username is given) pymongo client, checked with a ping."""
    from pymongo import MongoClient
    from pymongo.errors import OperationFailure, PyMongoError

    if args.password is not None:
        raise UnsupportedError(
            "stand-in: a password on the command line is refused; pass it with --config=FILE"
        )
    config = read_tools_config(args.config) if args.config else {}
    uri = args.uri or config.get("uri")
    kwargs: dict[str, Any] = {
        "serverSelectionTimeoutMS": TIMEOUT_MS,
        "connectTimeoutMS": TIMEOUT_MS,
        "appname": appname,
    }
    if args.username:
        if "password" not in config:
            raise ToolError("stand-in: --username needs the password in --config=FILE")
        kwargs.update(username=args.username, password=str(config["password"]))
        kwargs["authSource"] = args.authenticationDatabase
    if uri:
        client = MongoClient(uri, **kwargs)
        where = re.sub(r"//[^@/]*@", "//", uri)  # never echo credentials
    else:
        host, _, port = args.host.rpartition("/")[2].partition(":")
        port_n = args.port or (int(port) if port else DEFAULT_PORT)
        client = MongoClient(host or "localhost", port_n, directConnection=True, **kwargs)
        where = f"mongodb://{host or 'localhost'}:{port_n}/"
    try:
        client.admin.command("ping")
    except OperationFailure as exc:
        client.close()
        mech = "SCRAM-SHA-256"
        details = exc.details or {}
        raise ToolError(
            f"can't create session: failed to connect to {where}: connection() error occurred "
            f"during connection handshake: auth error: sasl conversation error: unable to "
            f'authenticate using mechanism "{mech}": ({details.get("codeName", exc.code)}) '
            f"{details.get('errmsg', 'Authentication failed.')}"
        ) from None
    except PyMongoError as exc:
        client.close()
        raise ToolError(
            f"can't create session: failed to connect to {where}: server selection error: "
            f"{type(exc).__name__}"
        ) from None
    return client


# ---------------------------------------------------------------------------------------------
# mongodump


def _dump_targets(client: Any) -> Iterator[tuple[str, str]]:
    for db in sorted(client.list_database_names()):
        if db in ("local", "config"):
            continue
        for name in sorted(client[db].list_collection_names()):
            if name.startswith("system.") and not (db == USERS_DB and name in ADMIN_SYSTEM_DUMPED):
                continue
            yield db, name


def mongodump_main(
    argv: list[str], stdout: IO[bytes] | None = None, stderr: IO[str] | None = None
) -> int:
    """``mongodump``: dump all databases as a stand-in archive (the backup tool's only use)."""
    err = stderr or sys.stderr
    p = _tool_parser("mongodump")
    try:
        args = p.parse_args(argv)
        if args.version:
            print(f"mongodump version: {TOOLS_VERSION} (smoker-infra STAND-IN)", file=err)
            return 0
        if args.archive is None:
            raise UnsupportedError("stand-in: only --archive mode is supported (no dump directory)")
        client = _connect(args, "mongodump")
    except UnsupportedError as exc:
        print(f"mongodump: {exc}", file=err)
        return EXIT_UNSUPPORTED
    except ToolError as exc:
        _say(err, f"Failed: {exc}")
        return EXIT_FAILURE
    where = "stdout" if args.archive == "-" else f"'{args.archive}'"
    target = None
    try:
        if args.archive == "-":
            out = stdout or sys.stdout.buffer
        else:
            target = open(args.archive, "wb")  # noqa: SIM115 - closed in finally
            out = target
        writer = ArchiveWriter(out, args.gzip)
        for db, name in _dump_targets(client):
            _say(err, f"writing {db}.{name} to archive on {where}")
            count = writer.collection(db, name, client[db][name].find({}, batch_size=1000))
            _say(err, f"done dumping {db}.{name} ({count} document{'s' if count != 1 else ''})")
        writer.close()
    except Exception as exc:
        _say(err, f"Failed: {type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    finally:
        if target is not None:
            target.close()
        client.close()
    return 0


# ---------------------------------------------------------------------------------------------
# mongorestore


def _pattern(ns: str) -> re.Pattern[str]:
    """A namespace pattern like the real tools' (``*`` matches anything)."""
    return re.compile("^" + "(.*)".join(re.escape(part) for part in ns.split("*")) + "$")


def _renamer(ns_from: list[str], ns_to: list[str]) -> Callable[[str], str]:
    if len(ns_from) != len(ns_to):
        raise UnsupportedError("--nsFrom and --nsTo must be given the same number of times")
    rules = []
    for src, dst in zip(ns_from, ns_to, strict=True):
        if src.count("*") != dst.count("*") or "$" in src + dst:
            raise UnsupportedError("stand-in: --nsFrom/--nsTo support '*' wildcards only, in pairs")
        rules.append((_pattern(src), dst))

    def rename(ns: str) -> str:
        for regex, dst in rules:
            match = regex.match(ns)
            if match:
                out = dst
                for group in match.groups():
                    out = out.replace("*", group, 1)
                return out
        return ns

    return rename


def _included(ns: str, include: list[str]) -> bool:
    return not include or any(fnmatch.fnmatchcase(ns, p) for p in include)


def _restore_collection(
    client: Any,
    coll: ArchivedCollection,
    target_ns: str,
    drop: bool,
    err: IO[str],
) -> tuple[int, int]:
    from pymongo.errors import BulkWriteError

    db, _, name = target_ns.partition(".")
    collection = client[db][name]
    if drop:
        _say(err, f"dropping collection {target_ns} before restoring")
        collection.drop()
    ok = failed = 0
    if not coll.docs:  # an empty collection still exists after a restore
        from pymongo.errors import OperationFailure

        try:
            client[db].command("create", name)
        except OperationFailure as exc:
            if exc.code != 48:  # NamespaceExists
                raise
    for start in range(0, len(coll.docs), RESTORE_BATCH):
        batch = coll.docs[start : start + RESTORE_BATCH]
        try:
            ok += len(collection.insert_many(batch, ordered=False).inserted_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            ok += exc.details.get("nInserted", 0)
            failed += len(batch) - exc.details.get("nInserted", 0)
            for item in errors[:5]:
                _say(err, f"continuing through error: {item.get('errmsg')}")
    return ok, failed


def mongorestore_main(
    argv: list[str], stdin: IO[bytes] | None = None, stderr: IO[str] | None = None
) -> int:
    """``mongorestore``: verify the whole archive, then restore it (or, ``--dryRun``, not)."""
    err = stderr or sys.stderr
    p = _tool_parser("mongorestore")
    p.add_argument("--drop", action="store_true")
    p.add_argument("--dryRun", action="store_true")
    p.add_argument("--nsFrom", action="append", default=[])
    p.add_argument("--nsTo", action="append", default=[])
    p.add_argument("--nsInclude", action="append", default=[])
    try:
        args = p.parse_args(argv)
        if args.version:
            print(f"mongorestore version: {TOOLS_VERSION} (smoker-infra STAND-IN)", file=err)
            return 0
        if args.archive is None:
            raise UnsupportedError("stand-in: only --archive mode is supported (no dump directory)")
        rename = _renamer(args.nsFrom, args.nsTo)
        client = _connect(args, "mongorestore")
    except UnsupportedError as exc:
        print(f"mongorestore: {exc}", file=err)
        return EXIT_UNSUPPORTED
    except ToolError as exc:
        _say(err, f"Failed: {exc}")
        return EXIT_FAILURE
    source = "stdin" if args.archive == "-" else f"'{args.archive}'"
    restored = failed = 0
    try:
        _say(err, f"preparing collections to restore from archive on {source}")
        if args.archive == "-":
            data = (stdin or sys.stdin.buffer).read()
        else:
            data = Path(args.archive).read_bytes()
        archive = parse_archive(data, args.gzip)
        users = [
            c
            for c in archive.collections
            if c.ns == f"{USERS_DB}.{USERS_COLL}" and _included(c.ns, args.nsInclude)
        ]
        if users and not args.dryRun:  # refused before anything is restored
            raise ToolError(
                "stand-in: restoring users (admin.system.users) is not supported; the project "
                "restores --nsInclude='<app db>.*' only"
            )
        for coll in archive.collections:
            if coll.db == USERS_DB and coll.name.startswith("system."):
                continue  # users (above), system.version/system.roles: nothing to restore
            target = rename(coll.ns)
            if not _included(coll.ns, args.nsInclude):
                continue
            if args.dryRun:
                _say(
                    err,
                    f"dry run: would restore {coll.ns} to {target} ({len(coll.docs)} documents)",
                )
                continue
            _say(err, f"restoring {target} from archive on {source}")
            ok, bad = _restore_collection(client, coll, target, args.drop, err)
            restored += ok
            failed += bad
            _say(err, f"finished restoring {target} ({ok} documents, {bad} failures)")
        for coll in users:
            _say(err, f"dry run: would restore {len(coll.docs)} user(s)")
        if args.dryRun:
            _say(
                err,
                f"dry run completed: the archive holds {archive.documents} document(s) "
                f"in {len(archive.collections)} collection(s)",
            )
    except ArchiveError as exc:
        _say(err, f"Failed: {source}: {exc}")
        return EXIT_FAILURE
    except ToolError as exc:
        _say(err, f"Failed: {exc}")
        return EXIT_FAILURE
    except Exception as exc:
        _say(err, f"Failed: {type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    finally:
        client.close()
    _say(
        err,
        f"{restored} document(s) restored successfully. {failed} document(s) failed to restore.",
    )
    return 0


# ---------------------------------------------------------------------------------------------
# mongosh

_PING = re.compile(
    r"""^db\.(adminCommand|runCommand)\(\s*(['"]ping['"]|\{\s*['"]?ping['"]?\s*:\s*1\s*\})\s*\)"""
)


def mongosh_main(
    argv: list[str], stdout: IO[str] | None = None, stderr: IO[str] | None = None
) -> int:
    """``mongosh --quiet --eval EXPR`` for the two expressions the project uses."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    p = _Parser(prog="mongosh", allow_abbrev=False)
    p.add_argument("uri", nargs="?", default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--norc", action="store_true")
    p.add_argument("--eval", action="append", default=[])
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--version", action="store_true")
    try:
        args = p.parse_args(argv)
    except UnsupportedError as exc:
        print(f"mongosh stand-in: {exc}", file=err)
        return EXIT_UNSUPPORTED
    if args.version:
        print("2.3.1-standin", file=out)
        return 0
    if len(args.eval) != 1:
        print(
            "mongosh stand-in: only a single --eval expression is supported "
            "(no interactive shell, no scripts)",
            file=err,
        )
        return EXIT_UNSUPPORTED
    expr = args.eval[0].strip().rstrip(";").strip()
    ping = _PING.match(expr)
    if ping and expr[ping.end() :] in ("", ".ok"):
        command, field = "ping", expr[ping.end() :]
    elif expr == "db.version()":
        command, field = "buildInfo", "version"
    else:  # never echo the expression: it could carry a password
        print(
            "mongosh stand-in: this --eval expression is not supported by the stand-in "
            "(supported: db.adminCommand('ping').ok, db.version())",
            file=err,
        )
        return EXIT_UNSUPPORTED
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    host, _, port = args.host.partition(":")
    uri = args.uri or f"mongodb://{host}:{args.port or port or DEFAULT_PORT}/"
    if not uri.startswith("mongodb"):
        uri = f"mongodb://{uri}"
    client: Any = MongoClient(
        uri, serverSelectionTimeoutMS=MONGOSH_TIMEOUT_MS, directConnection=True
    )
    try:
        reply = client.admin.command(command)
    except PyMongoError as exc:
        print(f"MongoServerSelectionError: {type(exc).__name__}: {exc}", file=err)
        return EXIT_FAILURE
    finally:
        client.close()
    if command == "ping":
        print("1" if field == ".ok" and reply.get("ok") == 1 else "{ ok: 1 }", file=out)
    else:
        print(reply[field], file=out)
    return 0


def main(prog: str, argv: list[str]) -> int:
    """Dispatch on the program name (the image links every tool name to one script)."""
    from .mongod import entrypoint_main, mongod_main

    tools: dict[str, Callable[[list[str]], int]] = {
        "mongod": mongod_main,
        "mongosh": mongosh_main,
        "mongo": mongosh_main,
        "mongodump": mongodump_main,
        "mongorestore": mongorestore_main,
        "docker-entrypoint.sh": entrypoint_main,
    }
    tool = tools.get(prog)
    if tool is None:
        print(f"mongo stand-in: unknown tool {prog!r} (known: {', '.join(tools)})", file=sys.stderr)
        return EXIT_UNSUPPORTED
    return tool(argv)


__all__ = ["VERSION", "main"]
