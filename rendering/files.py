"""Every file the program renders for a stack, by path under `build/<stack>/` (shown by synth)."""

from __future__ import annotations

from config import CommonConfig, Guest, GuestSpec, HostStackConfig, StackConfig
from rendering import app, backup, proxmox_host, proxy
from rendering.app import AppSecrets
from rendering.baseline import baseline_plan
from rendering.plan import Step
from rendering.restic import ResticSecrets
from rendering.runner import runner_guest_plan
from rendering.tailscale import tailscale_plan


def guest_plan(cfg: CommonConfig, guest: Guest, auth_key: str = "") -> list[Step]:
    """The whole apply plan of a guest: baseline, then Tailscale."""
    return baseline_plan(cfg, guest) + tailscale_plan(guest, auth_key)


SYNTH_RUNNER_TOKEN = "<githubRunnerToken>"
SYNTH_SECRETS = AppSecrets(
    "<mongoRootPassword>",
    "<mongoAppPassword>",
    "<vapidPrivateKey>",
    None,
    ResticSecrets(
        "sftp:<user>@<host>:<path>",
        "<resticPassword>",
        "<resticSshPrivateKey>",
        "<resticSshKnownHosts>",
    ),
)


def app_files_plan(cfg: StackConfig, guest: Guest, secrets: AppSecrets | None) -> list[Step]:
    """Before the first release: secret files, backup tooling, MongoDB (cloud); arm/v7 (VM);
    nothing on an existing machine."""
    if guest.kind != "lxc":
        return app.arm_check_plan(cfg, guest)
    assert secrets is not None, "a cloud guest needs its application secrets"
    project = app.project_name(cfg, guest)
    return (
        app.secret_files_plan(cfg, secrets)
        + backup.backup_plan(cfg, project, secrets.backup_webhook_url, secrets.restic)
        + proxy.proxy_plan(cfg, guest)
        + app.mongo_bootstrap_plan(cfg, guest)  # last: the MongoDB users come after it
    )


def app_plan(cfg: StackConfig, guest: Guest) -> list[Step]:
    """The application steps as synth shows them (secret files listed, never rendered)."""
    return app_files_plan(cfg, guest, SYNTH_SECRETS)


def host_files(cfg: CommonConfig) -> dict[str, str]:
    files: dict[str, str] = {}
    if isinstance(cfg, HostStackConfig):
        files["proxmox-node/nat-apply.sh"] = proxmox_host.nat_apply_script(cfg.network)
        files["proxmox-node/nat-remove.sh"] = proxmox_host.nat_remove_script()
        files[f"proxmox-node/{proxmox_host.NAT_UNIT_NAME}"] = proxmox_host.nat_unit(cfg.network)
        files["proxmox-node/sysctl-nat.conf"] = proxmox_host.nat_sysctl()
        files["proxmox-node/vendor-data.yaml"] = proxmox_host.vendor_data()
    for guest in cfg.guests:
        steps = guest_plan(cfg, guest)
        if isinstance(cfg, StackConfig):
            steps += app_plan(cfg, guest)
        elif isinstance(cfg, HostStackConfig) and isinstance(guest, GuestSpec):
            steps += runner_guest_plan(cfg, guest, SYNTH_RUNNER_TOKEN)
        for number, step in enumerate(steps, start=1):
            files[f"{guest.name}/steps/{number:02d}-{step.name}.sh"] = step.script
            for path, content in step.files.items():
                files[f"{guest.name}/files{path}"] = content
        if isinstance(cfg, StackConfig):
            # The release the Release resource stages (tags here; pinned to digests on the guest).
            files[f"{guest.name}/release/compose.yaml"] = app.compose_file(cfg, guest)
    return files
