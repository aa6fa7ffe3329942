"""What every guest shares: its SSH connection, its readiness gate and its stack outputs."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import pulumi
from pulumi_command import remote

from components.proxmox_host import ProxmoxHost
from rendering.plan import Step
from stacks.config import GuestSpec, NetworkSettings, ProxmoxSettings, Secret

PER_DIAL_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class GuestArgs:
    spec: GuestSpec
    proxmox: ProxmoxSettings
    network: NetworkSettings
    host: ProxmoxHost
    authorized_keys: tuple[str, ...]
    private_key: Secret
    readiness_timeout_seconds: int


def guest_connection(
    guest: GuestSpec, private_key: Secret, deadline_seconds: int
) -> remote.ConnectionArgs:
    """SSH to a guest; dial retries sized so a fresh guest gets `deadline_seconds` to boot."""
    return remote.ConnectionArgs(
        host=guest.ssh_host,
        port=22,
        user=guest.ssh_user,
        private_key=pulumi.Output.secret(private_key.reveal()),
        host_key=guest.ssh_host_key,
        per_dial_timeout=PER_DIAL_TIMEOUT_SECONDS,
        dial_error_limit=max(10, deadline_seconds // PER_DIAL_TIMEOUT_SECONDS),
    )


def readiness_command(kind: str, deadline_seconds: int) -> str:
    """Remote command that returns once the guest finished booting, or fails at the deadline."""
    if kind == "vm":
        # cloud-init exits 2 for "done with recoverable errors"; only 1 is a failed first boot.
        wait = "cloud-init status --wait >/dev/null; rc=$?; [ $rc -eq 0 ] || [ $rc -eq 2 ]"
    else:
        # is-system-running --wait returns non-zero for "degraded", which still means booted.
        wait = "systemctl is-system-running --wait >/dev/null || true"
    return f"timeout {deadline_seconds} sh -c {shlex.quote(wait)} && hostname"


def wait_for_ssh(
    name: str,
    guest: GuestSpec,
    connection: remote.ConnectionArgs,
    deadline_seconds: int,
    guest_resource: pulumi.Resource,
    parent: pulumi.Resource,
) -> remote.Command:
    """A command that succeeds once SSH answers and the guest has booted (re-run on replacement)."""
    return remote.Command(
        f"{name}-ready",
        connection=connection,
        create=readiness_command(guest.kind, deadline_seconds),
        triggers=[guest_resource.id],  # type: ignore[attr-defined]
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[guest_resource]),
    )


def guest_outputs(spec: GuestSpec, proxmox: ProxmoxSettings) -> dict[str, object]:
    """What the stack exports for every guest."""
    return {
        "vmid": spec.vmid,
        "hostname": spec.hostname,
        "ipv4": str(spec.ipv4.ip),
        "node": proxmox.node,
    }


def step_commands(
    guest_name: str,
    steps: list[Step],
    user: str,
    connection: remote.ConnectionArgs,
    after: pulumi.Resource,
    parent: pulumi.Resource,
) -> list[remote.Command]:
    """One remote command per apply-plan step, run in order after `after`.

    Steps re-run when their script or stdin change, and all of them when `after` is replaced
    (a rebuilt guest). A step whose stdin is secret keeps stdin and output secret and unlogged.
    """
    commands: list[remote.Command] = []
    previous = after
    for step in steps:
        stdin: pulumi.Input[str] | None = step.stdin
        if step.secret and step.stdin is not None:
            stdin = pulumi.Output.secret(step.stdin)
        previous = remote.Command(
            f"{guest_name}-{step.name}",
            connection=connection,
            create=step.command(user),
            stdin=stdin,
            triggers=[after.id],  # type: ignore[attr-defined]
            add_previous_output_in_env=False,
            logging=remote.Logging.NONE if step.secret else remote.Logging.STDOUT_AND_STDERR,
            opts=pulumi.ResourceOptions(
                parent=parent,
                depends_on=[previous],
                additional_secret_outputs=["stdin", "stdout", "stderr"] if step.secret else None,
            ),
        )
        commands.append(previous)
    return commands
