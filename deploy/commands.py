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
    PROJECT_LABEL,
    PROXY_CONF,
    PROXY_MOUNT,
    PROXY_SERVICE,
    PROXY_STATUS_PORT,
    PROXY_UPSTREAMS,
    RELEASES,
    SERVICE_LABEL,
    STAGING_PREFIX,
    container_name,
    data_network,
    edge_network,
    proxy_conf_dir,
    proxy_dir,
    proxy_project,
    release_project,
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


def compose_ps(site: Site, release_id: str, project: str | None = None) -> str:
    return f"{site.compose(release_id, project)} ps -a --format json"


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


def backup_fetch(snapshot: str | None) -> str:
    """An off-guest backup into the backup directory, checked against its manifest; the
    archive's path is the last line of the output."""
    return f"{BACKUP_TOOL} fetch" + (f" {q(snapshot)}" if snapshot else "")


def backup_report() -> str:
    """The backup tool's JSON report (newest local and off-guest copies, problems), if any."""
    return f"if [ -x {BACKUP_TOOL} ]; then {BACKUP_TOOL} report; fi"


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


def write_file_whole(path: str, mode: str, dir_mode: str = "0755") -> str:
    """Write stdin to `path` whole or not at all: a temporary file in the same directory, its
    mode set before the rename, so no reader ever sees a partial or a wrongly-readable file."""
    target = q(path)
    return (
        f'set -eu; target={target}; dir=$(dirname "$target"); '
        f'[ -d "$dir" ] || install -d -m {dir_mode} "$dir"; '
        'tmp=$(mktemp "$dir/.$(basename "$target").XXXXXX"); '
        "trap 'rm -f \"$tmp\"' EXIT; "
        f'cat > "$tmp"; chmod {mode} "$tmp"; sync "$tmp" 2>/dev/null || true; '
        'mv -f "$tmp" "$target"; trap - EXIT'
    )


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


# -- the cutover (cloud guests: deploy/cutover.py) ---------------------------------------------


def ensure_networks(site: Site) -> str:
    """The data network (MongoDB's, made by its project) and the edge network, if missing."""
    names = " ".join(q(n) for n in (data_network(site.project), edge_network(site.project)))
    return (
        f'for n in {names}; do docker network inspect "$n" >/dev/null 2>&1 || '
        'docker network create "$n" >/dev/null || exit 1; done'
    )


def up_data(site: Site, release_id: str) -> str:
    """MongoDB from the release's file, in the guest's project: recreated only if it changed."""
    return f"{site.compose(release_id)} up -d --wait {MONGO_SERVICE}"


def up_release(site: Site, release_id: str) -> str:
    """The release's app services in its own project (MongoDB's profile keeps it out)."""
    return f"{site.compose(release_id, release_project(site.project, release_id))} up -d"


def addresses(project: str) -> str:
    """`<service> <ip>` for each running container of a project (its first network's IP)."""
    return (
        f"docker ps -q --filter label={PROJECT_LABEL}={q(project)} | xargs -r docker inspect "
        f'-f \'{{{{index .Config.Labels "{SERVICE_LABEL}"}}}} '
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}'"
    )


def projects(site: Site) -> str:
    """The Compose projects with containers (running or not), one a line."""
    return (
        f"docker ps -a --filter label={PROJECT_LABEL} "
        f"--format '{{{{.Label \"{PROJECT_LABEL}\"}}}}' | sort -u"
    )


def connections(project: str, ports: dict[str, int]) -> str:
    """`<service> <n>`: established TCP connections to each service's port, counted in its
    container's network namespace (from the host's /proc: no tool needed in the image)."""
    lines = []
    for service, port in sorted(ports.items()):
        name = q(container_name(project, service))
        lines.append(
            f"pid=$(docker inspect -f '{{{{.State.Pid}}}}' {name} 2>/dev/null || echo 0); "
            f'if [ "$pid" -gt 0 ]; then n=$(awk \'$2 ~ /:{port:04X}$/ && $4 == "01"\' '
            f"/proc/$pid/net/tcp /proc/$pid/net/tcp6 2>/dev/null | wc -l); else n=0; fi; "
            f'echo "{service} $n"'
        )
    return "; ".join(lines)


def down_project(project: str, grace: int) -> str:
    """Stop (SIGTERM, then SIGKILL after `grace` s) and remove a project's containers and its
    own networks; external networks stay."""
    label = f"label={PROJECT_LABEL}={q(project)}"
    return (
        f"ids=$(docker ps -aq --filter {label}); "
        f'if [ -n "$ids" ]; then docker stop -t {grace} $ids >/dev/null && '
        "docker rm $ids >/dev/null || exit 1; fi; "
        f"docker network ls -q --filter {label} | xargs -r docker network rm >/dev/null"
    )


def stop_services(project: str, services: list[str], grace: int) -> str:
    """Stop and remove some services' containers of a project (the app services a release
    from before the proxy ran in the guest's project, holding the proxy's ports)."""
    filters = " ".join(
        f"$(docker ps -aq --filter label={PROJECT_LABEL}={q(project)} "
        f"--filter label={SERVICE_LABEL}={q(s)})"
        for s in services
    )
    return (
        f"ids=$(echo {filters}); "
        f'if [ -n "$ids" ]; then docker stop -t {grace} $ids >/dev/null && '
        "docker rm $ids >/dev/null; fi"
    )


def proxy_running(site: Site) -> str:
    return running_service(proxy_project(site.project), PROXY_SERVICE)


def proxy_up(site: Site) -> str:
    path = f"{proxy_dir(site.app_dir)}/{COMPOSE_FILE}"
    return (
        f"[ -f {q(path)} ] || {{ echo 'no proxy file {path}: pulumi up installs it' >&2; "
        "exit 1; }; "
        f"docker compose -p {q(proxy_project(site.project))} -f {q(path)} up -d"
    )


def served(site: Site) -> str:
    """The release the proxy serves now (empty when it does not answer)."""
    return f"curl -s -m 2 http://127.0.0.1:{PROXY_STATUS_PORT}/release || true"


def write_upstreams(site: Site) -> str:
    """stdin to upstreams.conf, keeping the previous one as upstreams.conf.prev."""
    path = q(f"{proxy_conf_dir(site.app_dir)}/{PROXY_UPSTREAMS}")
    return (
        f"mkdir -p {q(proxy_conf_dir(site.app_dir))} && cat > {path}.new && "
        f"{{ [ ! -f {path} ] || cp -p {path} {path}.prev; }} && mv {path}.new {path}"
    )


def reload_proxy(site: Site) -> str:
    """Test the configuration, then reload (old workers finish their requests); a failing test
    puts the previous upstreams.conf back and changes nothing."""
    path = q(f"{proxy_conf_dir(site.app_dir)}/{PROXY_UPSTREAMS}")
    proxy = q(container_name(proxy_project(site.project), PROXY_SERVICE))
    conf = q(f"{PROXY_MOUNT}/{PROXY_CONF}")
    return (
        f"if ! docker exec {proxy} nginx -q -t -c {conf}; then "
        f"[ ! -f {path}.prev ] || mv {path}.prev {path}; exit 1; fi; "
        f"docker exec {proxy} nginx -c {conf} -s reload"
    )
