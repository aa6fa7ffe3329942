"""What the deploy engine runs on the guest: every command line, built here and nowhere else.

Pure functions from names and paths to POSIX shell (run as root by a `Transport`); the unit tests
pin them by exact strings, and the fake host recognises them. Secrets never appear here: they
travel on stdin (`write_file`).
"""

from __future__ import annotations

import shlex

from deploy.release import Site
from layout import (
    BACKUP_TOOL,
    BOOTSTRAP_COMPOSE,
    COMMITTED_MARK,
    COMPOSE_FILE,
    CURRENT,
    MANIFEST,
    MONGO_SERVICE,
    RELEASES,
    STAGING_PREFIX,
    running_service,
)

q = shlex.quote
BACKUP_TIMEOUT = 1800.0  # a dump or a restore of the whole database


# -- reading the host -------------------------------------------------------------------------


def read_current(site: Site) -> str:
    """The target of `current` (empty when there is none)."""
    return f"readlink {q(site.current)} || true"


def list_releases(site: Site) -> str:
    """`<release-id> <1|0>` a line (committed or not), for every directory with a manifest."""
    return (
        f"cd {q(site.releases)} 2>/dev/null || exit 0; for d in */; do d=${{d%/}}; "
        f'[ -f "$d/{MANIFEST}" ] || continue; '
        f'if [ -f "$d/{COMMITTED_MARK}" ]; then echo "$d 1"; else echo "$d 0"; fi; done'
    )


def survey(site: Site, ledger_path: str) -> str:
    """The host's state in one round trip, a fact a line (see `deploy.diagnosis.HostState`):
    `ledger` (when it exists), `current <target>`, `release <id> <1|0>`, `staging <name>`."""
    return (
        f"[ -f {q(ledger_path)} ] && echo ledger; "
        f'echo "current $(readlink {q(site.current)} || true)"; '
        f"cd {q(site.releases)} 2>/dev/null || exit 0; "
        f'for d in */ {STAGING_PREFIX}*/; do d=${{d%/}}; [ -d "$d" ] || continue; '
        f'case "$d" in {STAGING_PREFIX}*) echo "staging $d"; continue ;; esac; '
        f'[ -f "$d/{MANIFEST}" ] || continue; '
        f'if [ -f "$d/{COMMITTED_MARK}" ]; then echo "release $d 1"; else echo "release $d 0"; fi; '
        "done"
    )


def cat_manifest(site: Site, release_id: str) -> str:
    return f"cat {q(manifest_path(site, release_id))}"


def manifest_path(site: Site, release_id: str) -> str:
    return f"{site.release_dir(release_id)}/{MANIFEST}"


def mongo_running(site: Site) -> str:
    return running_service(site.project)


def db_url(env_path: str) -> str:
    """The `DB_URL=` value of an env file (the output is secret: never logged)."""
    return f"sed -n 's/^DB_URL=//p' {q(env_path)}"


def curl(url: str) -> str:
    """The body of `url`, then its HTTP status on the last line (000 when nothing answered)."""
    return f"curl -s -m 5 -w '\\n%{{http_code}}' {q(url)}"


def compose_ps(site: Site, release_id: str) -> str:
    return f"{site.compose(release_id)} ps -a --format json"


# -- backups (the backup tool, rendering/backup.sh) -------------------------------------------


def backup_dump(kind: str) -> str:
    """A verified dump; the archive's path is the last line of the output."""
    return f"{BACKUP_TOOL} dump --class {q(kind)}"


def backup_check(archive: str) -> str:
    """The archive's gzip integrity, then its sha256, then its manifest (JSON)."""
    return (
        f'a={q(archive)}; gzip -t "$a" && sha256sum "$a" | cut -d\' \' -f1 && '
        'cat "${a%.archive.gz}.json"'
    )


def backup_restore(archive: str) -> str:
    return f"{BACKUP_TOOL} restore {q(archive)} --in-place"


def backup_prune() -> str:
    return f"{BACKUP_TOOL} prune >/dev/null"


# -- changing the host ------------------------------------------------------------------------


def drop_staging(site: Site) -> str:
    """Remove the `.staging-*` directories a dead deploy left; prints each one removed."""
    return (
        f"cd {q(site.releases)} 2>/dev/null || exit 0; "
        f'for d in {STAGING_PREFIX}*; do [ -e "$d" ] || continue; rm -rf "$d"; '
        'echo "$d"; done'
    )


def make_staging(site: Site, staging: str) -> str:
    return f"mkdir -p {q(site.releases)} && install -d -m 0700 {q(staging)}"


def write_file(path: str) -> str:
    """stdin to `path`, root-only."""
    return f"umask 077 && cat > {q(path)}"


def remove(*paths: str) -> str:
    return "rm -rf " + " ".join(q(path) for path in paths)


def pull_pinned(ref: str, platform: str | None = None) -> str:
    """A `repo@sha256:` reference: pulled unless it is already here."""
    pull = f"docker pull -q{_on(platform)} {q(ref)}"
    return f"docker image inspect {q(ref)} >/dev/null 2>&1 || {pull}"


def pull_tag(ref: str, platform: str | None = None) -> str:
    """A tag: pulled, then its registry digests (a JSON list) printed. For a multi-arch tag
    the registry digest is the index's (the manifest list's), whatever the platform."""
    return (
        f"docker pull -q{_on(platform)} {q(ref)} >/dev/null && "
        f"docker image inspect --format '{{{{json .RepoDigests}}}}' {q(ref)}"
    )


def _on(platform: str | None) -> str:
    """The service's `platform:` (e.g. linux/arm/v7 on the x86 device VM): the image pulled is
    the one compose runs, and an index without the machine's own platform still pulls."""
    return f" --platform {q(platform)}" if platform else ""


def seal(staging: str, target: str) -> str:
    """Check the staged compose file, then move the staging directory into place whole."""
    return (
        f"docker compose -f {q(staging + '/' + COMPOSE_FILE)} config -q && "
        f"mv -T {q(staging)} {q(target)}"
    )


def compose_up(site: Site, release_id: str) -> str:
    return f"{site.compose(release_id)} up -d --remove-orphans"


def commit(site: Site, release_id: str) -> str:
    """Mark the release committed and point `current` at it (a relative link, swapped whole)."""
    rel = f"{RELEASES}/{release_id}"
    return (
        f"cd {q(site.app_dir)} && touch {q(rel + '/' + COMMITTED_MARK)} && "
        f"ln -sfn {q(rel)} .{CURRENT}.new && mv -T .{CURRENT}.new {CURRENT}"
    )


def remove_images(refs: list[str]) -> str:
    return f"docker image rm {' '.join(q(ref) for ref in refs)} >/dev/null 2>&1 || true"


def start_mongo(site: Site, release_id: str | None) -> str:
    """Start MongoDB alone: from the live release, or from the bootstrap file of a fresh guest."""
    if release_id is None:
        bootstrap = f"{site.app_dir}/{BOOTSTRAP_COMPOSE}"
        return f"docker compose -p {q(site.project)} -f {q(bootstrap)} up -d --wait {MONGO_SERVICE}"
    return f"{site.compose(release_id)} up -d --wait {MONGO_SERVICE}"
