"""Tier 3: safe deploys on a baselined test guest, end to end through the Release provider class
(called as Pulumi calls it) and the operator CLI, with STAND-IN releases from a STAND-IN registry:
N (healthy), N+1 (healthy), N+2 (backend never healthy).

The scenarios run in order on one guest, each starting from the state the previous one left.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import deploy.engine as engine_module
from components.mongo_users import MongoUsersProvider
from components.release import ReleaseProvider, target_of
from deploy import cli
from deploy.engine import DeployError, RollbackError
from deploy.lock import LockHeldError
from deploy.mongo_users import connect, over_ssh
from deploy.transport import SshTarget, SshTransport, ssh_client
from rendering import app
from rendering.files import app_files_plan
from testbed.harness import Guest
from testbed.harness.engine import poll_until
from tests.tier3.app_env import SECRETS, user_props
from tests.tier3.baseline_env import Baselined, apply_plan, guest_stack_config, plan, served_crun
from tests.tier3.release_env import (
    BACKEND,
    N1,
    N2,
    N,
    Releases,
    connection_props,
    deploy,
    host_key,
    prepare_guest,
    release_config,
    release_props,
)

pytestmark = pytest.mark.tier3

PROJECT = "smart-smoker-dev"
APP_DIR = "/opt/smart-smoker-dev"
LEDGER = "/var/log/smart-smoker/deployments.jsonl"


@dataclass
class Site:
    env: Baselined
    releases: Releases
    state: dict[str, Any] = field(default_factory=dict)  # the Release state Pulumi would keep
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def guest(self) -> Guest:
        return self.env.guest

    def props(self, version: str, **overrides: Any) -> dict[str, Any]:
        cfg = release_config(self.env.cfg, self.releases, version)
        return release_props(self.env, cfg, SECRETS, **overrides)

    def run(self, cmd: str, **kwargs: Any) -> Any:
        return self.guest.run(cmd, **kwargs)

    def containers(self) -> dict[str, tuple[str, str]]:
        """service -> (container id, image) of the running containers of the live release:
        MongoDB in the guest's project, backend and frontend in the release's own (behind
        the proxy); other releases' projects must have none."""
        projects = {PROJECT, f"{PROJECT}-{self.current().lower()}", f"{PROJECT}-proxy"}
        out = self.run(
            "docker ps -q --filter label=com.docker.compose.project | xargs -r docker inspect -f "
            '\'{{index .Config.Labels "com.docker.compose.project"}} '
            '{{index .Config.Labels "com.docker.compose.service"}} {{.Id}} {{.Config.Image}}\''
        ).stdout
        rows = [line.split() for line in out.splitlines() if line.strip()]
        assert {r[0] for r in rows} <= projects, rows  # no other release runs
        return {r[1]: (r[2], r[3]) for r in rows if r[1] != "proxy"}

    def live_images(self) -> dict[str, str]:
        return {service: image for service, (_, image) in self.containers().items()}

    def current(self) -> str:
        return self.run(f"readlink {APP_DIR}/current").stdout.strip().rsplit("/", 1)[-1]

    def release_dirs(self) -> list[str]:
        return self.run(f"ls -A {APP_DIR}/releases").stdout.split()

    def snapshot(self) -> tuple[Any, ...]:
        return (self.current(), self.containers(), self.release_dirs())

    def ledger(self) -> list[dict[str, Any]]:
        out = self.run(f"cat {LEDGER}").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def target(self) -> SshTarget:
        return target_of(connection_props(self.guest))

    def cli(self, *args: str) -> tuple[int, str, str]:
        """`python -m deploy --stack dev --guest dev-cloud ARGS` against the test guest."""
        argv = [
            *("--stack", "dev", "--guest", "dev-cloud", "--host", self.guest.host),
            *("--host-key", host_key(self.guest), "--ssh-key", str(self.guest.key_path)),
            *args,
        ]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
        return code, out.getvalue(), err.getvalue()

    def write_cook(self, n: int) -> None:
        def write(port: int) -> None:
            client = connect(port, app.MONGO_APP_USER, SECRETS.mongo_app_password)
            try:
                client[app.MONGO_APP_DATABASE]["cooks"].insert_one({"n": n})
            finally:
                client.close()

        over_ssh(self.target(), app.MONGO_PORT, write)

    def cooks(self) -> list[int]:
        def read(port: int) -> list[int]:
            client = connect(port, app.MONGO_APP_USER, SECRETS.mongo_app_password)
            try:
                docs = client[app.MONGO_APP_DATABASE]["cooks"].find({}, {"_id": 0})
                return sorted(d["n"] for d in docs)
            finally:
                client.close()

        result: list[int] = over_ssh(self.target(), app.MONGO_PORT, read)
        return result

    def ssh_logins(self) -> int:
        """Accepted SSH logins so far (counted from outside, through `docker exec`)."""
        out = self.guest.exec("journalctl -u ssh --no-pager -o cat", check=False).stdout
        return out.count("Accepted publickey")


