"""Tier 3 through the SDK's provider host: the dynamic resources deploy for real when driven as
the engine drives them (`python -m pulumi.dynamic` over gRPC).

The inputs are the program's own wire inputs for the dev stack's `dev-cloud-release` and
`dev-cloud-mongo-users`, with the test guest's connection and the STAND-IN releases substituted
(as `release_env` builds them), so the shape is exactly what the program registers. Every call
goes Check -> Diff -> Create/Update with the engine's conversions; state is what the engine
would record (a failed Update leaves the previous state). The scenarios run in order on one
guest: MongoDB users, release N, N+1, the broken N+2 (rolled back), a policy-only update,
refresh/delete, password rotation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from components.release import target_of
from deploy.mongo_users import connect, over_ssh
from rendering import app
from rendering.files import app_files_plan
from testbed.harness import Guest
from tests.sdk.provider_host import (
    ProviderError,
    ProviderHost,
    dynamic_resource,
    engine_inputs,
    substitute,
)
from tests.tier3.app_env import SECRETS, user_props
from tests.tier3.baseline_env import Baselined, apply_plan, guest_stack_config, plan, served_crun
from tests.tier3.release_env import (
    N1,
    N2,
    N,
    Releases,
    connection_props,
    live_containers,
    prepare_guest,
    release_config,
    release_props,
)
from tools.synth import Resource, synthesize

pytestmark = pytest.mark.tier3

RELEASE = "dev-cloud-release"
USERS = "dev-cloud-mongo-users"
PROJECT = "smart-smoker-dev"
APP_DIR = "/opt/smart-smoker-dev"
LEDGER = "/var/log/smart-smoker/deployments.jsonl"


@dataclass
class Managed:
    """One resource as the engine tracks it: its URN, the program's wire inputs, and the
    recorded ID, inputs and state."""

    resource: Resource
    id: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def urn(self) -> str:
        return str(self.resource.urn)

    def wire(self, **values: Any) -> dict[str, Any]:
        return substitute(self.resource.wire_inputs, **values)


@dataclass
class Site:
    env: Baselined
    releases: Releases
    host: ProviderHost
    release: Managed
    users: Managed
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def guest(self) -> Guest:
        return self.env.guest

    def run(self, cmd: str, **kwargs: Any) -> Any:
        return self.guest.run(cmd, **kwargs)

    def release_wire(self, version: str) -> dict[str, Any]:
        cfg = release_config(self.env.cfg, self.releases, version)
        return self.release.wire(**release_props(self.env, cfg, SECRETS))

    def apply(self, managed: Managed, wire: dict[str, Any]) -> dict[str, Any]:
        """One `pulumi up` step: Check, then Create or Diff + Update; returns the new state
        (the recorded state is only replaced when the provider succeeds)."""
        news, failures = self.host.check(managed.urn, managed.inputs, engine_inputs(wire, False))
        assert failures == []
        if not managed.id:
            managed.id, state = self.host.create(managed.urn, news)
        else:
            diff = self.host.diff(managed.urn, managed.id, managed.state, news, managed.inputs)
            assert diff.changes and diff.replaces == [] and not diff.delete_before_replace
            state = self.host.update(
                managed.urn, managed.id, managed.state, news, old_inputs=managed.inputs
            )
        managed.inputs, managed.state = news, state
        return state

    def current(self) -> str:
        return str(self.run(f"readlink {APP_DIR}/current").stdout.strip().rsplit("/", 1)[-1])

    def live_images(self) -> dict[str, str]:
        return {svc: image for svc, (_, image) in live_containers(self.guest, PROJECT).items()}

    def ledger(self) -> list[dict[str, Any]]:
        out = self.run(f"cat {LEDGER}").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def ssh_logins(self) -> int:
        out = self.guest.exec("journalctl -u ssh --no-pager -o cat", check=False).stdout
        return int(out.count("Accepted publickey"))

    def mongo_as(self, user: str, password: str) -> Any:
        def ping(port: int) -> Any:
            client = connect(port, user, password)
            try:
                return client[app.MONGO_APP_DATABASE].command("ping")["ok"]
            finally:
                client.close()

        return over_ssh(target_of(connection_props(self.guest)), app.MONGO_PORT, ping)


@pytest.fixture(scope="module")
def site(guest_factory: Callable[..., Guest], releases: Releases) -> Iterator[Site]:
    synthesis = synthesize("dev")
    release = Managed(dynamic_resource(synthesis.resources, RELEASE))
    users = Managed(dynamic_resource(synthesis.resources, USERS))
    guest = guest_factory(hostname="sdk-guest")
    with served_crun() as crun:
        cfg, spec = guest_stack_config(guest, crun)
        env = Baselined(guest, cfg, spec, apply_plan(guest, plan(cfg, spec)))
    prepare_guest(env, releases)
    apply_plan(guest, app_files_plan(release_config(cfg, releases, N), spec, SECRETS))
    with ProviderHost() as host:
        yield Site(env, releases, host, release, users)


def test_1_mongo_users_are_created_through_the_host(site: Site) -> None:
    state = site.apply(site.users, site.users.wire(**user_props(site.env, SECRETS)))
    assert site.users.id == f"mongo-users-{site.guest.host}"
    assert state["result"] == {"admin": "unchanged", "smartsmoker": "created"}
    assert site.mongo_as(app.MONGO_APP_USER, SECRETS.mongo_app_password) == 1.0


def test_2_create_deploys_release_n(site: Site) -> None:
    state = site.apply(site.release, site.release_wire(N))
    site.ids[N] = state["releaseId"]
    assert site.release.id == f"release-{site.guest.host}-{PROJECT}"
    assert site.current() == site.ids[N]
    assert site.live_images() == site.releases.digests(N) == state["digests"]
    assert state["backupId"].startswith("smartsmoker-predeploy-") and state["deployedAt"]
    record = site.ledger()[-1]
    assert (record["outcome"], record["release"], record["previous"]) == (
        "deployed",
        site.ids[N],
        None,
    )
    assert record["backup"]["id"] == state["backupId"]
    assert site.run("curl -fsS http://127.0.0.1:80/api/ready").returncode == 0


def test_3_update_deploys_n1(site: Site) -> None:
    state = site.apply(site.release, site.release_wire(N1))
    site.ids[N1] = state["releaseId"]
    assert site.ids[N1] != site.ids[N]
    assert site.current() == site.ids[N1]
    assert site.live_images() == site.releases.digests(N1) == state["digests"]
    assert site.ledger()[-1]["outcome"] == "deployed"


def test_4_a_broken_n2_fails_the_update_and_n1_stays_live(site: Site) -> None:
    before = dict(site.release.state)
    with pytest.raises(ProviderError) as raised:
        site.apply(site.release, site.release_wire(N2))
    message = raised.value.details()
    assert "DeployError" in message and "unhealthy" in message
    assert f"Rolled back: release {site.ids[N1]} is live and verified" in message
    assert site.release.state == before  # the engine keeps the previous state
    assert site.current() == site.ids[N1]
    assert site.live_images() == site.releases.digests(N1)
    record = site.ledger()[-1]
    assert record["outcome"] == "rolled-back" and record["rollback"]["to"] == site.ids[N1]


def test_5_a_policy_only_update_is_recorded_without_a_connection(site: Site) -> None:
    release = site.release
    before = dict(release.state)
    logins = site.ssh_logins()
    wire = substitute(site.release_wire(N1), lockLeaseSeconds=45, verifyTimeoutSeconds=120)
    state = site.apply(release, wire)
    assert site.ssh_logins() == logins
    assert state["lockLeaseSeconds"] == 45
    outputs = ("releaseId", "digests", "deployedAt", "backupId")
    assert {k: state[k] for k in outputs} == {k: before[k] for k in outputs}
    assert state["releaseId"] == site.ids[N1] == site.current()


def test_6_unchanged_inputs_refresh_and_delete_touch_nothing(site: Site) -> None:
    release = site.release
    logins = site.ssh_logins()
    news, failures = site.host.check(release.urn, release.inputs, release.inputs)
    assert failures == [] and news == release.inputs
    assert not site.host.diff(release.urn, release.id, release.state, news, release.inputs).changes
    assert site.host.read(release.urn, release.id, release.state) == (release.id, release.state)
    site.host.delete(release.urn, release.id, release.state)
    assert site.ssh_logins() == logins  # no connection at all
    assert site.current() == site.ids[N1]  # removing the resource leaves the services running
    assert site.live_images() == site.releases.digests(N1)


def test_7_rotating_the_app_password_through_the_host(site: Site) -> None:
    rotated = "rotated-Pa55@word#9876543210"
    props = user_props(site.env, SECRETS)
    props["users"] = [{**u, "password": rotated} for u in props["users"]]
    state = site.apply(site.users, site.users.wire(**props))
    assert state["result"]["smartsmoker"].startswith("updated")
    assert site.mongo_as(app.MONGO_APP_USER, rotated) == 1.0
    with pytest.raises(Exception, match=r"(?i)auth"):
        site.mongo_as(app.MONGO_APP_USER, SECRETS.mongo_app_password)
    _, read = site.host.read(site.users.urn, site.users.id, site.users.state)
    assert read["users"][0]["roles"] == [{"role": "readWrite", "db": app.MONGO_APP_DATABASE}]
