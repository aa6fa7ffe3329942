"""Both stacks evaluated under Pulumi mocks in one run (a fresh runtime for each)."""

from __future__ import annotations

import json

import pytest

from deploy.release import service_images
from tools.synth import SECRET_MARKER, Synthesis, synthesize, tree

LXC = "proxmoxve:index/containerLegacy:ContainerLegacy"
VM = "proxmoxve:index/vmLegacy:VmLegacy"
COMMAND = "command:remote:Command"


@pytest.fixture(scope="module")
def dev() -> Synthesis:
    return synthesize("dev")


@pytest.fixture(scope="module")
def prod(dev: Synthesis) -> Synthesis:  # after dev: proves the runtime resets between stacks
    return synthesize("prod")


def test_guests_have_pinned_vmids(dev: Synthesis, prod: Synthesis) -> None:
    assert dev.one(LXC, "dev-cloud").inputs["vmId"] == 104
    assert dev.one(VM, "virtual-smoker-device").inputs["vmId"] == 9001
    assert prod.one(LXC, "prod-cloud").inputs["vmId"] == 106
    assert [r.name for r in prod.by_type(LXC)] == ["prod-cloud"] and not prod.by_type(VM)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_cloud_guest_is_an_unprivileged_docker_and_tailscale_ready_lxc(
    stack: str, dev: Synthesis, prod: Synthesis
) -> None:
    synthesis = {"dev": dev, "prod": prod}[stack]
    (lxc,) = synthesis.by_type(LXC)
    i = lxc.inputs
    assert i["unprivileged"] is True
    assert i["features"] == {"nesting": True, "keyctl": True}
    assert i["devicePassthroughs"] == [{"path": "/dev/net/tun"}]
    assert i["operatingSystem"]["type"] == "ubuntu"
    assert i["networkInterfaces"] == [{"name": "eth0", "bridge": "vmbr0", "firewall": True}]
    assert i["initialization"]["dns"]["servers"] == ["1.1.1.1", "8.8.8.8"]
    assert i["initialization"]["ipConfigs"][0]["ipv4"]["gateway"] == "10.20.0.1"
    assert i["startOnBoot"] is True and i["poolId"] == "smart-smoker"
    # keys and template are creation-only: changing them must not replace the guest
    assert set(lxc.ignore_changes) == {
        "initialization.userAccount",
        "operatingSystem.templateFileId",
    }


def test_sizes_addresses_and_hostnames_match_reference(dev: Synthesis, prod: Synthesis) -> None:
    d, p = dev.one(LXC, "dev-cloud").inputs, prod.one(LXC, "prod-cloud").inputs
    assert (d["cpu"]["cores"], d["memory"], d["disk"]["size"]) == (
        2,
        {"dedicated": 4096, "swap": 1024},
        20,
    )
    assert (p["cpu"]["cores"], p["memory"], p["disk"]["size"]) == (
        4,
        {"dedicated": 8192, "swap": 2048},
        40,
    )
    assert d["initialization"]["hostname"] == "smart-smoker-dev-cloud"
    assert p["initialization"]["hostname"] == "smart-smoker-cloud-prod"
    assert d["initialization"]["ipConfigs"][0]["ipv4"]["address"] == "10.20.0.20/24"
    assert p["initialization"]["ipConfigs"][0]["ipv4"]["address"] == "10.20.0.30/24"


def test_device_vm_is_a_full_q35_ovmf_clone_of_the_template(dev: Synthesis) -> None:
    vm = dev.one(VM, "virtual-smoker-device").inputs
    assert vm["clone"] == {"vmId": 9000, "full": True, "datastoreId": "local-lvm"}
    assert (vm["machine"], vm["bios"]) == ("q35", "ovmf")
    assert vm["agent"] == {"enabled": True}
    assert vm["serialDevices"] == [{"device": "socket"}]
    assert vm["initialization"]["userAccount"]["username"] == "smoker"
    assert vm["initialization"]["ipConfigs"][0]["ipv4"]["address"] == "10.20.0.40/24"
    assert (
        vm["initialization"]["vendorDataFileId"] == "local:snippets/smart-smoker-vendor-data.yaml"
    )
    assert (vm["cpu"]["cores"], vm["memory"]["dedicated"]) == (4, 1024)
    assert "disks" not in vm  # the template's disk