@pytest.fixture(scope="module")
def site(guest_factory: Callable[..., Guest], releases: Releases) -> Iterator[Site]:
    guest = guest_factory(hostname="deploy-guest")
    with served_crun() as crun:
        cfg, spec = guest_stack_config(guest, crun)
        env = Baselined(guest, cfg, spec, apply_plan(guest, plan(cfg, spec)))
    prepare_guest(env, releases)
    first = release_config(cfg, releases, N)
    apply_plan(guest, app_files_plan(first, spec, SECRETS))
    MongoUsersProvider().create(user_props(env, SECRETS))
    yield Site(env, releases)


def test_1_first_deploy_of_n(site: Site) -> None:
    site.state = deploy(site.props(N))
    site.ids[N] = site.state["releaseId"]
    assert site.current() == site.ids[N]
    assert site.live_images() == site.releases.digests(N) == site.state["digests"]
    assert site.run("curl -fsS http://127.0.0.1:80/api/ready").returncode == 0
    record = site.ledger()[-1]
    assert (record["outcome"], record["release"], record["previous"]) == (
        "deployed",
        site.ids[N],
        None,
    )
    assert record["backup"]["id"] == site.state["backupId"]
    manifest = json.loads(site.run(f"cat {APP_DIR}/current/manifest.json").stdout)
    assert manifest["backup"]["sha256"] == record["backup"]["sha256"]
    assert "@sha256:" in site.run(f"grep 'image:' {APP_DIR}/current/compose.yaml").stdout


def test_2_upgrade_to_n1_keeps_mongo_and_n(site: Site) -> None:
    mongo_before = site.containers()["mongo"][0]
    started = site.run(f"docker inspect -f '{{{{.State.StartedAt}}}}' {mongo_before}").stdout
    site.state = deploy(site.props(N1), site.state)
    site.ids[N1] = site.state["releaseId"]
    assert site.live_images() == site.releases.digests(N1)
    assert site.containers()["mongo"][0] == mongo_before  # not recreated
    assert (
        site.run(f"docker inspect -f '{{{{.State.StartedAt}}}}' {mongo_before}").stdout == started
    )
    assert site.ids[N] in site.release_dirs()  # kept for a rollback, with its images
    for image in site.releases.digests(N).values():
        site.run(f"docker image inspect {shlex.quote(image)} >/dev/null")


def test_3_n2_fails_verification_and_n1_is_back_exactly(site: Site) -> None:
    site.write_cook(1)
    before = site.state
    with pytest.raises(DeployError) as raised:
        deploy(site.props(N2), before)
    message = str(raised.value)
    assert "unhealthy" in message
    assert f"Rolled back: release {site.ids[N1]} is live and verified" in message
    assert LEDGER in message and "smartsmoker-predeploy-" in message
    assert site.current() == site.ids[N1]
    assert site.live_images() == site.releases.digests(N1)  # the exact digests of N+1
    assert site.cli("status")[1].count("healthy: True") == 1
    record = site.ledger()[-1]
    assert record["outcome"] == "rolled-back" and record["previous"] == site.ids[N1]
    assert record["rollback"] == {"to": site.ids[N1], "outcome": "verified"}
    assert site.cooks() == [1]  # data written before the deploy is intact


