"""MongoDB users: converge the admin and application users to the desired state.

Pure pymongo against an already reachable server (the caller opens the tunnel). Idempotent:
`usersInfo` first, then `createUser` / `updateUser` only for what differs. A password cannot be
read back from MongoDB, so whether it changed is decided by the caller (the previous state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from deploy.transport import SshTarget, ssh_client, tunnel

ADMIN_DB = "admin"
TIMEOUT_MS = 10_000


class MongoUsersError(RuntimeError):
    pass


@dataclass(frozen=True, order=True)
class Role:
    role: str
    db: str

    def as_doc(self) -> dict[str, str]:
        return {"role": self.role, "db": self.db}


@dataclass(frozen=True)
class User:
    name: str
    roles: tuple[Role, ...]
    password: str = field(repr=False)


def connect(port: int, username: str, password: str, host: str = "127.0.0.1") -> MongoClient[Any]:
    """An authenticated admin client; fails within the timeouts with a clear message."""
    client: MongoClient[Any] = MongoClient(
        host,
        port,
        username=username,
        password=password,
        authSource=ADMIN_DB,
        directConnection=True,
        serverSelectionTimeoutMS=TIMEOUT_MS,
        connectTimeoutMS=TIMEOUT_MS,
        socketTimeoutMS=TIMEOUT_MS,
    )
    try:
        client.admin.command("ping")  # pymongo authenticates the connection first
    except OperationFailure as exc:
        client.close()
        if exc.code == 18:
            raise MongoUsersError(
                f"MongoDB refused the credentials of '{username}' (authentication failed)"
            ) from None
        raise MongoUsersError(f"MongoDB error as '{username}': {exc.details}") from None
    except PyMongoError as exc:
        client.close()
        raise MongoUsersError(f"MongoDB did not answer on port {port}: {exc}") from None
    return client


def existing(client: MongoClient[Any], name: str) -> tuple[Role, ...] | None:
    info = client.admin.command("usersInfo", {"user": name, "db": ADMIN_DB})
    users = info.get("users", [])
    if not users:
        return None
    return tuple(sorted(Role(r["role"], r["db"]) for r in users[0].get("roles", [])))


def converge(client: MongoClient[Any], user: User, password_changed: bool) -> str:
    """Create the user, or update its roles and/or password. Returns what it did."""
    roles = tuple(sorted(user.roles))
    current = existing(client, user.name)
    if current is None:
        client.admin.command(
            "createUser", user.name, pwd=user.password, roles=[r.as_doc() for r in roles]
        )
        return "created"
    update: dict[str, Any] = {}
    if current != roles:
        update["roles"] = [r.as_doc() for r in roles]
    if password_changed:
        update["pwd"] = user.password
    if not update:
        return "unchanged"
    client.admin.command("updateUser", user.name, **update)
    return "updated " + "+".join(sorted(k.replace("pwd", "password") for k in update))


def drop(client: MongoClient[Any], name: str) -> bool:
    if existing(client, name) is None:
        return False
    client.admin.command("dropUser", name)
    return True


def with_admin(
    port: int,
    admin: str,
    passwords: list[str],
    action: Callable[[MongoClient[Any], str], Any],
) -> Any:
    """Run `action(client, password_used)` as admin, trying each password in order.

    After a rotation the server still has the old admin password until it is updated, so the
    caller passes [old, new] (or [new] when nothing rotated).
    """
    last: MongoUsersError | None = None
    for password in passwords:
        try:
            client = connect(port, admin, password)
        except MongoUsersError as exc:
            last = exc
            continue
        try:
            return action(client, password)
        except OperationFailure as exc:
            raise MongoUsersError(f"MongoDB refused a user change: {exc.details}") from None
        finally:
            client.close()
    assert last is not None
    raise last


def over_ssh(target: SshTarget, mongo_port: int, run: Callable[[int], Any]) -> Any:
    """Call `run(local_port)` with the guest's loopback MongoDB port tunnelled over SSH."""
    with ssh_client(target) as client, tunnel(client, mongo_port) as port:
        return run(port)


def apply_users(
    target: SshTarget,
    mongo_port: int,
    admin: User,
    old_admin_password: str | None,
    users: list[tuple[User, bool]],
) -> dict[str, str]:
    """Converge the admin user (password rotation included) and then each (user, pwd changed)."""
    passwords = [p for p in (old_admin_password, admin.password) if p] or [admin.password]
    passwords = list(dict.fromkeys(passwords))

    def change(client: MongoClient[Any], used: str) -> dict[str, str]:
        done = {admin.name: converge(client, admin, password_changed=used != admin.password)}
        for user, changed in users:
            done[user.name] = converge(client, user, changed)
        return done

    return over_ssh(
        target, mongo_port, lambda port: with_admin(port, admin.name, passwords, change)
    )


def read_roles(
    target: SshTarget, mongo_port: int, admin: User, names: list[str]
) -> dict[str, tuple[Role, ...] | None]:
    def read(client: MongoClient[Any], _: str) -> dict[str, tuple[Role, ...] | None]:
        return {name: existing(client, name) for name in names}

    return over_ssh(
        target, mongo_port, lambda port: with_admin(port, admin.name, [admin.password], read)
    )


def drop_users(target: SshTarget, mongo_port: int, admin: User, names: list[str]) -> list[str]:
    def remove(client: MongoClient[Any], _: str) -> list[str]:
        return [name for name in names if drop(client, name)]

    return over_ssh(
        target, mongo_port, lambda port: with_admin(port, admin.name, [admin.password], remove)
    )