def test_protect_on_prod_guests_only(dev: Synthesis, prod: Synthesis) -> None:
    prod_guest = prod.one(LXC, "prod-cloud")
    assert prod_guest.protect and prod_guest.inputs["protection"] is True
    for guest in dev.by_type(LXC) + dev.by_type(VM):
        if guest.name != "proxmox-vm-template":
            assert not guest.protect and guest.inputs["protection"] is False


def test_every_resource_uses_an_explicit_provider(dev: Synthesis, prod: Synthesis) -> None:
    for synthesis in (dev, prod):
        for r in synthesis.resources:
            if r.type.startswith("proxmoxve:"):
                assert r.provider and "pulumi:providers:proxmoxve::proxmox-provider" in r.provider
            if r.type.startswith("command:"):
                assert r.provider and "pulumi:providers:command::command" in r.provider
            assert "default_" not in (r.provider or ""), f"{r.name} uses a default provider"


def test_credentials_and_keys_are_secret(dev: Synthesis, prod: Synthesis) -> None:
    for synthesis in (dev, prod):
        (provider,) = synthesis.by_type("pulumi:providers:proxmoxve")
        assert provider.inputs["password"] == SECRET_MARKER
        assert provider.inputs["ssh"] == SECRET_MARKER  # carries the node's SSH private key
        assert "apiToken" not in provider.inputs  # the password (root@pam) wins
        for command in synthesis.by_type(COMMAND):
            assert command.inputs["connection"] == SECRET_MARKER
        manifest = json.dumps([r.as_json() for r in synthesis.resources])
        assert "synth-placeholder" not in manifest and "PRIVATE KEY" not in manifest


def test_api_token_is_used_and_secret_when_no_password(dev: Synthesis) -> None:
    from tests.configs import set_path, stack_raw

    raw = set_path(stack_raw("prod"), "guests.prod-cloud.features", {"keyctl": False, "tun": False})
    raw = set_path(raw, "proxmoxPassword", None)
    raw = set_path(raw, "proxmoxApiToken", "ci@pve!deploy=0000-1111", secret=True)
    (provider,) = synthesize("prod", *raw).by_type("pulumi:providers:proxmoxve")
    assert provider.inputs["apiToken"] == SECRET_MARKER
    assert "password" not in provider.inputs and "username" not in provider.inputs


def test_tags_are_lower_case_and_sorted(dev: Synthesis, prod: Synthesis) -> None:
    for synthesis in (dev, prod):
        for r in synthesis.by_type(LXC) + synthesis.by_type(VM):
            tags = r.inputs["tags"]
            assert tags == sorted(tags) and all(t == t.lower() for t in tags)


def test_readiness_gates_each_guest(dev: Synthesis) -> None:
    for guest, kind in (("dev-cloud", LXC), ("virtual-smoker-device", VM)):
        ready = dev.one(COMMAND, f"{guest}-ready")
        assert ready.parent and ready.parent.endswith(f"::{guest}")
        assert dev.one(kind, guest).urn in ready.depends_on
        assert ready.inputs["create"].startswith("timeout 600 ")
    assert (
        "cloud-init status --wait"
        in dev.one(COMMAND, "virtual-smoker-device-ready").inputs["create"]
    )