def test_4_a_failing_backup_changes_nothing(site: Site) -> None:
    before = site.snapshot()
    tools = "/etc/smart-smoker/mongo-tools.yaml"
    site.run(f"mv {tools} {tools}.away")
    try:
        with pytest.raises(DeployError, match=r"failed at backup: .*Nothing was changed"):
            deploy(site.props(N), site.state)
    finally:
        site.run(f"mv {tools}.away {tools}")
    assert site.snapshot() == before
    assert site.ledger()[-1]["step"] == "backup"


def test_5_a_failing_pull_changes_nothing(site: Site) -> None:
    before = site.snapshot()
    with pytest.raises(DeployError, match=r"failed at pull: pulling .*backend:9\.9\.9 failed"):
        deploy(site.props("9.9.9"), site.state)
    assert site.snapshot() == before
    assert site.ledger()[-1]["outcome"] == "failed"


def test_6_two_deploys_at_once_the_second_fails_naming_the_first(site: Site) -> None:
    results: dict[str, Any] = {}

    def first() -> None:
        try:
            results["state"] = deploy(site.props(N), site.state)
        except Exception as exc:  # reported below
            results["error"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    try:
        poll_until(
            lambda: (
                site.run("cat /run/lock/smart-smoker-deploy/owner.json", check=False).returncode
                == 0
            ),
            timeout=60,
            what="the first deploy to take the lock",
        )
        started = time.monotonic()
        code, _, err = site.cli("rollback")
        assert code == 1 and re.search(r"locked: deploy by .* via pulumi since", err), err
        with pytest.raises(
            LockHeldError,
            match=r"deploy by .* via pulumi since .* \(active; stale at .* unless renewed\)",
        ):
            deploy(site.props(N1, revision="second"), site.state)
        assert time.monotonic() - started < 10  # at once, not after waiting for the first
    finally:
        thread.join(timeout=300)
    assert "error" not in results, results.get("error")
    site.state = results["state"]
    assert site.live_images() == site.releases.digests(N)


class DroppingTransport(SshTransport):
    """Closes the SSH connection when the deploy starts pulling (half-staged release)."""

    def run(self, command: str, stdin: bytes = b"", timeout: float = 120) -> Any:
        if command.startswith("docker pull"):
            self._client.close()
        return super().run(command, stdin, timeout)


def test_7_a_dropped_connection_leaves_a_stale_lock_the_next_deploy_recovers_from(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextlib.contextmanager
    def dropping(target: SshTarget) -> Iterator[SshTransport]:
        with ssh_client(target) as client:
            yield DroppingTransport(client)

    before = site.current()
    props = site.props(N1, lockLeaseSeconds=3)
    with monkeypatch.context() as patch:
        patch.setattr(engine_module, "connect", dropping)
        with pytest.raises(DeployError, match="connection to the host was lost"):
            deploy(props, site.state)
    assert site.current() == before
    assert [d for d in site.release_dirs() if d.startswith(".staging-")]  # half-staged
    with pytest.raises(LockHeldError):
        deploy(props, site.state)
    poll_until(lambda: "STALE" in site.cli("lock", "status")[1], timeout=30, what="a stale lease")
    with pytest.raises(LockHeldError, match=r"STALE .*lock break"):
        deploy(props, site.state)
    code, out, _ = site.cli("lock", "break")
    assert code == 0 and "broke the lock of" in out and "via pulumi" in out
    site.state = deploy(props, site.state)
    assert site.live_images() == site.releases.digests(N1)
    assert not [d for d in site.release_dirs() if d.startswith(".staging-")]
    assert site.ledger()[-1]["outcome"] == "deployed"


def test_8_a_failing_rollback_names_the_recovery_and_the_recovery_works(site: Site) -> None:
    live = site.current()
    compose = f"{APP_DIR}/releases/{live}/compose.yaml"
    original = site.run(f"cat {compose}").stdout
    site.run(f"echo 'services: [' >> {compose}")  # the previous release can no longer start
    with pytest.raises(RollbackError) as raised:
        deploy(site.props(N2), site.state)
    message = str(raised.value)
    recovery = re.search(r"`python -m deploy (.*?) rollback --to (\S+)`", message)
    assert recovery and recovery[2] == live, message
    assert f"-f {compose} up -d" in message and "smart-smoker-backup restore" in message
    record = site.ledger()[-1]
    assert record["outcome"] == "rollback-failed" and record["rollback"]["to"] == live
    site.run(f"cat > {compose}", input=original.encode())  # the operator repairs the release
    code, out, err = site.cli("rollback", "--to", recovery[2])
    assert code == 0, err
    assert f"release {live} is live and verified" in out
    assert site.live_images() == site.releases.digests(N1)


def test_9_unchanged_inputs_make_zero_remote_commands(site: Site) -> None:
    before = site.ssh_logins()
    provider = ReleaseProvider()
    unchanged = site.props(N1, lockLeaseSeconds=3)  # the inputs of the last deploy (test 7)
    assert provider.diff("release", site.state, unchanged).changes is False
    provider.read("release", site.state)
    assert site.ssh_logins() == before


def test_10_cli_rollback_to_an_older_release(site: Site) -> None:
    live = site.current()
    code, out, _ = site.cli("history", "--json")
    records = json.loads(out)
    older = next(
        r["release"]
        for r in records
        if r["outcome"] == "deployed"
        and r["release"] != live
        and r["release"] in site.release_dirs()
    )
    code, out, err = site.cli("rollback", "--to", older)
    assert code == 0, err
    assert site.current() == older
    manifest = json.loads(site.run(f"cat {APP_DIR}/current/manifest.json").stdout)
    assert site.live_images() == manifest["digests"]
    code, out, _ = site.cli("status")
    assert f"release: {older}" in out and "healthy: True" in out
    code, out, _ = site.cli("history")
    assert re.search(rf"rollback +deployed +{older} by ", out.splitlines()[-1])


def test_11_a_tag_moved_after_the_preview_is_refused_and_the_new_plan_deploys(
    site: Site,
) -> None:
    live = site.live_images()
    planned, moved = (N, N1) if live == site.releases.digests(N) else (N1, N)
    assert live == site.releases.digests(planned)
    site.releases.point("planned", planned)  # release N published under a tag
    approved = site.releases.plan(site.props("planned"))  # the preview plans N's digests
    site.releases.point("planned", moved)  # the tag is pushed again, now N+1's image
    before = site.snapshot()
    with pytest.raises(DeployError) as raised:
        deploy(approved, site.state)
    message = str(raised.value)
    backend = site.releases.digests(planned)["backend"].partition("@")[2]
    now = site.releases.digests(moved)["backend"].partition("@")[2]
    assert f"failed at pull: {site.releases.ref(BACKEND, 'planned')}@{backend}: " in message
    assert f"the preview planned {backend}, but the registry now serves {now}" in message
    assert "Run the preview again and approve the new digests" in message
    assert "Nothing was changed on the host" in message
    assert site.snapshot() == before  # the live release untouched ...
    assert site.cli("status")[1].count("healthy: True") == 1  # ... and verified
    record = site.ledger()[-1]
    assert (record["outcome"], record["step"]) == ("failed", "pull")
    assert backend in record["error"] and now in record["error"]
    # run the preview again: the new plan deploys, by digest
    site.state = deploy(site.releases.plan(site.props("planned")), site.state)
    assert site.live_images() == site.releases.digests(moved) == site.state["digests"]
    manifest = json.loads(site.run(f"cat {APP_DIR}/current/manifest.json").stdout)
    assert manifest["digests"] == site.releases.digests(moved)
    assert site.ledger()[-1]["outcome"] == "deployed"


def test_a_baseline_step_and_a_deploy_never_overlap(site: Site) -> None:
    from deploy.lock import HostLock
    from rendering.baseline import baseline_plan

    step = next(s for s in baseline_plan(site.env.cfg, site.env.spec) if s.name == "timezone")
    with ssh_client(site.target()) as client:
        lock = HostLock(SshTransport(client))
        lock.acquire("alice@laptop via cli", "rollback")
        try:
            refused = site.run(step.command("root"), check=False)
            assert refused.returncode == 75
            assert "rollback" in refused.stderr and "alice@laptop via cli" in refused.stderr
        finally:
            lock.release()
    assert "unchanged" in site.run(step.command("root")).stdout
    assert site.cli("lock", "status")[1].strip() == "unlocked"
