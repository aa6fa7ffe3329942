"""Tier 3: the application stack on the baselined test guest, with STAND-IN service images.

The compose project comes up as a release deployed by the Release provider, the MongoDB users
are converged by their dynamic provider (both called as Pulumi would), secrets stay in root-only
files, backups are made, validated and restored for real, and a failing backup fires the
failure unit. Retention over simulated months (local and off-guest: 7/4/12) is
tests/tier3/test_offsite.py's.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from components.mongo_users import MongoUsersProvider
from config import StackConfig
from deploy.mongo_users import connect, over_ssh
from deploy.transport import SshTarget
from rendering import app
from rendering.backup import FAILURES_LOG, STATUS_DIR, backup_dir
from tests.tier3.app_env import SECRETS, deploy_app, user_props
from tests.tier3.baseline_env import Baselined
from tests.tier3.release_env import Releases, deploy, release_props

TOOL = "/usr/local/sbin/smart-smoker-backup"


@dataclass
class AppGuest:
    env: Baselined
    cfg: StackConfig
    props: dict[str, Any]  # the MongoUsers state
    release: dict[str, Any]  # the Release state

    def run(self, cmd: str, **kwargs: Any) -> Any:
        return self.env.guest.run(cmd, **kwargs)

    @property
    def release_id(self) -> str:
        return str(self.release["releaseId"])

    def target(self) -> SshTarget:
        return SshTarget(
            self.props["host"], "root", self.props["privateKey"], host_key=self.props["hostKey"]
        )

    def as_user(self, user: str, password: str, action: Any) -> Any:
        def run(port: int) -> Any:
            client = connect(port, user, password)
            try:
                return action(client)
            finally:
                client.close()

        return over_ssh(self.target(), app.MONGO_PORT, run)


@pytest.fixture(scope="module")
def deployed(app_baselined: Baselined, releases: Releases) -> Iterator[AppGuest]:
    d = deploy_app(app_baselined, releases)
    yield AppGuest(app_baselined, d.cfg, d.users, d.release)


def test_project_is_healthy_and_serves_through_the_frontend(deployed: AppGuest) -> None:
    states = [
        json.loads(line)
        for project in ("smart-smoker-dev", f"smart-smoker-dev-{deployed.release_id.lower()}")
        for line in deployed.run(
            f"docker compose -p {project} ps --format json"
        ).stdout.splitlines()
        if line.strip()
    ]
    assert {s["Service"]: s["Health"] for s in states} == {
        "mongo": "healthy",
        "backend": "healthy",
        "frontend": "healthy",
    }
    # behind the proxy: it serves the release, on the loopback ports Tailscale serve targets
    served = deployed.run("curl -fsS http://127.0.0.1:3099/release").stdout.strip()
    assert served == deployed.release_id
    # the backend authenticates to MongoDB as the application user (DB_URL from backend.env)
    assert deployed.run("curl -fsS http://127.0.0.1:80/api/ready").returncode == 0
    assert deployed.run("curl -fsS http://127.0.0.1:3001/api/health").stdout.startswith("{")


def test_ports_are_published_on_loopback_only(deployed: AppGuest) -> None:
    listening = deployed.run("ss -ltnH").stdout
    for port in (27017, 3001, 80):
        lines = [line for line in listening.splitlines() if f":{port} " in line]
        assert lines and all("127.0.0.1:" in line for line in lines), lines


def test_users_exist_with_their_roles_and_the_app_user_is_confined(deployed: AppGuest) -> None:
    result = deployed.props["result"]
    assert result == {"admin": "unchanged", "smartsmoker": "created"}

    def roles(client: Any) -> Any:
        info = client.admin.command("usersInfo", {"user": "smartsmoker", "db": "admin"})
        return info["users"][0]["roles"]

    assert deployed.as_user("admin", SECRETS.mongo_root_password, roles) == [
        {"role": "readWrite", "db": "smartsmoker"}
    ]

    def write_elsewhere(client: Any) -> Any:
        return client["other"]["x"].insert_one({"a": 1})

    with pytest.raises(Exception, match=r"(?i)unauthori|not authorized"):
        deployed.as_user("smartsmoker", SECRETS.mongo_app_password, write_elsewhere)


def test_unchanged_inputs_need_no_update(deployed: AppGuest) -> None:
    diff = MongoUsersProvider().diff("id", deployed.props, dict(deployed.props))
    assert diff.changes is False


def test_secret_files_are_root_only_and_secrets_appear_nowhere_else(deployed: AppGuest) -> None:
    current = app.release_dir(deployed.cfg, "current")
    for path in (
        app.MONGO_ENV,
        app.MONGO_TOOLS_CONFIG,
        f"{current}/{app.BACKEND_ENV_FILE}",
        f"{current}/{app.MONGO_ENV_FILE}",
    ):
        assert deployed.run(f"stat -c %a:%U:%G {path}").stdout.strip() == "600:root:root"
    secrets = [SECRETS.mongo_root_password, SECRETS.mongo_app_password, SECRETS.vapid_private_key]
    encoded = app.database_url(SECRETS.mongo_app_password).split("@")[0].split(":")[-1]
    processes = deployed.run("ps -eo args").stdout
    journal = deployed.run("journalctl --no-pager -o cat", timeout=60).stdout
    plain_files = deployed.run(
        f"cat {current}/compose.yaml {current}/manifest.json /opt/smart-smoker-dev/"
        "bootstrap-compose.yaml /usr/local/sbin/smart-smoker-backup "
        "/etc/systemd/system/smart-smoker-backup* /var/log/smart-smoker/deployments.jsonl"
    ).stdout
    for secret in [*secrets, encoded]:
        assert secret not in processes, "a secret is on a command line"
        assert secret not in journal, "a secret is in the journal"
        assert secret not in plain_files, "a secret is in a non-secret file"


def seed(deployed: AppGuest, docs: list[dict[str, Any]]) -> None:
    def write(client: Any) -> Any:
        coll = client["smartsmoker"]["cooks"]
        coll.delete_many({})
        return coll.insert_many([dict(d) for d in docs]) if docs else None

    deployed.as_user("smartsmoker", SECRETS.mongo_app_password, write)


def read_back(deployed: AppGuest, db: str = "smartsmoker") -> list[dict[str, Any]]:
    def read(client: Any) -> Any:
        return sorted((d for d in client[db]["cooks"].find({}, {"_id": 0})), key=lambda d: d["n"])

    return deployed.as_user("admin", SECRETS.mongo_root_password, read)  # type: ignore[no-any-return]


def test_backup_produces_a_verified_archive_and_manifest(deployed: AppGuest) -> None:
    seed(deployed, [{"n": 1, "meat": "brisket"}])
    archive = deployed.run(f"{TOOL} dump").stdout.strip()
    assert archive.startswith(backup_dir(deployed.env.cfg))
    manifest = json.loads(deployed.run(f"cat {archive.replace('.archive.gz', '.json')}").stdout)
    sha = deployed.run(f"sha256sum {archive}").stdout.split()[0]
    size = int(deployed.run(f"stat -c %s {archive}").stdout)
    assert manifest["sha256"] == sha and manifest["size"] == size > 0
    assert manifest["mongodb_version"].startswith("7.0")
    assert deployed.run(f"stat -c %a {archive}").stdout.strip() == "600"
    assert deployed.run(f"{TOOL} validate").stdout.startswith("valid ")


def test_restore_drill_round_trips_the_data(deployed: AppGuest) -> None:
    docs = [{"n": i, "meat": m} for i, m in enumerate(["ribs", "pork shoulder", "turkey"])]
    seed(deployed, docs)
    archive = deployed.run(f"{TOOL} dump --class daily").stdout.strip()
    # drill: into a scratch database, the live data untouched
    deployed.run(f"{TOOL} restore {shlex.quote(archive)} --to-db drill")
    assert read_back(deployed, "drill") == docs
    # disaster: wipe, restore in place, compare
    seed(deployed, [])
    assert read_back(deployed) == []
    deployed.run(f"{TOOL} restore {shlex.quote(archive)} --in-place")
    assert read_back(deployed) == docs


def test_a_failing_backup_fires_the_failure_unit(deployed: AppGuest) -> None:
    deployed.run(f"rm -f {FAILURES_LOG} {STATUS_DIR}/backup-failed")
    deployed.run("docker compose -p smart-smoker-dev stop mongo")
    try:
        failed = deployed.run("systemctl start smart-smoker-backup.service", check=False)
        assert failed.returncode != 0
        deployed.run(f"timeout 30 sh -c 'until [ -s {FAILURES_LOG} ]; do sleep 0.2; done'")
        record = json.loads(deployed.run(f"tail -n 1 {FAILURES_LOG}").stdout)
        assert record["unit"] == "smart-smoker-backup.service"
        assert deployed.run(f"test -f {STATUS_DIR}/backup-failed", check=False).returncode == 0
        assert "FAILED" in deployed.run("journalctl -t smart-smoker-backup --no-pager").stdout
    finally:
        deployed.run("docker compose -p smart-smoker-dev start mongo")


def test_password_rotation_converges_in_mongodb_and_the_backend(deployed: AppGuest) -> None:
    env = deployed.env
    rotated = replace(SECRETS, mongo_app_password="app-rotated-Pa55-9876543210")
    news = {**deployed.props, "users": user_props(env, rotated)["users"]}
    news.pop("result", None)
    before_rotation = deployed.run(f"{TOOL} dump --class predeploy").stdout.strip()
    provider = MongoUsersProvider()
    assert provider.diff("id", deployed.props, news).changes is True
    outs = provider.update("id", deployed.props, news).outs
    assert outs["result"]["smartsmoker"] == "updated password"
    # the new DB_URL is a new release; its verification authenticates with the new password
    release = deploy(release_props(env, deployed.cfg, rotated), deployed.release)
    assert release["releaseId"] != deployed.release["releaseId"]
    deployed.release = release
    assert deployed.run("curl -fsS http://127.0.0.1:80/api/ready").returncode == 0
    with pytest.raises(Exception, match="refused the credentials"):
        deployed.as_user("smartsmoker", SECRETS.mongo_app_password, lambda c: None)
    deployed.props = {**outs}
    # restoring a backup taken before the rotation must not bring the old password back
    deployed.run(f"{TOOL} restore {shlex.quote(before_rotation)} --in-place")
    deployed.as_user("smartsmoker", rotated.mongo_app_password, lambda c: c.admin.command("ping"))
    assert deployed.run("curl -fsS http://127.0.0.1:80/api/ready").returncode == 0


def test_the_tunnel_refuses_a_host_key_that_is_not_the_pinned_one(deployed: AppGuest) -> None:
    from deploy.transport import TransportError

    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHbMWXbmZq4rCkHXHnNaV9zHPkmh0Z3FmQ9YV8oL6yGZ"
    wrong = SshTarget(deployed.props["host"], "root", deployed.props["privateKey"], host_key=other)
    with pytest.raises(TransportError, match="does not match the pinned"):
        over_ssh(wrong, app.MONGO_PORT, lambda port: port)


def test_host_lock_and_ledger_over_ssh(deployed: AppGuest) -> None:
    from deploy.ledger import Ledger
    from deploy.lock import HostLock, LockHeldError
    from deploy.transport import SshTransport, ssh_client

    with ssh_client(deployed.target()) as first, ssh_client(deployed.target()) as second:
        holder, other = HostLock(SshTransport(first)), HostLock(SshTransport(second))
        holder.acquire("tier3@test", "deploy release t3")
        try:
            with pytest.raises(LockHeldError, match="deploy release t3 by tier3@test"):
                other.acquire("someone@else", "baseline")
        finally:
            holder.release()
        other.acquire("someone@else", "baseline")
        other.release()
        Ledger(SshTransport(first)).append({"release": "t3", "outcome": "success"})
    assert (
        deployed.run("stat -c %a /var/log/smart-smoker/deployments.jsonl").stdout.strip() == "600"
    )
    assert (
        '"release":"t3"' in deployed.run("tail -n 1 /var/log/smart-smoker/deployments.jsonl").stdout
    )