def test_component_type_tokens_and_parents(dev: Synthesis) -> None:
    components = {r.name: r.type for r in dev.resources if r.type.startswith("smoker:")}
    assert components == {
        "proxmox": "smoker:proxmox:ProxmoxHost",
        "dev-cloud": "smoker:proxmox:CloudGuest",
        "virtual-smoker-device": "smoker:proxmox:DeviceGuest",
        "dev-cloud-baseline": "smoker:guest:GuestBaseline",
        "virtual-smoker-device-baseline": "smoker:guest:GuestBaseline",
        "dev-cloud-tailscale": "smoker:guest:TailscaleNode",
        "virtual-smoker-device-tailscale": "smoker:guest:TailscaleNode",
        "dev-cloud-app": "smoker:app:AppStack",
        "virtual-smoker-device-app": "smoker:device:DeviceApp",
        "vzdump-dev": "smoker:proxmox:VzdumpJob",
    }
    lxc = dev.one(LXC, "dev-cloud")
    assert lxc.parent and lxc.parent.endswith("smoker:proxmox:CloudGuest::dev-cloud")


def test_stack_outputs(dev: Synthesis, prod: Synthesis) -> None:
    guests = dev.outputs["guests"]
    assert guests["dev-cloud"] == {
        "vmid": 104,
        "hostname": "smart-smoker-dev-cloud",
        "ipv4": "10.20.0.20",
        "node": "pve",
        "tailscaleUrls": {
            "443": "https://smart-smoker-dev-cloud.tail74646.ts.net:443",
            "8443": "https://smart-smoker-dev-cloud.tail74646.ts.net:8443",
        },
        "release": None,  # the live release and its digests: known once the Release deployed
        "digests": None,
    }
    device = guests["virtual-smoker-device"]
    assert (device["vmid"], device["ipv4"], device["node"]) == (9001, "10.20.0.40", "pve")
    assert prod.outputs["guests"]["prod-cloud"]["vmid"] == 106
    assert prod.outputs["guests"]["prod-cloud"]["tailscaleUrls"]["443"] == (
        "https://smokecloud.tail74646.ts.net:443"
    )
    assert "hostShared" not in dev.outputs and "hostShared" not in prod.outputs


def test_tree_lists_every_resource(dev: Synthesis) -> None:
    text = tree(dev)
    assert text.count("├─") == len(dev.resources)
    assert "ContainerLegacy  dev-cloud" in text


@pytest.mark.parametrize("guest", ["dev-cloud", "virtual-smoker-device"])
def test_every_plan_step_is_a_command_chained_after_readiness(dev: Synthesis, guest: str) -> None:
    from rendering.files import guest_plan

    steps = guest_plan(dev.config, dev.config.guest(guest))
    ready = dev.one(COMMAND, f"{guest}-ready")
    previous, gate = ready.urn, ready.urn
    for step in steps:
        command = dev.one(COMMAND, f"{guest}-{step.name}")
        if step.name == "tailscale-install":
            gate = previous  # Tailscale waits for the finished baseline (UFW rules)
        # right after its predecessor; the gate's ID is a trigger (a rebuilt guest re-runs all),
        # and the connection pins the host key the readiness check recorded
        assert set(command.depends_on) == {previous, gate, ready.urn}, step.name
        component = "TailscaleNode" if step.name.startswith("tailscale") else "GuestBaseline"
        assert command.parent and f"smoker:guest:{component}::" in command.parent
        assert command.inputs["addPreviousOutputInEnv"] is False
        if step.secret:
            assert command.inputs["stdin"] == SECRET_MARKER
            assert command.inputs["logging"] == "none"
        else:
            assert command.inputs.get("stdin") == step.stdin
        previous = command.urn


def test_vm_steps_run_through_sudo_as_the_cloud_init_user(dev: Synthesis) -> None:
    command = dev.one(COMMAND, "virtual-smoker-device-sshd-config").inputs["create"]
    assert command.startswith("sudo -n sh -c ")
    assert not dev.one(COMMAND, "dev-cloud-sshd-config").inputs["create"].startswith("sudo")


