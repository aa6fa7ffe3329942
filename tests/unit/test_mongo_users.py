"""MongoDB user management against a wire-protocol mock (mockupdb): the exact commands sent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mockupdb import MockupDB, going
from pymongo import MongoClient

from deploy import mongo_users
from deploy.mongo_users import Role, User

APP = User("smartsmoker", (Role("readWrite", "smartsmoker"),), "app-secret-1")


@pytest.fixture()
def server() -> Iterator[MockupDB]:
    mock = MockupDB(auto_ismaster={"maxWireVersion": 21})
    mock.run()
    yield mock
    mock.stop()


@pytest.fixture()
def client(server: MockupDB) -> Iterator[MongoClient[Any]]:
    c: MongoClient[Any] = MongoClient(
        server.uri, directConnection=True, serverSelectionTimeoutMS=5000
    )
    yield c
    c.close()


def receive(server: MockupDB, command: str) -> Any:
    request = server.receives()
    assert request.command_name == command, f"expected {command}, got {request}"
    return request


def answer_users_info(server: MockupDB, roles: list[dict[str, str]] | None) -> None:
    request = receive(server, "usersInfo")
    assert request["usersInfo"] == {"user": "smartsmoker", "db": "admin"}
    users = [] if roles is None else [{"user": "smartsmoker", "db": "admin", "roles": roles}]
    request.ok(users=users)


def test_missing_user_is_created_with_exact_roles(
    server: MockupDB, client: MongoClient[Any]
) -> None:
    with going(mongo_users.converge, client, APP, False) as result:
        answer_users_info(server, None)
        create = receive(server, "createUser")
        assert create["createUser"] == "smartsmoker"
        assert create["pwd"] == "app-secret-1"
        assert create["roles"] == [{"role": "readWrite", "db": "smartsmoker"}]
        assert create["$db"] == "admin"
        create.ok()
    assert result() == "created"


def test_unchanged_user_sends_no_change_command(server: MockupDB, client: MongoClient[Any]) -> None:
    with going(mongo_users.converge, client, APP, False) as result:
        answer_users_info(server, [{"role": "readWrite", "db": "smartsmoker"}])
    assert result() == "unchanged"
    # nothing else was sent: the next command the server sees is our probe
    with going(client.admin.command, "ping"):
        receive(server, "ping").ok()


def test_rotation_updates_only_the_password(server: MockupDB, client: MongoClient[Any]) -> None:
    rotated = User(APP.name, APP.roles, "app-secret-2")
    with going(mongo_users.converge, client, rotated, True) as result:
        answer_users_info(server, [{"role": "readWrite", "db": "smartsmoker"}])
        update = receive(server, "updateUser")
        assert update["updateUser"] == "smartsmoker" and update["pwd"] == "app-secret-2"
        assert "roles" not in update
        update.ok()
    assert result() == "updated password"


def test_role_drift_is_repaired(server: MockupDB, client: MongoClient[Any]) -> None:
    with going(mongo_users.converge, client, APP, False) as result:
        answer_users_info(server, [{"role": "read", "db": "smartsmoker"}])
        update = receive(server, "updateUser")
        assert update["roles"] == [{"role": "readWrite", "db": "smartsmoker"}]
        assert "pwd" not in update
        update.ok()
    assert result() == "updated roles"


def test_admin_authentication_failure_is_a_clear_error(server: MockupDB) -> None:
    host, port = server.address
    with (
        pytest.raises(mongo_users.MongoUsersError, match="refused the credentials of 'admin'"),
        going(mongo_users.connect, port, "admin", "wrong-password", host),
    ):
        receive(server, "saslStart").command_err(18, "Authentication failed.")


def test_drop_only_when_present(server: MockupDB, client: MongoClient[Any]) -> None:
    with going(mongo_users.drop, client, "smartsmoker") as result:
        answer_users_info(server, [{"role": "readWrite", "db": "smartsmoker"}])
        drop = receive(server, "dropUser")
        assert drop["dropUser"] == "smartsmoker"
        drop.ok()
    assert result() is True
