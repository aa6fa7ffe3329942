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


HOST_KEY_FILE = "/etc/ssh/ssh_host_ed25519_key.pub"


def guest_connection(
    guest: GuestSpec,
    private_key: Secret,
    deadline_seconds: int,
    host_key: pulumi.Input[str] | None = None,
) -> remote.ConnectionArgs:
    """SSH to a guest; dial retries sized so a fresh guest gets `deadline_seconds` to boot."""
    return remote.ConnectionArgs(
        host=guest.ssh_host,
        port=22,
        user=guest.ssh_user,
        private_key=pulumi.Output.secret(private_key.reveal()),
        host_key=host_key,
        per_dial_timeout=PER_DIAL_TIMEOUT_SECONDS,
        dial_error_limit=max(10, deadline_seconds // PER_DIAL_TIMEOUT_SECONDS),
    )


def readiness_command(kind: str, deadline_seconds: int) -> str:
    """Returns once the guest finished booting (or fails at the deadline); prints its host key."""
    if kind == "vm":
        # cloud-init exits 2 for "done with recoverable errors"; only 1 is a failed first boot.
        wait = "cloud-init status --wait >/dev/null; rc=$?; [ $rc -eq 0 ] || [ $rc -eq 2 ]"
    else:
        # is-system-running --wait returns non-zero for "degraded", which still means booted.
        wait = "systemctl is-system-running --wait >/dev/null || true"
    return f"timeout {deadline_seconds} sh -c {shlex.quote(wait)} && cat {HOST_KEY_FILE}"


def host_key_of(readiness_stdout: str) -> str:
    """`type base64` from the readiness output (the last line: the guest's ed25519 host key)."""
    lines = (readiness_stdout or "").strip().splitlines()
    if not lines or not lines[-1].startswith("ssh-ed25519 "):
        raise ValueError(f"the readiness check printed no ed25519 host key: {readiness_stdout!r}")
    return " ".join(lines[-1].split()[:2])


@dataclass
class GuestAccess:
    """The readiness gate, and the connection every later step uses (host key pinned)."""

    ready: remote.Command
    connection: remote.ConnectionArgs
    host_key: pulumi.Output[str]


def guest_access(
    name: str,
    args: GuestArgs,
    guest_resource: pulumi.CustomResource,
    parent: pulumi.Resource,
) -> GuestAccess:
    """Wait for SSH, then pin the host key for every later step.

    The configured `sshHostKey` is pinned from the first connection on. Without it, the key the
    guest presents to the readiness check is recorded (trust on first use, like `ssh` itself) and
    pinned for everything after, so a later man-in-the-middle is refused.
    """
    spec, deadline = args.spec, args.readiness_timeout_seconds
    first = guest_connection(spec, args.private_key, deadline, spec.ssh_host_key)
    ready = remote.Command(
        f"{name}-ready",
        connection=first,
        create=readiness_command(spec.kind, deadline),
        triggers=[guest_resource.id],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[guest_resource]),
    )
    host_key = (
        pulumi.Output.from_input(spec.ssh_host_key)
        if spec.ssh_host_key
        else ready.stdout.apply(host_key_of)
    )
    return GuestAccess(
        ready, guest_connection(spec, args.private_key, deadline, host_key), host_key
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