MONGO_USERS = "pulumi-python:dynamic/app:MongoUsers"
RELEASE = "pulumi-python:dynamic/app:Release"
DESIRED_RELEASE = "pulumi-python:dynamic/device:DesiredRelease"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_app_secrets_reach_the_guest_only_as_secret_stdin(
    stack: str, dev: Synthesis, prod: Synthesis
) -> None:
    synthesis = {"dev": dev, "prod": prod}[stack]
    guest = "dev-cloud" if stack == "dev" else "prod-cloud"
    for name in ("mongo-env", "mongo-tools-config"):
        step = synthesis.one(COMMAND, f"{guest}-{name}")
        assert step.inputs["stdin"] == SECRET_MARKER and step.inputs["logging"] == "none"
        assert "chmod 0600" in step.inputs["create"]
    users = synthesis.one(MONGO_USERS, f"{guest}-mongo-users")
    for key in ("adminPassword", "users", "privateKey"):
        assert users.inputs[key] == SECRET_MARKER
    assert users.inputs["adminUser"] == "admin" and users.inputs["mongoPort"] == 27017
    release = synthesis.one(RELEASE, f"{guest}-release")
    for key in ("envFiles", "privateKey"):  # the backend's DB_URL and VAPID key live in envFiles
        assert release.inputs[key] == SECRET_MARKER
    assert "synth-placeholder" not in json.dumps(release.inputs)


def test_users_converge_between_mongo_and_the_first_release(dev: Synthesis) -> None:
    users = dev.one(MONGO_USERS, "dev-cloud-mongo-users")
    assert any(urn.endswith("::dev-cloud-mongo-bootstrap") for urn in users.depends_on)
    release = dev.one(RELEASE, "dev-cloud-release")
    assert users.urn in release.depends_on


@pytest.mark.parametrize(
    ("guest", "images", "checks"),
    [
        (
            "dev-cloud",
            [
                "mongo:7.0",
                "benjr70/smart-smoker-backend:nightly",
                "benjr70/smart-smoker-frontend:nightly",
            ],
            [
                "http://backend:3001/api/health",
                "http://backend:3001/api/ready",
                "http://frontend:3000/",
            ],
        ),
        (
            "virtual-smoker-device",
            ["benjr70/smart-smoker-device-service:nightly", "benjr70/smart-smoker-smoker:nightly"],
            ["http://127.0.0.1:3003/api/health", "http://127.0.0.1:8080/"],
        ),
    ],
)
def test_each_guest_has_a_release_with_planned_images_and_its_checks(
    dev: Synthesis, guest: str, images: list[str], checks: list[str]
) -> None:
    """The cloud guest's Release (pushed); the device VM's DesiredRelease (published on the
    cloud guest for its agent to pull, and pushed when it answers)."""
    if guest == "dev-cloud":
        release = dev.one(RELEASE, f"{guest}-release").inputs
        assert release["backup"] is True
        assert release["stack"] == "dev" and release["appDir"] == "/opt/smart-smoker-dev"
    else:
        release = dev.one(DESIRED_RELEASE, f"{guest}-desired-release").inputs
        assert (release["stack"], release["guest"]) == ("dev", guest)
        assert release["publisherHost"] == "10.20.0.20"  # dev-cloud
        assert release["path"] == "/srv/smart-smoker/device-releases/virtual-smoker-device.json"
        assert (release["deviceHost"], release["deviceUser"]) == ("10.20.0.40", "smoker")
        assert not dev.by_type(RELEASE) or guest not in {r.name for r in dev.by_type(RELEASE)}
    planned = list(service_images(release["compose"]).values())
    assert [ref.split("@sha256:")[0] for ref in planned] == images
    assert all("@sha256:" in ref for ref in planned)
    assert [c["url"] for c in release["checks"]["http"]] == checks


