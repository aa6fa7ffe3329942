"""Tier 3/4: a rehearsal of the whole dev stack on test guests (see tests/tier3/rehearsal_env.py).

The program runs under the engine model of `tests.sdk.rehearsal`, which applies every resource
for real as `pulumi up` would (order, parallelism, diffs, replacements) and keeps the state
between runs like Pulumi's checkpoint. The scenarios run in order on the same state:

1. from empty guests to a verified release on each: dev-cloud's pushed by its Release, the
   device VM's published on dev-cloud (DesiredRelease) and applied by the VM's own update agent;
2. a second run with nothing changed runs no command at all;
3. one changed setting re-runs exactly what the preview (the diff model) says, and little;
4. a rebuilt guest (`--replace` of the ContainerLegacy: a fresh guest at the same address)
   converges in one run: new host key pinned, baseline, Tailscale, users, a verified release,
   and the device's desired release published on it again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

import layout
from rendering import app
from testbed.harness import Engine, Guest
from tests.configs import set_path
from tests.sdk.rehearsal_state import CREATE, REPLACE, UPDATE, Run, StepRecord
from tests.tier3.baseline_env import served_crun
from tests.tier3.rehearsal_env import (
    CLOUD,
    DEVICE,
    DEVICE_SKIPS,
    NEEDS_PROXMOX,
    Rehearsal,
    rehearsal,
    summary,
)
from tests.tier3.release_env import DEVICE_SERVICE, SMOKER_UI, N, Releases, live_containers

AGENT_TIMER = layout.AGENT_TIMER
PROJECT = "smart-smoker-dev"
DEVICE_PROJECT = "smart-smoker-device"
APP_DIR = "/opt/smart-smoker-dev"
DESIRED = f"{DEVICE}-desired-release"
PUBLISHED = f"/srv/smart-smoker/device-releases/{DEVICE}.json"
LEDGER = "/var/log/smart-smoker/deployments.jsonl"
CLOUD_APP_CHAIN = (
    "dev-cloud-mongo-env",
    "dev-cloud-mongo-bootstrap",
    "dev-cloud-mongo-users",
    "dev-cloud-release",
)
CLOUD_TAILSCALE_CHAIN = (
    "dev-cloud-tailscale-install",
    "dev-cloud-tailscale-up",
    "dev-cloud-tailscale-serve",
)


@pytest.fixture(scope="module")
def rh(
    engine: Engine, guest_factory: Callable[..., Guest], releases: Releases
) -> Iterator[Rehearsal]:
    with served_crun() as crun, rehearsal(engine, guest_factory, releases, crun) as r:
        yield r


def overlap(a: StepRecord, b: StepRecord) -> bool:
    return a.start < b.end and b.start < a.end


def verify_release(guest: Guest, run: Run) -> None:
    """The release is live and verified on `guest`: every service healthy, `current` points at
    the Release's ID, the ledger's last record is that deploy, the app answers."""
    live = live_containers(guest, PROJECT)
    assert {service: health for service, (health, _) in live.items()} == {
        "mongo": "healthy",
        "backend": "healthy",
        "frontend": "healthy",
    }
    current = guest.run(f"readlink {APP_DIR}/current").stdout.strip().rsplit("/", 1)[-1]
    record = json.loads(guest.run(f"tail -n 1 {LEDGER}").stdout)
    assert (record["outcome"], record["release"]) == ("deployed", current)
    assert guest.run("curl -fsS http://127.0.0.1:80/api/ready").returncode == 0


def verify_device(rh: Rehearsal, sequence: int, outcome: str) -> None:
    """The device VM's release: published on dev-cloud with `sequence`, pushed, and applied by
    the VM's agent (`outcome`) with the planned images, healthy; its report says so."""
    published = json.loads(rh.cloud.run(f"cat {PUBLISHED}").stdout)["document"]
    assert (published["stack"], published["guest"], published["sequence"]) == (
        "dev",
        DEVICE,
        sequence,
    )
    state = rh.state.resources[rh.urn(DESIRED)].outputs
    assert (state["sequence"], state["delivery"], state["agentOutcome"]) == (
        sequence,
        "pushed",
        outcome,
    ), state["note"]
    assert "the pushed copy" in state["note"]  # the tailnet name does not resolve here
    live = live_containers(rh.device, DEVICE_PROJECT)
    assert {service: health for service, (health, _) in live.items()} == {
        "device-service": "healthy",
        "smoker-ui": "healthy",
    }
    images = {service: image for service, (_, image) in live.items()}
    registry = rh.releases.registry
    assert images == {
        "device-service": f"{rh.releases.ref(DEVICE_SERVICE)}@"
        f"{registry.resolve(DEVICE_SERVICE, N)}",
        "smoker-ui": f"{rh.releases.ref(SMOKER_UI)}@{registry.resolve(SMOKER_UI, N)}",
    }
    health = json.loads(rh.device.run("curl -fsS http://127.0.0.1:3003/api/health").stdout)
    assert health["version"] == N


