"""Client helper for scripts run inside the stand-in container (e.g. tier-3 test set-up).

    docker exec -i <mongo> python3 - <<'PY'
    from mongo_standin.client import root_client
    root_client().admin.command("createUser", ...)
    PY

``root_client()`` authenticates as the ``MONGO_INITDB_ROOT_USERNAME`` user with the password from
the container's environment (or ``..._FILE``), so no secret travels on a command line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import DEFAULT_PORT


def connect(
    username: str | None = None,
    password: str | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    auth_source: str = "admin",
    timeout_ms: int = 5000,
) -> Any:
    """A pymongo MongoClient for the local stand-in (authenticated when a username is given)."""
    from pymongo import MongoClient

    kwargs: dict[str, Any] = {
        "serverSelectionTimeoutMS": timeout_ms,
        "connectTimeoutMS": timeout_ms,
        "directConnection": True,
    }
    if username:
        kwargs.update(username=username, password=password, authSource=auth_source)
    return MongoClient(host, port, **kwargs)


def _env(name: str) -> str:
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text(encoding="utf-8").rstrip("\n")
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set in this container")
    return value


def root_client(**kwargs: Any) -> Any:
    """A client authenticated as the root user from MONGO_INITDB_ROOT_* in the environment."""
    return connect(_env("MONGO_INITDB_ROOT_USERNAME"), _env("MONGO_INITDB_ROOT_PASSWORD"), **kwargs)