def test_the_device_vm_runs_the_agent_from_its_cloud_guest(dev: Synthesis) -> None:
    """VM 9001 updates like the physical smoker: no Release is pushed to it; the agent is
    installed after its arm/v7 check and pulls from dev-cloud's tailnet name."""
    assert [r.name for r in dev.by_type(RELEASE)] == ["dev-cloud-release"]
    steps = [
        r.name
        for r in dev.by_type(COMMAND)
        if r.parent and r.parent.endswith("smoker:device:DeviceApp::virtual-smoker-device-app")
    ]
    unit = "virtual-smoker-device-unit-smart-smoker-agent-service"
    assert {"virtual-smoker-device-arm-check", unit, "virtual-smoker-device-agent-timer"} <= set(
        steps
    ), steps
    first_agent_step = dev.one(COMMAND, "virtual-smoker-device-agent-packages")
    assert any(u.endswith("::virtual-smoker-device-arm-check") for u in first_agent_step.depends_on)
    units = dev.one(COMMAND, unit).inputs["stdin"]
    assert (
        "--source https://smart-smoker-dev-cloud.tail74646.ts.net:9443/device-releases/"
        "virtual-smoker-device.json --pushed-copy " in units
    )
    # app.deviceUpdates.intervalSeconds
    timer = dev.one(COMMAND, "virtual-smoker-device-unit-smart-smoker-agent-timer").inputs["stdin"]
    assert "OnUnitActiveSec=3600s" in timer and "OnBootSec=60s" in timer
    desired = dev.one(DESIRED_RELEASE, "virtual-smoker-device-desired-release")
    # after the agent is installed and dev-cloud serves the directory
    assert any(urn.endswith("::virtual-smoker-device-agent-timer") for urn in desired.depends_on)
    assert any(urn.endswith("::dev-cloud-tailscale-serve") for urn in desired.depends_on)


def test_vzdump_job_covers_the_stack_guests(dev: Synthesis, prod: Synthesis) -> None:
    job = dev.one("proxmoxve:backup/job:Job", "vzdump-dev").inputs
    assert job["vmids"] == ["104", "9001"] and job["schedule"] == "01:00"
    assert (job["mode"], job["compress"]) == ("snapshot", "zstd")
    assert job["pruneBackups"] == {"keep-daily": "7", "keep-weekly": "4", "keep-monthly": "12"}
    assert prod.one("proxmoxve:backup/job:Job", "vzdump-prod").inputs["vmids"] == ["106"]


def test_readiness_records_the_host_key_that_later_steps_pin() -> None:
    from components.guest_common import HOST_KEY_FILE, host_key_of, readiness_command

    assert readiness_command("lxc", 600).endswith(f"&& cat {HOST_KEY_FILE}")
    out = "smart-smoker-dev-cloud\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample root@guest\n"
    assert host_key_of(out) == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"


def test_the_ssh_transport_never_accepts_an_unpinned_host() -> None:
    from deploy.transport import SshTarget, TransportError, ssh_client

    with (
        pytest.raises(TransportError, match="no pinned host key"),
        ssh_client(SshTarget("127.0.0.1", "root", "key", port=1)),
    ):
        pass


def test_verify_from_outside_adds_the_tailscale_urls_to_the_checks() -> None:
    from rendering.app import release_checks
    from tests.configs import parse, set_path, stack_raw

    raw = stack_raw("prod")
    cfg = parse(raw, "prod")
    assert "outside" not in release_checks(cfg, cfg.guest("prod-cloud"))
    cfg = parse(set_path(raw, "app.deploy.verifyFromOutside", True), "prod")
    outside = release_checks(cfg, cfg.guest("prod-cloud"))["outside"]
    assert outside == [
        {"url": "https://smokecloud.tail74646.ts.net:443/"},
        {"url": "https://smokecloud.tail74646.ts.net:8443/api/health", "json": {"status": "ok"}},
    ]


# ---------------------------------------------------------------------------------------------
# The physical smoker (prod guest `smoker`, kind: host): an existing machine, no Proxmox resource

HOST = "smoker:host:ExistingHost"


