"""What every guest shares: its SSH connection, its readiness gate and its stack outputs."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_command import remote

from components.proxmox_host import ProxmoxHost
from config import Guest, GuestSpec, HostSpec, NetworkSettings, ProxmoxSettings, Secret
from rendering.plan import HOST_KEY_FILE, Step, host_key_of

PER_DIAL_TIMEOUT_SECONDS = 10
# pulumi-command retries a refused dial with a backoff capped at 5 s (connection.go,
# dialWithRetry over retry.Until), so a dial limit is not a deadline: 60 refusals end after
# about 4.3 minutes, 60 timeouts after 15. The readiness gate dials without a limit and gets its
# deadline from customTimeouts, which the provider turns into the context that ends the retries
# (pulumi-go-provider middleware/cancel). Later steps meet a guest that is already up: they ride
# out a short blip with a fixed limit, the same whatever the readiness deadline is, so changing
# `readinessTimeoutSeconds` does not change (and re-run) every step.
UNLIMITED_DIALS = -1
STEP_DIAL_ERROR_LIMIT = 30


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
    guest: Guest,
    private_key: Secret,
    host_key: pulumi.Input[str] | None = None,
    dial_error_limit: int = STEP_DIAL_ERROR_LIMIT,
) -> remote.ConnectionArgs:
    """SSH to a guest as its configured user, pinning `host_key` when it is given."""
    return remote.ConnectionArgs(
        host=guest.ssh_host,
        port=22,
        user=guest.ssh_user,
        private_key=pulumi.Output.secret(private_key.reveal()),
        host_key=host_key,
        per_dial_timeout=PER_DIAL_TIMEOUT_SECONDS,
        dial_error_limit=dial_error_limit,
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


@dataclass(frozen=True)
class HostArgs:
    """An existing machine (`kind: host`): no Proxmox resource, reached at its `sshHost`."""

    spec: HostSpec
    private_key: Secret
    readiness_timeout_seconds: int


@dataclass
class GuestAccess:
    """What configures a guest: its Proxmox resource (None: an existing machine, which nothing
    here creates or replaces), the readiness gate, and the connection every later step uses
    (host key pinned)."""

    machine: pulumi.CustomResource | None
    ready: remote.Command
    connection: remote.ConnectionArgs
    host_key: pulumi.Output[str]

    def configures(self, **kwargs: Any) -> pulumi.ResourceOptions:
        """Options for a resource that configures this guest.

        `deleted_with` ties it to the guest's lifetime: the engine replaces it whenever the guest
        is replaced (step_generator.go: "its DeletedWith resource is being replaced"), so a
        rebuilt guest converges fully in the same `pulumi up`, even though its ID (the pinned
        VMID) never changes; and its own delete is skipped when the guest goes (step.go,
        isDeletedWith), so nothing talks to a guest that is being destroyed.
        """
        return pulumi.ResourceOptions(deleted_with=self.machine, **kwargs)


def guest_access(
    name: str,
    args: GuestArgs | HostArgs,
    guest_resource: pulumi.CustomResource | None,
    parent: pulumi.Resource,
) -> GuestAccess:
    """Wait for SSH, then pin the host key for every later step.

    The configured `sshHostKey` is pinned from the first connection on. Without it, the key the
    guest presents to the readiness check is recorded (trust on first use, like `ssh` itself) and
    pinned for everything after, so a later man-in-the-middle is refused. An existing machine
    (`guest_resource` None) always has its key configured: it is never trusted on first use.
    """
    spec, deadline = args.spec, args.readiness_timeout_seconds
    first = guest_connection(
        spec, args.private_key, spec.ssh_host_key, dial_error_limit=UNLIMITED_DIALS
    )
    ready = remote.Command(
        f"{name}-ready",
        connection=first,
        create=readiness_command(spec.kind, deadline),
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=[guest_resource] if guest_resource is not None else None,
            deleted_with=guest_resource,
            custom_timeouts=pulumi.CustomTimeouts(create=f"{deadline}s", update=f"{deadline}s"),
        ),
    )
    host_key = (
        pulumi.Output.from_input(spec.ssh_host_key)
        if spec.ssh_host_key
        else ready.stdout.apply(host_key_of)
    )
    return GuestAccess(
        guest_resource, ready, guest_connection(spec, args.private_key, host_key), host_key
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
    access: GuestAccess,
    after: pulumi.Resource,
    parent: pulumi.Resource,
    stdin: Mapping[str, pulumi.Input[str]] | None = None,
) -> list[remote.Command]:
    """One remote command per apply-plan step, run in order after `after` (`stdin`: what steps
    read that is only known at apply time, by step name).

    Steps re-run when their script or stdin change, all of them when `after` is replaced, and
    all of them when the guest is rebuilt (`GuestAccess.configures`). A step whose stdin is
    secret keeps stdin and output secret and unlogged.
    """
    commands: list[remote.Command] = []
    previous = after
    for step in steps:
        text: pulumi.Input[str] | None = (stdin or {}).get(step.name, step.stdin)
        if step.secret and text is not None:
            text = pulumi.Output.secret(text)
        previous = remote.Command(
            f"{guest_name}-{step.name}",
            connection=access.connection,
            create=step.command(user),
            stdin=text,
            triggers=[after.id],  # type: ignore[attr-defined]
            add_previous_output_in_env=False,
            logging=remote.Logging.NONE if step.secret else remote.Logging.STDOUT_AND_STDERR,
            opts=access.configures(
                parent=parent,
                depends_on=[previous],
                additional_secret_outputs=["stdin", "stdout", "stderr"] if step.secret else None,
            ),
        )
        commands.append(previous)
    return commands
