"""The MongoUsers dynamic provider called directly, as the Pulumi engine would (no SSH here)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from components import mongo_users as provider_module
from components.mongo_users import MongoUsersProvider

PROPS: dict[str, Any] = {
    "host": "10.20.0.20",
    "sshUser": "root",
    "sshPort": 22,
    "hostKey": "",
    "privateKey": "KEY",
    "mongoPort": 27017,
    "adminUser": "admin",
    "adminPassword": "admin-pass-0123456789",
    "users": [
        {
            "name": "smartsmoker",
            "roles": [{"role": "readWrite", "db": "smartsmoker"}],
            "password": "app-pass-0123456789",
        }
    ],
}


def with_users(**changes: Any) -> dict[str, Any]:
    return {**PROPS, "users": [{**PROPS["users"][0], **changes}]}


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    recorded: list[tuple[str, tuple[Any, ...]]] = []

    def fake(name: str, result: Any) -> Any:
        def record(*args: Any) -> Any:
            recorded.append((name, args))
            return result

        return record

    monkeypatch.setattr(
        provider_module.mongo_users, "apply_users", fake("apply", {"smartsmoker": "ok"})
    )
    monkeypatch.setattr(provider_module.mongo_users, "drop_users", fake("drop", []))
    monkeypatch.setattr(provider_module.mongo_users, "read_roles", fake("read", {}))
    return recorded


def test_provider_holds_no_state_and_pickles_small() -> None:
    provider = MongoUsersProvider()
    assert vars(provider) == {}
    assert b"admin-pass" not in pickle.dumps(provider)


def test_check_names_missing_inputs() -> None:
    result = MongoUsersProvider().check({}, {**PROPS, "adminPassword": ""})
    assert [f.property for f in result.failures] == ["adminPassword"]


@pytest.mark.parametrize(
    ("news", "changes"),
    [
        (PROPS, False),
        # where to reach it is state too: refresh and later updates must use the new one
        ({**PROPS, "host": "smoker.tailnet"}, True),
        ({**PROPS, "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRebuiltGuestKey"}, True),
        ({**PROPS, "privateKey": "rotated-private-key"}, True),
        ({**PROPS, "sshPort": 2222}, True),
        ({**PROPS, "adminPassword": "rotated-admin-0123456789"}, True),
        (with_users(password="rotated-app-0123456789"), True),
        (with_users(roles=[{"role": "read", "db": "smartsmoker"}]), True),
    ],
)
def test_diff_is_explicit(news: dict[str, Any], changes: bool) -> None:
    diff = MongoUsersProvider().diff("id", PROPS, news)
    assert diff.changes is changes and diff.replaces == []


def test_create_sets_every_password(calls: list[tuple[str, tuple[Any, ...]]]) -> None:
    result = MongoUsersProvider().create(PROPS)
    (name, args), *_ = calls
    target, port, admin, old_admin, users = args
    assert (name, port, admin.name, old_admin) == ("apply", 27017, "admin", None)
    assert [(u.name, changed) for u, changed in users] == [("smartsmoker", True)]
    assert target.host == "10.20.0.20" and result.outs["result"] == {"smartsmoker": "ok"}


def test_update_rotates_only_what_changed(calls: list[tuple[str, tuple[Any, ...]]]) -> None:
    news = {**PROPS, "adminPassword": "rotated-admin-0123456789"}
    MongoUsersProvider().update("id", PROPS, news)
    (_, (_, _, admin, old_admin, users)), *_ = calls
    assert admin.password == "rotated-admin-0123456789" and old_admin == PROPS["adminPassword"]
    assert [changed for _, changed in users] == [False]  # the app password did not change


def test_a_connection_change_updates_the_state_without_touching_mongodb(
    calls: list[tuple[str, tuple[Any, ...]]],
) -> None:
    olds = {**PROPS, "result": {"smartsmoker": "ok"}}
    news = {**PROPS, "host": "smoker.tailnet", "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIX"}
    outs = MongoUsersProvider().update("id", olds, news).outs
    assert calls == []  # no connection at all
    assert outs["host"] == "smoker.tailnet" and outs["hostKey"] == news["hostKey"]
    assert outs["result"] == {"smartsmoker": "ok"}
    MongoUsersProvider().read("id", outs)  # a refresh after it uses the new connection
    (name, (target, *_)), *_ = calls
    assert name == "read" and target.host == "smoker.tailnet"
    assert target.host_key == news["hostKey"]


def test_removed_user_is_dropped_but_never_the_admin(
    calls: list[tuple[str, tuple[Any, ...]]],
) -> None:
    MongoUsersProvider().update("id", PROPS, {**PROPS, "users": []})
    assert calls[-1][0] == "drop" and calls[-1][1][3] == ["smartsmoker"]


def test_delete_drops_no_user(calls: list[tuple[str, tuple[Any, ...]]]) -> None:
    """A rename without an alias, a refactor or the guest going away deletes the resource:
    that must never drop the user the backend logs in with."""
    MongoUsersProvider().delete("id", PROPS)
    assert calls == []
