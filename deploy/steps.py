"""The steps of an attempt that build something on the guest: a verified backup, a staged
release, its images pulled and pinned by digest, and the sealed release directory.

Each step runs its commands (`deploy.commands`) over the transport and raises `StepError` naming
itself when it fails; a step that fails removes what it created, so a failure before `up` leaves
the host exactly as it was.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from deploy import commands
from deploy.checks import tail
from deploy.record import StepError
from deploy.release import ReleaseSpec, Site, repository, service_images
from deploy.transport import Transport
from layout import COMPOSE_FILE, MANIFEST, STAGING_PREFIX


def backup(t: Transport, kind: str) -> dict[str, str]:
    """Dump with the backup tool, then check the archive against its manifest ourselves."""
    result = t.run(commands.backup_dump(kind), timeout=commands.BACKUP_TIMEOUT)
    lines = result.stdout.strip().splitlines()
    if not result.ok or not lines:
        raise StepError("backup", f"the backup failed: {tail(result.stderr)}")
    archive = lines[-1]
    check = t.run(commands.backup_check(archive))
    if not check.ok:
        raise StepError("backup", f"the backup {archive} is not intact: {tail(check.stderr)}")
    sha, _, manifest = check.stdout.partition("\n")
    if json.loads(manifest).get("sha256") != sha.strip():
        raise StepError("backup", f"the backup {archive} does not match its checksum")
    return {"id": archive.rsplit("/", 1)[-1], "path": archive, "sha256": sha.strip()}


def restore_backup(t: Transport, backup: Mapping[str, str]) -> None:
    result = t.run(commands.backup_restore(backup["path"]), timeout=commands.BACKUP_TIMEOUT)
    if not result.ok:
        raise StepError("restore", f"restoring {backup['id']} failed: {tail(result.stderr)}")


def stage(t: Transport, site: Site, spec: ReleaseSpec) -> str:
    """A new root-only staging directory holding the release's env files (secret, on stdin)."""
    staging = f"{site.releases}/{STAGING_PREFIX}{secrets.token_hex(4)}"
    made = t.run(commands.make_staging(site, staging))
    if not made.ok:
        raise StepError("stage", f"could not create {staging}: {tail(made.stderr)}")
    for name, content in spec.env_files.items():
        wrote = t.run(commands.write_file(f"{staging}/{name}"), stdin=content.encode())
        if not wrote.ok:
            t.run(commands.remove(staging))
            raise StepError("stage", f"could not write {name}: {tail(wrote.stderr)}")
    return staging


def pull(t: Transport, compose: str, timeout: float, renew: Callable[[], None]) -> dict[str, str]:
    """Pull every image once and resolve it to `repo@sha256:...` (only digests from here)."""
    pinned: dict[str, str] = {}
    for ref in sorted(set(service_images(compose).values())):
        renew()
        by_digest = "@sha256:" in ref
        command = commands.pull_pinned(ref) if by_digest else commands.pull_tag(ref)
        got = t.run(command, timeout=timeout)
        if not got.ok:
            raise StepError("pull", f"pulling {ref} failed: {tail(got.stderr)}")
        if by_digest:
            pinned[ref] = ref
            continue
        repo = repository(ref)
        digests = [d for d in json.loads(got.stdout or "[]") if repository(d) == repo]
        if not digests:
            raise StepError("pull", f"{ref} has no registry digest for {repo}")
        pinned[ref] = digests[0]
    return pinned


def seal(
    t: Transport,
    site: Site,
    staging: str,
    release_id: str,
    compose: str,
    manifest: Mapping[str, Any],
) -> None:
    """Write compose and manifest, check the compose file, then move it in place whole."""
    compose = (
        f"# Release {release_id}, images pinned by digest. Managed by smoker-infra.\n" + compose
    )
    for name, text in (
        (COMPOSE_FILE, compose),
        (MANIFEST, json.dumps(manifest, indent=2) + "\n"),
    ):
        t.run(commands.write_file(f"{staging}/{name}"), stdin=text.encode())
    sealed = t.run(commands.seal(staging, site.release_dir(release_id)))
    if not sealed.ok:
        t.run(commands.remove(staging))
        raise StepError("stage", f"the release's compose file is invalid: {tail(sealed.stderr)}")
