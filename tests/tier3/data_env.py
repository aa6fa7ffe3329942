"""Application data on a deployed test guest, and a guest rebuilt at the same address.

For the rebuild drill (off-guest backups): `load_documents` fills the application database of
the MongoDB STAND-IN with deterministic documents, `content_of` hashes everything in it, and
`build_app_guest` / `rebuild_app_guest` bring a guest at a fixed address from nothing to a
deployed release, then replace it with a fresh one (same hostname, same address, same steps).

Data goes in and out through `docker exec` into the stand-in's container on the guest, as the
app user (readWrite on `smartsmoker`) with pymongo there; the password travels on stdin, never
in argv, and 320 MB never cross the SSH connection.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from rendering import app
from rendering.restic import ResticSecrets
from testbed.harness import Engine, Guest
from testbed.harness.lifecycle import ensure_network, remove_network
from tests.tier3.app_env import SECRETS, Deployed, deploy_app
from tests.tier3.baseline_env import Baselined, apply_plan, guest_stack_config, plan, served_crun
from tests.tier3.release_env import N, Releases

#: A harness network for the drill: the guest's fixed address and the SFTP target's.
NETWORK = "smoker-drill"
SUBNET, GATEWAY = "169.254.79.0/24", "169.254.79.1"
GUEST_IP, TARGET_IP = "169.254.79.20", "169.254.79.30"
COLLECTIONS = ("cooks", "readings", "events")
DOCS_PER_MB = 1024  # documents of about 1 KB


@dataclass(frozen=True)
class DataSet:
    """What the application database holds: document count and content hash."""

    count: int
    sha256: str


def mongo_container(guest: Guest) -> str:
    """The id of the running MongoDB (stand-in) container on the guest."""
    cid = guest.run(
        "docker ps -q --filter label=com.docker.compose.service=mongo | head -n 1"
    ).stdout.strip()
    if not cid:
        raise AssertionError("no running mongo container on the guest")
    return cid


def _as_app_user(guest: Guest, body: str, timeout: float) -> dict[str, Any]:
    """Run python `body` (with `db`, the app database as the app user) in the mongo container;
    it prints one JSON object, returned here."""
    script = (
        "import json, sys\n"
        "from mongo_standin.client import connect\n"
        f"client = connect({app.MONGO_APP_USER!r}, {SECRETS.mongo_app_password!r},"
        " timeout_ms=30000)\n"
        f"db = client[{app.MONGO_APP_DATABASE!r}]\n" + body
    )
    out = guest.run(
        f"docker exec -i {mongo_container(guest)} python3 -", input=script.encode(), timeout=timeout
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


_CONTENT = """
import hashlib, bson
digest, count = hashlib.sha256(), 0
for name in sorted(db.list_collection_names()):
    digest.update(b"C" + name.encode() + b"\\0")
    for doc in db[name].find({}, sort=[("_id", 1)], batch_size=2000):
        digest.update(bson.encode(doc))
        count += 1
print(json.dumps({"count": count, "sha256": digest.hexdigest()}))
"""


def content_of(guest: Guest, timeout: float = 900) -> DataSet:
    """Count and sha256 of every document of every collection of the application database
    (collections by name, documents by `_id`, each as BSON)."""
    out = _as_app_user(guest, _CONTENT, timeout)
    return DataSet(int(out["count"]), str(out["sha256"]))


def load_documents(guest: Guest, megabytes: int, seed: int, timeout: float = 1800) -> DataSet:
    """Insert `megabytes` MB of deterministic ~1 KB documents (spread over `COLLECTIONS`,
    `_id`s `"<seed>-<n>"`) into the application database; returns its content afterwards."""
    body = f"""
import datetime, random
rng, colls = random.Random({seed}), {list(COLLECTIONS)!r}
start = datetime.datetime(2024, 1, 1)
batches = {{name: [] for name in colls}}
for n in range({megabytes * DOCS_PER_MB}):
    name = colls[n % len(colls)]
    batches[name].append({{
        "_id": f"{seed}-{{n:09d}}", "n": n, "probe": rng.randrange(4),
        "at": start + datetime.timedelta(seconds=7 * n), "temp": round(rng.uniform(80, 300), 2),
        "meat": rng.choice(["brisket", "ribs", "pork shoulder", "turkey"]),
        "note": rng.randbytes(440).hex(),
    }})
    if len(batches[name]) == 1000:
        db[name].insert_many(batches[name])
        batches[name] = []
for name, docs in batches.items():
    if docs:
        db[name].insert_many(docs)
print(json.dumps({{}}))
"""
    _as_app_user(guest, body, timeout)
    return content_of(guest)


# -- a guest at a fixed address, rebuilt -----------------------------------------------------


@contextlib.contextmanager
def drill_network(engine: Engine) -> Iterator[str]:
    """The drill's harness network (created, removed at the end): guests at `GUEST_IP`,
    the SFTP target at `TARGET_IP` (`start_sftp_target(..., network=, ip=TARGET_IP)`)."""
    ensure_network(engine, NETWORK, SUBNET, GATEWAY)
    try:
        yield NETWORK
    finally:
        remove_network(engine, NETWORK)


@dataclass
class AppGuest:
    """A guest baselined and deployed at a fixed address."""

    env: Baselined
    deployed: Deployed

    @property
    def guest(self) -> Guest:
        return self.env.guest


def build_app_guest(
    start_guest: Callable[..., Guest],
    releases: Releases,
    *,
    hostname: str,
    network: str = NETWORK,
    ip: str = GUEST_IP,
    version: str = N,
    restic: ResticSecrets | None = None,
) -> AppGuest:
    """A fresh guest at `ip` on `network`, baselined by the real apply plan, with the app
    deployed (`deploy_app`). `start_guest` is e.g. the `guest_factory` fixture (which removes
    the guest at session end)."""
    guest = start_guest(hostname=hostname, network=network, ip=ip)
    with served_crun() as crun:
        cfg, spec = guest_stack_config(guest, crun)
        env = Baselined(guest, cfg, spec, apply_plan(guest, plan(cfg, spec)))
        return AppGuest(env, deploy_app(env, releases, version, restic))


def rebuild_app_guest(
    old: AppGuest,
    start_guest: Callable[..., Guest],
    releases: Releases,
    version: str = N,
    restic: ResticSecrets | None = None,
) -> AppGuest:
    """Destroy `old` (container and data) and build a fresh guest with its hostname and
    address by the same steps: an empty MongoDB, new SSH host keys (see its known_hosts)."""
    guest = old.guest
    if guest.fixed_ip is None:
        raise ValueError("only a guest at a fixed address can be rebuilt at that address")
    networks = "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}"
    network = guest.engine.docker_text("inspect", "-f", networks, guest.id)
    hostname, ip = guest.hostname, guest.fixed_ip
    guest.stop()
    return build_app_guest(
        start_guest,
        releases,
        hostname=hostname,
        network=network,
        ip=ip,
        version=version,
        restic=restic,
    )
