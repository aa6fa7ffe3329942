"""The GitHub API stand-in answers the way the runner guest's scripts expect (on loopback)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from testbed.standins.github import GitHubStandin

SCOPE = "repos/o/r"
PAT = "ghp_standinUnitTest"


def call(url: str, method: str = "GET", auth: str = "", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if auth:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None


@pytest.fixture
def github() -> Any:
    with GitHubStandin("127.0.0.1", SCOPE, {PAT}) as standin:
        yield standin


def test_minting_needs_the_pat(github: GitHubStandin) -> None:
    url = f"{github.url}/{SCOPE}/actions/runners/registration-token"
    assert call(url, "POST", "Bearer wrong")[0] == 401
    status, body = call(url, "POST", f"Bearer {PAT}")
    assert status == 201 and body["token"].startswith("STANDIN")
    assert call(f"{github.url}/orgs/o/actions/runners/registration-token", "POST")[0] == 404


def test_register_list_heartbeat_delete(github: GitHubStandin) -> None:
    minted = call(
        f"{github.url}/{SCOPE}/actions/runners/registration-token", "POST", f"Bearer {PAT}"
    )
    register = f"{github.url}/standin/register"
    body = {"token": minted[1]["token"], "name": "n", "labels": "a,b", "url": "u", "replace": False}
    status, runner = call(register, "POST", body=body)
    assert status == 201
    assert call(register, "POST", body=body)[0] == 401  # a minted token registers once
    listed = call(f"{github.url}/{SCOPE}/actions/runners?name=n", auth=f"Bearer {PAT}")[1]
    assert [r["name"] for r in listed["runners"]] == ["n"]
    heartbeat = f"{github.url}/standin/heartbeat"
    assert call(heartbeat, "POST", f"RunnerCredential {runner['credential']}", {})[0] == 200
    deleted = call(
        f"{github.url}/{SCOPE}/actions/runners/{runner['id']}", "DELETE", f"Bearer {PAT}"
    )
    assert deleted[0] == 204
    assert call(heartbeat, "POST", f"RunnerCredential {runner['credential']}", {})[0] == 404
    assert [r.token_kind for r in github.registrations()] == ["minted"]


def test_one_time_tokens_and_replace(github: GitHubStandin) -> None:
    github.add_one_time_token("one")
    github.add_one_time_token("two")
    register = f"{github.url}/standin/register"
    base = {"name": "n", "labels": "x", "url": "u"}
    assert call(register, "POST", body={**base, "token": "one", "replace": False})[0] == 201
    assert call(register, "POST", body={**base, "token": "two", "replace": False})[0] == 409
    assert call(register, "POST", body={**base, "token": "two", "replace": True})[0] == 201
    assert len(github.runners()) == 1


def test_files_are_served(github: GitHubStandin) -> None:
    url = github.serve_file("a.tar.gz", b"data")
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.read() == b"data"
