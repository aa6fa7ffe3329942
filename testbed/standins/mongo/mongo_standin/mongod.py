"""The stand-in's ``mongod`` and the image's ``docker-entrypoint.sh`` (see tools.py for the
command-line shapes; ``tools.main`` dispatches to them on the program name)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import IO

from . import DEFAULT_DBPATH, DEFAULT_PORT, STANDIN_VERSION
from .storage import Storage
from .tools import EXIT_FAILURE, ToolError, _Parser
from .users import create_user


def _mongod_parser() -> _Parser:
    p = _Parser(prog="mongod", allow_abbrev=False)
    p.add_argument("--version", action="store_true")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--bind_ip", default="127.0.0.1")
    p.add_argument("--bind_ip_all", action="store_true")
    p.add_argument("--dbpath", default=DEFAULT_DBPATH)
    p.add_argument("--auth", action="store_true")  # always on once a user exists
    return p


def mongod_main(argv: list[str]) -> int:
    """``mongod``: serve until SIGTERM; ``--version`` names the stand-in."""
    args, unknown = _mongod_parser().parse_known_args(argv)
    if args.version:
        print(f"db version v{STANDIN_VERSION}")
        build = {
            "version": STANDIN_VERSION,
            "gitVersion": "smoker-infra-standin",
            "standin": "smoker-infra test STAND-IN for mongo:7.0, NOT MongoDB",
            "storageEngines": ["standin-json"],
        }
        print("Build Info: " + json.dumps(build, indent=4))
        return 0
    if unknown:
        print(
            json.dumps(
                {
                    "s": "W",
                    "c": "CONTROL",
                    "msg": "stand-in ignores options",
                    "attr": {"options": unknown},
                }
            ),
            flush=True,
        )
    dbpath = Path(args.dbpath)
    if not dbpath.is_dir():
        print(
            json.dumps(
                {
                    "s": "E",
                    "c": "STORAGE",
                    "msg": f"NonExistentPath: Data directory {dbpath} not found.",
                }
            ),
            flush=True,
        )
        return 100
    lock = open(dbpath / "mongod.lock", "a")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(
            json.dumps(
                {
                    "s": "E",
                    "c": "STORAGE",
                    "msg": "DBPathInUse: Unable to lock the lock "
                    f"file: {dbpath}/mongod.lock. Another mongod instance is already "
                    "running on the dbpath",
                }
            ),
            flush=True,
        )
        return 100
    from .network import serve
    from .server import log

    hosts = ["0.0.0.0"] if args.bind_ip_all else [h.strip() for h in args.bind_ip.split(",")]
    log(
        "CONTROL",
        "smoker-infra STAND-IN for MongoDB starting (this is NOT MongoDB)",
        version=STANDIN_VERSION,
        dbPath=str(dbpath),
        port=args.port,
        bindIp=hosts,
    )
    asyncio.run(serve(dbpath, hosts[0] if len(hosts) == 1 else hosts, args.port))
    return 0


def _env_secret(name: str) -> str | None:
    """``NAME`` or the content of the file named by ``NAME_FILE`` (as the real image)."""
    value = os.environ.get(name)
    path = os.environ.get(f"{name}_FILE")
    if value is not None and path:
        raise ToolError(f"both {name} and {name}_FILE are set (but are exclusive)")
    if path:
        return Path(path).read_text(encoding="utf-8").rstrip("\n")
    return value


def init_root_user(dbpath: Path, err: IO[str]) -> bool:
    """First start: create the MONGO_INITDB_ROOT_* user. Returns True if it created one."""
    user = _env_secret("MONGO_INITDB_ROOT_USERNAME")
    password = _env_secret("MONGO_INITDB_ROOT_PASSWORD")
    if bool(user) != bool(password):
        raise ToolError(
            "both MONGO_INITDB_ROOT_USERNAME and MONGO_INITDB_ROOT_PASSWORD "
            "must be set (or neither)"
        )
    dbpath.mkdir(parents=True, exist_ok=True)
    storage = Storage(dbpath)
    if not user or not storage.is_empty_on_disk():
        return False
    assert password is not None
    create_user(storage, "admin", user, password, [{"role": "root", "db": "admin"}])
    print(f"stand-in entrypoint: created root user {user!r} in admin (first start)", file=err)
    return True


def entrypoint_main(argv: list[str]) -> int:
    """``docker-entrypoint.sh``: the real image's first-start behaviour, then exec mongod."""
    args = list(argv) or ["mongod"]
    if args[0].startswith("-"):
        args = ["mongod", *args]
    if args[0] == "mongod" and not ({"--version", "--help", "-h"} & set(args)):
        parsed, _ = _mongod_parser().parse_known_args(args[1:])
        try:
            init_root_user(Path(parsed.dbpath), sys.stderr)
        except (ToolError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        if not any(a.startswith(("--bind_ip", "--bind-ip")) for a in args):
            args.append("--bind_ip_all")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONGO_INITDB_ROOT_PASS")}
        os.execvpe(args[0], args, env)
    os.execvp(args[0], args)
    return EXIT_FAILURE  # not reached
