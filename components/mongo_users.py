"""MongoUsers: a dynamic resource for the MongoDB admin and application users of a cloud guest.

The provider converts Pulumi's property dicts to the deploy layer's types and back; the SSH
tunnel and pymongo live in `deploy.mongo_users`. It keeps nothing on the instance (no clients,
no credentials), implements `update` (rotation; a change of connection only updates the state
without touching MongoDB), `read` (drift), and a `delete` that drops nothing: removing the
resource (a rename without an alias, a refactor, the guest going away) must never drop a user
the backend still logs in with. A user is dropped only by an update that removes it from
`users`.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from components.release import UNTYPED_DYNAMIC_ALIAS
from deploy import mongo_users
from deploy.transport import SshTarget

SECRET_OUTPUTS = ["adminPassword", "users", "privateKey"]
# How to reach MongoDB; a change of these alone touches nothing in it.
CONNECTION_KEYS = ("host", "sshUser", "sshPort", "hostKey", "privateKey", "mongoPort")
USER_KEYS = ("adminUser", "adminPassword", "users")


def _target(props: dict[str, Any]) -> SshTarget:
    return SshTarget(
        host=props["host"],
        user=props["sshUser"],
        private_key=props["privateKey"],
        port=int(props.get("sshPort", 22)),
        host_key=props.get("hostKey") or "",
    )


def _admin(props: dict[str, Any]) -> mongo_users.User:
    return mongo_users.User(
        props["adminUser"], (mongo_users.Role("root", "admin"),), props["adminPassword"]
    )


def _users(props: dict[str, Any]) -> list[mongo_users.User]:
    return [
        mongo_users.User(
            u["name"],
            tuple(mongo_users.Role(r["role"], r["db"]) for r in u["roles"]),
            u["password"],
        )
        for u in props["users"]
    ]


class MongoUsersProvider(ResourceProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = [
            CheckFailure(key, f"{key} is required")
            for key in ("host", "sshUser", "privateKey", "adminUser", "adminPassword", "users")
            if not news.get(key)
        ]
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [key for key in (*CONNECTION_KEYS, *USER_KEYS) if olds.get(key) != news.get(key)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        done = mongo_users.apply_users(
            _target(props),
            int(props["mongoPort"]),
            _admin(props),
            None,
            [(user, True) for user in _users(props)],  # a password we cannot read: set it
        )
        return CreateResult(f"mongo-users-{props['host']}", {**props, "result": done})

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        if all(olds.get(key) == news.get(key) for key in USER_KEYS):
            # a new key, host key, address or port: later refreshes use it; MongoDB is untouched
            return UpdateResult({**news, "result": olds.get("result")})
        old_users = {u.name: u for u in _users(olds)}
        pairs = [
            (u, u.name not in old_users or old_users[u.name].password != u.password)
            for u in _users(news)
        ]
        done = mongo_users.apply_users(
            _target(news), int(news["mongoPort"]), _admin(news), olds.get("adminPassword"), pairs
        )
        removed = [name for name in old_users if name not in {u.name for u in _users(news)}]
        if removed:
            mongo_users.drop_users(_target(news), int(news["mongoPort"]), _admin(news), removed)
            done.update({name: "dropped" for name in removed})
        return UpdateResult({**news, "result": done})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Refresh: report the roles MongoDB has now, so drift shows in the next diff."""
        names = [u.name for u in _users(props)]
        found = mongo_users.read_roles(
            _target(props), int(props["mongoPort"]), _admin(props), names
        )
        users = [
            {**u, "roles": [r.as_doc() for r in (found.get(u["name"]) or ())]}
            for u in props["users"]
        ]
        return ReadResult(id_, {**props, "users": users})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Drops nothing (see the module docstring): the users stay with the data they guard."""


class MongoUsers(Resource, module="app", name="MongoUsers"):
    """The admin (`root`) and application users of one guest's MongoDB."""

    result: pulumi.Output[dict[str, str]]

    def __init__(
        self,
        name: str,
        props: dict[str, Any],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        opts = pulumi.ResourceOptions.merge(
            opts,
            pulumi.ResourceOptions(
                additional_secret_outputs=SECRET_OUTPUTS, aliases=[UNTYPED_DYNAMIC_ALIAS]
            ),
        )
        super().__init__(MongoUsersProvider(), name, {"result": None, **props}, opts)