def test_the_physical_smoker_declares_no_proxmox_resource(prod: Synthesis) -> None:
    smoker = prod.one(HOST, "smoker")
    assert smoker.parent and smoker.parent.endswith("pulumi:pulumi:Stack::smoker-infra-prod")
    mine = [r for r in prod.resources if r.name == "smoker" or r.name.startswith("smoker-")]
    assert mine and not [r for r in mine if r.type.startswith("proxmoxve:")]
    # not in the Proxmox backup job
    assert prod.one("proxmoxve:backup/job:Job", "vzdump-prod").inputs["vmids"] == ["106"]
    ready = prod.one(COMMAND, "smoker-ready")
    assert ready.parent and ready.parent.endswith(f"{HOST}::smoker")
    assert ready.depends_on == []  # nothing to wait for but the machine's own SSH
    assert "systemctl is-system-running --wait" in ready.inputs["create"]
    assert prod.outputs["guests"]["smoker"] == {
        "kind": "host",
        "hostname": "smoker",
        "sshHost": "smoker",
        "arch": "armhf",
        "tailscaleUrls": {},
        "desiredRelease": {
            "sequence": None,
            "delivery": None,
            "note": None,
            "agentOutcome": None,
            "liveRelease": None,
        },
    }


def test_the_physical_smokers_baseline_has_no_lxc_or_vm_step(prod: Synthesis) -> None:
    from components.device_release import release_public_key
    from rendering import agent
    from rendering.files import guest_plan

    steps = guest_plan(prod.config, prod.config.guest("smoker"))
    names = [s.name for s in steps]
    assert names[0] == "machine-check"
    assert not {"apt-sandbox", "swapfile", "arm-emulation", "arm-check"} & set(names)
    commands = {r.name for r in prod.by_type(COMMAND) if r.name.startswith("smoker-")}
    # then the update agent's install plan (components.device_app), after the baseline
    plan = agent.agent_plan(
        agent.AgentSettings("prod", "smoker", "smoker-device", prod.config.baseline.app_dir),
        release_public_key(prod.config.secrets.device_release_signing_key),
    )
    installed = {f"smoker-{s.name}" for s in plan}
    assert commands - installed == {"smoker-ready", *(f"smoker-{n}" for n in names)}
    assert installed <= commands
    ready = prod.one(COMMAND, "smoker-ready")
    previous = ready.urn
    for step in steps:
        command = prod.one(COMMAND, f"smoker-{step.name}")
        assert previous in command.depends_on, step.name
        # the SSH user is the machine's own: every step runs through sudo
        assert command.inputs["create"].startswith("sudo -n sh -c "), step.name
        previous = command.urn
    check = prod.one(COMMAND, "smoker-machine-check").inputs["create"]
    assert "guests.smoker.device.serialDevice" in check and "enable_uart=1" in check
    engine = prod.one(COMMAND, "smoker-docker-engine").inputs["create"]
    assert "https://download.docker.com/linux/raspbian" in engine
    assert "/usr/local/bin/crun" not in prod.one(COMMAND, "smoker-docker-config").inputs["create"]


