"""The operator CLI: the deploy engine without Pulumi.

    python -m deploy --stack dev --guest dev-cloud status
    python -m deploy --stack dev --guest dev-cloud history [--limit 20]
    python -m deploy --stack dev --guest dev-cloud rollback [--to RELEASE]
    python -m deploy --stack dev --guest dev-cloud backup
    python -m deploy --stack dev --guest dev-cloud lock status|break [--force]

The guest's address, login, project and policy come from `Pulumi.<stack>.yaml` (no secrets are
needed: a rollback uses the env files stored in the release itself). The SSH key is a file
(`--ssh-key`, default `$SMOKER_SSH_KEY` or ~/.ssh/id_ed25519); the host key is pinned from
`--host-key`, the guest's `sshHostKey`, or ~/.ssh/known_hosts, never accepted blindly.

No Pulumi here: the stack file is read by the config package (`config.stack_file`). Every error
an operator can meet ends as one line on stderr (`error: ...`) and a non-zero exit: 2 for a wrong
stack file or argument, 1 for what happened on the host, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

import layout
from config.stack_file import StackFileError, stack_file_config
from deploy import agent_status
from deploy.engine import Engine, Policy, deployer, over_ssh
from deploy.release import Site
from deploy.transport import SshTarget
from errors import SmokerError

REPO = Path(__file__).resolve().parent.parent


class UsageError(SmokerError):
    """The arguments or the stack file do not name a guest that can be reached."""


@dataclass(frozen=True)
class GuestSite:
    target: SshTarget
    site: Site
    policy: Policy


def known_host_key(host: str, path: Path | None = None) -> str:
    path = path or Path.home() / ".ssh" / "known_hosts"
    if not path.is_file():
        return ""
    keys = paramiko.HostKeys(str(path)).lookup(host) or {}
    for kind in ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"):
        if kind in keys:
            return f"{kind} {keys[kind].get_base64()}"
    return ""


def guest_site(args: argparse.Namespace) -> GuestSite:
    """The guest's connection, project and policy from the stack file and the flags."""
    from config import ConfigError, StackConfig, parse_config  # no Pulumi: the config alone

    values, secret_keys = stack_file_config(args.stack, Path(args.stack_dir))
    try:
        cfg = parse_config(values, secret_keys, args.stack)
    except ConfigError as exc:
        raise UsageError(f"Pulumi.{args.stack}.yaml: {exc}") from None
    if not isinstance(cfg, StackConfig):
        raise UsageError(f"stack {args.stack} runs no services: deploy to dev or prod")
    names = [g.name for g in cfg.guests]
    if args.guest not in names:
        raise UsageError(f"--guest {args.guest}: stack {args.stack} has {', '.join(names)}")
    spec = cfg.guest(args.guest)
    host = args.host or spec.ssh_host
    key_file = Path(args.ssh_key).expanduser()
    if not key_file.is_file():
        raise UsageError(f"no SSH private key at {key_file}: pass --ssh-key or set SMOKER_SSH_KEY")
    host_key = args.host_key or spec.ssh_host_key or known_host_key(host)
    if not host_key:
        raise UsageError(
            f"no host key for {host}: pass --host-key, set guests.{spec.name}.sshHostKey, "
            f"or add the guest to ~/.ssh/known_hosts"
        )
    deploy = cfg.app.deploy
    return GuestSite(
        SshTarget(host, args.user or spec.ssh_user, key_file.read_text(), args.port, host_key),
        Site(
            layout.project_name(cfg.environment, spec.kind),
            cfg.baseline.app_dir,
            proxied=spec.kind == "lxc",
        ),
        Policy(
            backup=spec.kind == "lxc",
            restore_on_rollback=deploy.rollback_restores_backup,
            keep_releases=deploy.keep_releases,
            verify_timeout=deploy.verify_timeout_seconds,
            lock_lease=deploy.lock_lease_seconds,
            failing_window=deploy.failing_window_seconds,
            drain_seconds=deploy.drain_seconds,
        ),
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deploy", description=__doc__.split("\n\n")[0])
    p.add_argument("--stack", default="dev")
    p.add_argument("--guest", required=True, help="a guest name from the stack file")
    p.add_argument("--stack-dir", default=str(REPO), help="where Pulumi.<stack>.yaml is")
    p.add_argument("--host", help="override the guest's sshHost")
    p.add_argument("--port", type=int, default=22)
    p.add_argument("--user", help="override the SSH user")
    p.add_argument("--host-key", help='pin this host key ("ssh-ed25519 AAAA...")')
    p.add_argument(
        "--ssh-key",
        default=os.environ.get("SMOKER_SSH_KEY", "~/.ssh/id_ed25519"),
        help="private key file",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", required=True)
    status = sub.add_parser(
        "status",
        parents=[as_json],
        help="the live release, its digests, its health (and the update agent's last report)",
    )
    status.add_argument(
        "--agent-max-age",
        type=float,
        default=agent_status.REPORT_MAX_AGE_HOURS,
        metavar="HOURS",
        help="a device agent's report older than this is a finding",
    )
    history = sub.add_parser("history", parents=[as_json], help="the ledger, newest last")
    history.add_argument("--limit", type=int, default=20)
    rollback = sub.add_parser("rollback", help="make an earlier release live again, verified")
    rollback.add_argument("--to", help="a release id (default: the one before the live one)")
    sub.add_parser("backup", parents=[as_json], help="a verified MongoDB backup now")
    restore = sub.add_parser(
        "restore",
        parents=[as_json],
        help="the rebuild drill: restore an off-guest backup under the live release, verified",
    )
    restore.add_argument(
        "--snapshot",
        help="a restic snapshot id or archive name (default: the newest made before this guest)",
    )
    restore.add_argument(
        "--force",
        action="store_true",
        help="replace data the guest already holds (backed up first)",
    )
    lock = sub.add_parser("lock", help="the host's deploy lock")
    lock.add_argument("action", choices=["status", "break"])
    lock.add_argument("--force", action="store_true", help="break a lock that is not stale")
    return p


def _status(engine: Engine, args: argparse.Namespace, cli: str) -> dict[str, Any]:
    """The engine's status; on a guest that runs the update agent, its section and findings."""
    status = engine.status()
    if agent_status.installed(engine.t):
        section, findings = agent_status.agent_status(
            engine.t,
            status.get("release"),
            engine.clock(),
            max_age_hours=args.agent_max_age,
            cli=cli,
        )
        status["agent"] = section
        status["findings"] = [*(status.get("findings") or []), *findings]
    return status


def _show(data: Any, as_json: bool) -> str:
    if as_json:
        return json.dumps(data, indent=2, sort_keys=True)
    if isinstance(data, dict):
        findings = data.pop("findings", None) or []
        agent = data.pop("agent", None)
        lines = [
            f"{k}: {json.dumps(v) if isinstance(v, dict | list) else v}" for k, v in data.items()
        ]
        for key, value in (agent or {}).items():
            if isinstance(value, dict):
                lines += [f"agent.{key}.{k}: {v}" for k, v in value.items() if v is not None]
            else:
                lines.append(f"agent.{key}: {value}")
        return "\n".join(lines + [f"problem: {finding}" for finding in findings])
    return str(data)


def _history_line(r: dict[str, Any]) -> str:
    rollback = r.get("rollback") or {}
    back = (
        f" -> rolled back to {rollback.get('to')} ({rollback.get('outcome')})" if rollback else ""
    )
    error = f" [{r.get('step')}: {r.get('error')}]" if r.get("error") else ""
    return (
        f"{r.get('started')} {r.get('action'):8} {r.get('outcome'):15} {r.get('release')}"
        f" by {r.get('who')}{back}{error}"
    )


def run(args: argparse.Namespace, out: Any = None) -> int:
    out = out or sys.stdout
    guest = guest_site(args)
    cli = f"python -m deploy --stack {args.stack} --guest {args.guest}"
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    options = {"log": log, "cli": cli, "redeploy": f"pulumi up --stack {args.stack}"}
    with over_ssh(guest.target, guest.site, deployer("cli"), guest.policy, **options) as engine:
        if args.command == "status":
            print(_show(_status(engine, args, cli), args.json), file=out)
        elif args.command == "history":
            records = engine.history()[-args.limit :]
            text = (
                json.dumps(records, indent=2)
                if args.json
                else "\n".join(_history_line(r) for r in records)
            )
            print(text, file=out)
        elif args.command == "rollback":
            outcome = engine.rollback(args.to)
            print(f"release {outcome.release} is live and verified", file=out)
        elif args.command == "backup":
            print(_show(engine.backup(), args.json), file=out)
        elif args.command == "restore":
            print(_show(engine.restore(args.snapshot, force=args.force), args.json), file=out)
        elif args.action == "status":
            holder = engine.lock.status()
            print(holder.describe(engine.clock()) if holder else "unlocked", file=out)
        else:
            broken = engine.break_lock(force=args.force)
            print(
                f"broke the lock of {broken.who} ({broken.what})" if broken else "unlocked",
                file=out,
            )
    return 0


def one_line(message: str) -> str:
    return " | ".join(line.strip() for line in message.splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except (UsageError, StackFileError) as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except SmokerError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted (an attempt in progress is recorded in the ledger)", file=sys.stderr)
        return 130
