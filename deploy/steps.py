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
from deploy.release import (
    ReleaseSpec,
    Site,
    repository,
    service_images,
    service_platforms,
    split_ref,
)
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


def fetch(t: Transport, snapshot: str | None) -> dict[str, str]:
    """An off-guest backup fetched by the backup tool (which checks its sha256), checked again."""
    result = t.run(commands.backup_fetch(snapshot), timeout=commands.BACKUP_TIMEOUT)
    lines = result.stdout.strip().splitlines()
    if not result.ok or not lines:
        raise StepError("fetch", f"fetching the off-guest backup failed: {tail(result.stderr)}")
    archive = lines[-1]
    check = t.run(commands.backup_check(archive))
    sha, _, manifest = check.stdout.partition("\n")
    if not check.ok or json.loads(manifest or "{}").get("sha256") != sha.strip():
        raise StepError("fetch", f"the fetched backup {archive} does not match its checksum")
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
    """Pull every image once and resolve it to `repo@sha256:...` (only digests from here).

    Three kinds of reference: `repo@sha256:` (pulled unless present), `repo:tag` (pulled, then
    pinned to the digest the registry serves for it) and `repo:tag@sha256:` (the digest planned
    at preview time: the tag is pulled and must still be that digest, else the deploy stops
    here, before anything changed)."""
    platforms = service_platforms(compose)
    pinned: dict[str, str] = {}
    for ref in sorted(set(service_images(compose).values())):
        renew()
        repo, tag, planned = split_ref(ref)
        platform = platforms.get(ref)
        if planned is not None and tag is None:
            got = t.run(commands.pull_pinned(ref, platform), timeout=timeout)
            if not got.ok:
                raise StepError("pull", f"pulling {ref} failed: {tail(got.stderr)}")
            pinned[ref] = ref
            continue
        tagged = ref if planned is None else f"{repo}:{tag}"  # a planned digest: pull its tag
        got = t.run(commands.pull_tag(tagged, platform), timeout=timeout)
        if not got.ok:
            raise StepError("pull", f"pulling {tagged} failed: {tail(got.stderr)}")
        digests = [d for d in json.loads(got.stdout or "[]") if repository(d) == repo]
        if not digests:
            raise StepError("pull", f"{tagged} has no registry digest for {repo}")
        pinned[ref] = digests[0] if planned is None else _as_planned(ref, repo, planned, digests)
    return pinned


def _as_planned(ref: str, repo: str, planned: str, digests: list[str]) -> str:
    """`repo@<planned>` when the tag, pulled now, is still the planned digest; else the
    refusal naming both. (`RepoDigests` lists the digests of this repository that name the
    image the tag serves now; for a multi-arch tag, the index's. The planned digest is among
    them only when it names that very image.)"""
    want = f"{repo}@{planned}"
    if want in digests:
        return want
    now = " or ".join(d.partition("@")[2] for d in digests)
    raise StepError(
        "pull",
        f"{ref}: the preview planned {planned}, but the registry now serves {now} for this "
        "tag: the tag moved after the preview was approved. Run the preview again and approve "
        "the new digests, then deploy",
    )


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