def host_key(guest: Guest) -> str:
    return " ".join(guest.run("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2])


def test_1_from_empty_guests_to_a_verified_release(rh: Rehearsal) -> None:
    preview = rh.up(preview=True)
    assert set(preview.ops().values()) == {CREATE}
    run = rh.up()
    print(summary(run))
    assert run.violations == []
    assert preview.ops() == run.ops()
    # not applied, with the reason: Proxmox-only resources and the device steps a container
    # guest cannot run
    skipped = {s.name: s.reason for s in run.steps.values() if s.reason.startswith("skipped")}
    assert skipped["vzdump-dev"] == f"skipped: {NEEDS_PROXMOX}"
    # the host-wide objects are the host stack's: dev only reads their IDs
    assert not {"proxmox-pool", "proxmox-guest-nat"} & {s.name for s in run.steps.values()}
    for name, why in DEVICE_SKIPS.items():
        assert skipped[name] == f"skipped: {why}"
    # the two guests were configured by real commands
    cloud_commands = [s for s in run.steps.values() if s.name.startswith(CLOUD) and s.commands]
    device_commands = [s for s in run.steps.values() if s.name.startswith(DEVICE) and s.commands]
    assert len(cloud_commands) >= 25 and len(device_commands) >= 10
    # chains the program leaves independent ran at the same time, ordered ones in order: the
    # two guests always; Tailscale and the app after the baseline unless the program orders them
    assert any(overlap(c, d) for c in cloud_commands for d in device_commands)
    assert not any(run.depends(c.name, d.name) for c in cloud_commands for d in device_commands)
    tailscale = [run.by_name(n) for n in CLOUD_TAILSCALE_CHAIN]
    app_chain = [run.by_name(n) for n in CLOUD_APP_CHAIN]
    if run.depends(CLOUD_APP_CHAIN[0], CLOUD_TAILSCALE_CHAIN[-1]):
        assert max(t.end for t in tailscale) <= min(a.start for a in app_chain), summary(run)
    else:
        assert any(overlap(t, a) for t in tailscale for a in app_chain), summary(run)
    assert run.max_concurrent >= 2
    # the cloud guest: a verified release; the device guest: its baseline and Tailscale
    verify_release(rh.cloud, run)
    release = rh.state.resources[rh.urn("dev-cloud-release")]
    assert release.outputs["digests"] == rh.releases.digests(N)
    users = rh.state.resources[rh.urn("dev-cloud-mongo-users")]
    assert users.outputs["result"] == {"admin": "unchanged", app.MONGO_APP_USER: "created"}
    verify_device(rh, 1, "deployed")
    # the pull path's timer runs on the device VM
    assert rh.device.run(f"systemctl is-enabled {AGENT_TIMER}").stdout.strip() == "enabled"
    assert rh.device.run(f"systemctl is-active {AGENT_TIMER}").stdout.strip() == "active"
    for guest in (rh.cloud, rh.device):
        assert "Status: active" in guest.run("ufw status").stdout
        assert guest.run("systemctl is-active fail2ban docker tailscaled").returncode == 0
        assert "serve" in guest.run("cat /var/log/tailscale-stub/calls.jsonl").stdout


def test_2_a_second_run_with_nothing_changed_runs_no_command(rh: Rehearsal) -> None:
    run = rh.up()
    assert run.ops() == {}, summary(run)
    assert run.commands == 0


def test_3_one_changed_setting_reruns_exactly_what_the_preview_says(rh: Rehearsal) -> None:
    changed = set_path(rh.raw, "baseline.fail2ban.maxRetry", 5)
    preview = rh.up(preview=True, raw=changed)
    expected = preview.ops()
    assert expected == {"dev-cloud-fail2ban": "update", "virtual-smoker-device-fail2ban": "update"}
    rh.raw = changed
    run = rh.up()
    assert run.ops() == expected, summary(run)
    assert run.commands == len(expected)
    for guest in (rh.cloud, rh.slots[DEVICE].guest):
        assert guest is not None
        assert guest.run("fail2ban-client get sshd maxretry").stdout.strip() == "5"
    assert rh.up().commands == 0


def test_4_a_rebuilt_guest_converges_in_one_run(rh: Rehearsal) -> None:
    """Needs deletedWith (every resource configuring a guest) and deleteBeforeReplace (the
    guest): without them nothing but the guest is replaced, and a create-before-delete guest
    replacement collides with the old guest's address."""
    guest_urn = rh.urn(CLOUD, "proxmoxve:")
    old_guest = rh.cloud.name
    old_key = host_key(rh.cloud)
    preview = rh.up(preview=True, replace=(guest_urn,))
    run = rh.up(replace=(guest_urn,))
    print(summary(run))
    assert run.violations == []
    assert rh.cloud.name != old_guest
    new_key = host_key(rh.cloud)
    assert new_key != old_key
    # the same steps as planned: the guest and exactly what is deleted with it (the engine's
    # deletedWith rule), and every command configuring the cloud guest ran again; the device's
    # desired release is published again on the new guest (its host key changed)
    assert run.ops() == preview.ops()
    deleted_with_guest = {
        r.urn.rsplit("::", 1)[-1]
        for r in rh.state.resources.values()
        if r.deleted_with == guest_urn
    }
    ops = run.ops()
    assert ops.pop(DESIRED) == UPDATE
    assert set(ops) == {CLOUD} | deleted_with_guest
    assert set(ops.values()) == {REPLACE}
    cloud_commands = {
        u: r
        for u, r in rh.state.resources.items()
        if r.type == "command:remote:Command" and r.inputs["connection"]["host"] == rh.cloud.host
    }
    for urn in cloud_commands:
        assert run.steps[urn].op == REPLACE, (urn, run.steps[urn])
        pinned = cloud_commands[urn].inputs["connection"].get("hostKey")
        assert pinned in (None, new_key), urn
    # baseline, Tailscale, users and a verified release on the new guest
    guest = rh.cloud
    assert "Status: active" in guest.run("ufw status").stdout
    assert guest.run("systemctl is-active fail2ban docker tailscaled").returncode == 0
    assert "serve" in guest.run("cat /var/log/tailscale-stub/calls.jsonl").stdout
    users = rh.state.resources[rh.urn("dev-cloud-mongo-users")]
    assert users.outputs["result"][app.MONGO_APP_USER] == "created"
    verify_release(guest, run)
    # the device guest was not touched but for the push of the same release: up to date
    assert [n for n in run.ops() if n.startswith(DEVICE)] == [DESIRED]
    verify_device(rh, 2, "up-to-date")