def test_the_physical_smokers_release_is_published_signed_on_the_cloud_guest(
    prod: Synthesis,
) -> None:
    import yaml

    # no release is pushed by `pulumi up`: the device pulls the one published for it
    assert not [r for r in prod.by_type(RELEASE) if r.name.startswith("smoker-")]
    desired = prod.one(DESIRED_RELEASE, "smoker-desired-release")
    inputs = desired.inputs
    cloud = prod.config.guest("prod-cloud")
    assert (inputs["stack"], inputs["guest"]) == ("prod", "smoker")
    assert (inputs["publisherHost"], inputs["publisherUser"]) == (cloud.ssh_host, "root")
    assert inputs["path"] == "/srv/smart-smoker/device-releases/smoker.json"
    assert (inputs["deviceHost"], inputs["deviceUser"]) == ("smoker", "smoker")
    key = prod.config.guest("smoker").ssh_host_key
    assert inputs["deviceHostKey"] == key  # the configured key, never one recorded on first use
    for secret in ("signingKey", "publisherPrivateKey", "devicePrivateKey", "envFiles"):
        assert inputs[secret] == SECRET_MARKER, secret
    assert [c["url"] for c in inputs["checks"]["http"]] == [
        "http://127.0.0.1:3003/api/health",
        "http://127.0.0.1:8080/",
    ]
    compose = yaml.safe_load(inputs["compose"])
    assert compose["name"] == "smoker-device"
    service = compose["services"]["device-service"]
    assert service["devices"] == ["/dev/ttyS0:/dev/ttyS0"]
    assert service["network_mode"] == "host" and service["platform"] == "linux/arm/v7"
    assert service["environment"] == {"NODE_ENV": "production"}
    assert "node -e" in service["healthcheck"]["test"][1]  # the image has no curl
    assert list(compose["services"]) == ["device-service", "smoker-ui"]  # kiosk off
    assert all("@sha256:" in s["image"] for s in compose["services"].values())
    # no MongoDB, no backups, no secret files on the device
    assert not [r for r in prod.by_type(MONGO_USERS) if r.name.startswith("smoker")]
    app = prod.one("smoker:device:DeviceApp", "smoker-app")
    assert app.parent and app.parent.endswith("pulumi:pulumi:Stack::smoker-infra-prod")
    # after the agent is installed on the device and the cloud guest can take the document
    agent_timer = prod.one(COMMAND, "smoker-agent-timer")
    assert "smart-smoker-agent.timer" in agent_timer.inputs["create"]
    assert agent_timer.urn in desired.depends_on
    assert prod.one(COMMAND, "prod-cloud-tailscale-serve").urn in desired.depends_on
    assert prod.one(COMMAND, "smoker-tailscale-serve").urn in agent_timer.depends_on


def test_the_kiosk_runs_only_when_enabled_pinned_like_every_image() -> None:
    import yaml

    from tests.configs import set_path, stack_raw
    from tools.registry import stand_in_digest

    image = "benjr70/smart-smoker-electron-shell:v1.0.0"
    raw = set_path(
        stack_raw("prod"), "guests.smoker.device.kiosk", {"enabled": True, "image": image}
    )
    desired = synthesize("prod", *raw).one(DESIRED_RELEASE, "smoker-desired-release").inputs
    kiosk = yaml.safe_load(desired["compose"])["services"]["electron_shell"]
    assert kiosk["image"] == f"{image}@{stand_in_digest(image)}"
    assert kiosk["platform"] == "linux/arm/v7"
    assert kiosk["healthcheck"]["start_period"] == "60s"


def test_a_device_whose_cloud_guest_does_not_serve_its_release_stops_before_any_resource() -> None:
    from config import ConfigError
    from tests.configs import set_path, stack_raw

    raw = set_path(stack_raw("prod"), "guests.prod-cloud.tailscale.serveDirectories", None)
    with pytest.raises(ConfigError) as caught:
        synthesize("prod", *raw)
    message = str(caught.value)
    assert "guests.prod-cloud.tailscale.serveDirectories" in message
    assert "/srv/smart-smoker/device-releases" in message  # the fix names what to serve


def test_the_smokers_agent_pulls_from_the_cloud_guests_tailnet_name(prod: Synthesis) -> None:
    service = prod.one(COMMAND, "smoker-unit-smart-smoker-agent-service").inputs["stdin"]
    url = "https://smokecloud.tail74646.ts.net:9443/device-releases/smoker.json"
    assert f"--source {url}" in service
    serve = prod.one(COMMAND, "prod-cloud-tailscale-serve").inputs["create"]
    assert "--https=9443 --set-path=/device-releases /srv/smart-smoker/device-releases" in serve
    assert "tailscale funnel --bg --https=9443" not in serve  # tailnet only
