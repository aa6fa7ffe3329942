"""Users and roles, kept where MongoDB keeps them: documents in ``admin.system.users``.

A user document: ``{_id: "<db>.<user>", userId: UUID, user, db, credentials: {SCRAM-SHA-1: ...,
SCRAM-SHA-256: ...}, roles: [{role, db}], customData?}``. Privileges are a coarse model of the
built-in roles: actions ``read``, ``write`` (includes creating/dropping collections), ``dbAdmin``
(dropDatabase), ``users`` (user management) on one database or on all of them, and ``cluster``.
"""

from __future__ import annotations

import uuid
from typing import Any

from bson.binary import Binary

from . import scram
from .storage import Storage, check_db_name

USERS_DB = "admin"
USERS_COLL = "system.users"

#: role -> actions on the role's own database.
DB_ROLES: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "readWrite": frozenset({"read", "write"}),
    "dbAdmin": frozenset({"dbAdmin"}),
    "userAdmin": frozenset({"users"}),
    "dbOwner": frozenset({"read", "write", "dbAdmin", "users"}),
}
#: role (only valid on admin) -> actions on every database.
ANY_DB_ROLES: dict[str, frozenset[str]] = {
    "readAnyDatabase": frozenset({"read"}),
    "readWriteAnyDatabase": frozenset({"read", "write"}),
    "userAdminAnyDatabase": frozenset({"users"}),
    "dbAdminAnyDatabase": frozenset({"dbAdmin"}),
    "backup": frozenset({"read"}),
    "restore": frozenset({"write", "users"}),
    "clusterAdmin": frozenset({"cluster"}),
    "clusterMonitor": frozenset({"cluster"}),
    "root": frozenset({"read", "write", "dbAdmin", "users", "cluster"}),
}


class UserError(Exception):
    """A user-management request MongoDB would refuse (with its error code)."""

    def __init__(self, message: str, code: int, code_name: str) -> None:
        super().__init__(message)
        self.code = code
        self.code_name = code_name


def _users(storage: Storage) -> list[dict[str, Any]]:
    return storage.docs(USERS_DB, USERS_COLL)


def any_user_exists(storage: Storage) -> bool:
    return bool(_users(storage))


def find_user(storage: Storage, db: str, name: str) -> dict[str, Any] | None:
    return next((u for u in _users(storage) if u["_id"] == f"{db}.{name}"), None)


def users_of(storage: Storage, db: str | None) -> list[dict[str, Any]]:
    """Users defined in ``db`` (all databases for None)."""
    return [u for u in _users(storage) if db is None or u["db"] == db]


def normalize_roles(roles: Any, db: str) -> list[dict[str, str]]:
    """``["readWrite", {"role": "root", "db": "admin"}]`` -> list of ``{role, db}``; validated."""
    if not isinstance(roles, list):
        raise UserError('"roles" must be an array', 14, "TypeMismatch")
    out: list[dict[str, str]] = []
    for role in roles:
        if isinstance(role, str):
            entry = {"role": role, "db": db}
        elif isinstance(role, dict) and isinstance(role.get("role"), str):
            entry = {"role": role["role"], "db": str(role.get("db", db))}
        else:
            raise UserError(f"invalid role specification {role!r}", 2, "BadValue")
        known = entry["role"] in DB_ROLES or (
            entry["role"] in ANY_DB_ROLES and entry["db"] == "admin"
        )
        if not known:
            raise UserError(
                f"Could not find role: {entry['role']}@{entry['db']}", 31, "RoleNotFound"
            )
        if entry not in out:
            out.append(entry)
    return out


def _mechanisms(requested: Any) -> tuple[str, ...]:
    if requested is None:
        return scram.MECHANISMS
    if not isinstance(requested, list) or not requested:
        raise UserError("mechanisms field must be a non-empty array", 2, "BadValue")
    for mech in requested:
        if mech not in scram.MECHANISMS:
            raise UserError(f"Unknown auth mechanism '{mech}'", 2, "BadValue")
    return tuple(requested)


def _check_password(pwd: Any) -> str:
    if not isinstance(pwd, str):
        raise UserError("Must provide a 'pwd' field for all user documents", 2, "BadValue")
    if not pwd:
        raise UserError("User passwords must not be empty", 2, "BadValue")
    return pwd


def create_user(
    storage: Storage,
    db: str,
    name: str,
    pwd: Any,
    roles: Any,
    mechanisms: Any = None,
    custom_data: Any = None,
) -> dict[str, Any]:
    """Add a user (SCRAM credentials only, never the password) and persist admin."""
    check_db_name(db)
    if not isinstance(name, str) or not name:
        raise UserError("User name must be a non-empty string", 2, "BadValue")
    if find_user(storage, db, name) is not None:
        raise UserError(f'User "{name}@{db}" already exists', 51003, "Location51003")
    doc: dict[str, Any] = {
        "_id": f"{db}.{name}",
        "userId": Binary(uuid.uuid4().bytes, 4),
        "user": name,
        "db": db,
        "credentials": scram.make_credentials(name, _check_password(pwd), _mechanisms(mechanisms)),
        "roles": normalize_roles(roles, db),
    }
    if custom_data is not None:
        doc["customData"] = custom_data
    storage.create_collection(USERS_DB, USERS_COLL).append(doc)
    storage.flush(USERS_DB)
    return doc


def update_user(
    storage: Storage,
    db: str,
    name: str,
    pwd: Any = None,
    roles: Any = None,
    mechanisms: Any = None,
    custom_data: Any = None,
) -> None:
    """Change a user's password (new salt) and/or roles; persists admin."""
    user = find_user(storage, db, name)
    if user is None:
        raise UserError(f'Could not find user "{name}" for db "{db}"', 11, "UserNotFound")
    if pwd is not None:
        user["credentials"] = scram.make_credentials(
            name, _check_password(pwd), _mechanisms(mechanisms)
        )
    if roles is not None:
        user["roles"] = normalize_roles(roles, db)
    if custom_data is not None:
        user["customData"] = custom_data
    storage.flush(USERS_DB)


def drop_user(storage: Storage, db: str, name: str) -> None:
    user = find_user(storage, db, name)
    if user is None:
        raise UserError(f'Could not find user "{name}" for db "{db}"', 11, "UserNotFound")
    _users(storage).remove(user)
    storage.flush(USERS_DB)


def actions_on(storage: Storage, user_ref: tuple[str, str] | None, db: str) -> frozenset[str]:
    """Actions the authenticated user (``(db, name)``) holds on database ``db``."""
    if user_ref is None:
        return frozenset()
    user = find_user(storage, *user_ref)
    if user is None:  # dropped since it authenticated
        return frozenset()
    actions: set[str] = set()
    for role in user["roles"]:
        if role["db"] == "admin" and role["role"] in ANY_DB_ROLES:
            actions |= ANY_DB_ROLES[role["role"]]
        elif role["db"] == db and role["role"] in DB_ROLES:
            actions |= DB_ROLES[role["role"]]
    return frozenset(actions)


def public_view(user: dict[str, Any], show_credentials: bool = False) -> dict[str, Any]:
    """A user as usersInfo shows it (credentials only on request)."""
    out = {
        "_id": user["_id"],
        "userId": user["userId"],
        "user": user["user"],
        "db": user["db"],
        "roles": user["roles"],
        "mechanisms": sorted(user["credentials"]),
    }
    if "customData" in user:
        out["customData"] = user["customData"]
    if show_credentials:
        out["credentials"] = user["credentials"]
    return out
