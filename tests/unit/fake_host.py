"""A fake guest for the deploy engine's unit tests: a Transport that understands the engine's
commands, keeps the host's state (files, `current`, containers, images, lock, ledger) in memory,
and fails on demand at any step.

Every command is classified into a step name (`lock`, `backup`, `pull`, `up`, ...); `steps`
is the order in which they ran, and `fail(step)` makes the next such command exit 1 (or drop
the connection with `drop=True`).
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from deploy.transport import CommandResult, TransportError
from layout import AGENT_SERVICE, AGENT_STATE_DIR, BACKUP_TOOL, LEDGER_PATH, LOCK_DIR

APP_DIR = "/opt/smart-smoker-dev"
PROJECT = "smart-smoker-dev"
BACKUP_DIR = f"{APP_DIR}/backups"

# (step name, pattern) in the order they are tried
PATTERNS: list[tuple[str, str]] = [
    # the cutover (deploy/cutover.py)
    ("networks", r"^for n in .* docker network inspect "),
    ("up-data", r"^docker compose -p \S+ -f \S+ up -d --wait mongo$"),
    ("addresses", r"^docker ps -q --filter \S+ \| xargs -r docker inspect "),
    ("projects", r"^docker ps -a --filter label=com\.docker\.compose\.project --format "),
    ("connections", r"^pid=\$\(docker inspect "),
    ("down", r"^ids=\$\(docker ps -aq --filter "),
    ("stop-legacy", r"^ids=\$\(echo "),
    ("proxy-up", r"^\[ -f \S+/proxy/compose\.yaml \]"),
    ("served", r"^curl -s -m 2 http://127\.0\.0\.1:3099/release"),
    ("upstreams", r"&& cat > \S+/upstreams\.conf\.new && "),
    ("reload", r"^if ! docker exec \S+ nginx -q -t "),
    # the in-place update and everything else
    ("survey", r"^\[ -f \S+ \] && echo ledger; "),
    ("lock", r"^mkdir -p \$\(dirname .*\) && mkdir -m 0700 "),
    ("lock-status", r"^cat \S+/owner\.json 2>/dev/null$"),
    ("renew", r"^cat > \S+/owner\.json\.new"),
    ("unlock", rf"^rm -rf {re.escape(LOCK_DIR)}$"),
    ("live", r"^readlink "),
    ("clean", r"for d in \.staging-\*"),
    ("releases", r"for d in \*/"),
    ("mongo-ps", r"^docker ps -q --filter"),
    ("backup", rf"^{re.escape(BACKUP_TOOL)} dump "),
    ("backup-check", r"^a=.*gzip -t"),
    ("restore", rf"^{re.escape(BACKUP_TOOL)} restore "),
    ("backup-prune", rf"^{re.escape(BACKUP_TOOL)} prune"),
    ("fetch", rf"^{re.escape(BACKUP_TOOL)} fetch"),
    ("backup-report", rf"^if \[ -x {re.escape(BACKUP_TOOL)} \]"),
    ("stage", r"^mkdir -p \S+ && install -d -m 0700 "),
    ("write", r"^umask 077 && cat > "),
    ("pull", r"^docker (pull|image inspect) "),
    ("manifest", r"^cat \S+/manifest\.json$"),
    ("seal", r"^docker compose -f \S+ config -q && mv -T "),
    ("up", r"^docker compose -p \S+ -f \S+ up -d"),
    ("ps", r"^docker compose -p \S+ -f \S+ ps -a"),
    ("http", r"^curl "),
    ("db-url", r"^sed -n 's/\^DB_URL=//p' "),
    ("commit", r"&& ln -sfn "),
    ("image-rm", r"^docker image rm "),
    ("rm", r"^rm -rf "),
    ("ledger", r"^umask 077 && mkdir -p .* && cat >> "),
    # the device's update agent (deploy/agent_status.py)
    ("agent-installed", rf"^if \[ -e /etc/systemd/system/{re.escape(AGENT_SERVICE)} \]"),
    ("agent-read", rf"^cat {re.escape(AGENT_STATE_DIR)}/\S+ 2>/dev/null \|\| true$"),
    ("ledger-read", r"^cat \S+ 2>/dev/null \|\| true$"),
]


@dataclass
class Failure:
    skip: int
    how: str  # "exit" | "drop"
    when: Callable[[str], bool] | None = None

    def fires(self, command: str) -> str | None:
        if self.when is not None:
            return self.how if self.when(command) else None
        if self.skip:
            self.skip -= 1
            return None
        return self.how


@dataclass
class Container:
    image: str
    env: str
    generation: int  # bumped on every (re)creation

    @property
    def ip(self) -> str:
        return f"10.9.{self.generation // 250}.{self.generation % 250 + 1}"


@dataclass
class FakeHost:
    registry: dict[str, str] = field(default_factory=dict)  # tag ref -> digest ref
    moved: set[str] = field(default_factory=set)  # digest refs a moved tag no longer serves
    broken: set[str] = field(default_factory=set)  # digest refs whose containers go unhealthy
    http_broken: set[str] = field(default_factory=set)  # healthy, but their endpoint fails
    files: dict[str, str] = field(default_factory=dict)
    current: str | None = None
    containers: dict[str, Container] = field(default_factory=dict)
    images: set[str] = field(default_factory=set)
    mongo_running: bool = True
    steps: list[str] = field(default_factory=list)
    failures: dict[str, Failure] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    stdins: list[bytes] = field(default_factory=list)
    generation: int = 0
    backups: int = 0
    documents: int = 0  # in the application database
    offsite: dict[str, int] = field(
        default_factory=lambda: {"smartsmoker-daily-20261120T070000Z": 42}
    )
    report: str = ""  # what `smart-smoker-backup report` prints
    dropped: bool = False  # the connection is gone: every command fails until `reconnect`
    # behind the proxy: each release's own project, and what nginx serves
    projects: dict[str, dict[str, Container]] = field(default_factory=dict)
    proxy_running: bool = False
    serving: str | None = None  # the release id nginx serves (NO_RELEASE before the first)
    served_log: list[str | None] = field(default_factory=list)  # `serving` before each command
    open_connections: dict[str, int] = field(default_factory=dict)  # project -> established

    def reconnect(self) -> None:
        self.dropped = False

    # -- test controls ----------------------------------------------------------------------

    def fail(
        self,
        step: str,
        drop: bool = False,
        skip: int = 0,
        when: Callable[[str], bool] | None = None,
    ) -> None:
        """Fail the next `step` command (after `skip` that succeed) with exit 1, or drop the
        connection; with `when`, fail every `step` command it matches instead. Step `any`
        counts every command."""
        self.failures[step] = Failure(skip, "drop" if drop else "exit", when)

    def move_tag(self, tag_ref: str, digest_ref: str) -> None:
        """Point a tag at another image upstream (what it served stays pullable by digest)."""
        self.moved.add(self.registry[tag_ref])
        self.registry[tag_ref] = digest_ref

    def ledger(self) -> list[dict[str, Any]]:
        text = self.files.get(LEDGER_PATH, "")
        return [json.loads(line) for line in text.splitlines()]

    def release_dirs(self) -> list[str]:
        prefix = f"{APP_DIR}/releases/"
        return sorted({p[len(prefix) :].split("/")[0] for p in self.files if p.startswith(prefix)})

    def snapshot(self) -> tuple[Any, ...]:
        """What a failed-before-any-change deploy must leave exactly as it was."""
        return (
            self.current,
            {k: (c.image, c.generation) for k, c in self.containers.items()},
            self.release_dirs(),
        )

    # -- Transport ----------------------------------------------------------------------------

    def forward(self, port: int) -> contextlib.AbstractContextManager[int]:
        return contextlib.nullcontext(port)

    def run(self, command: str, stdin: bytes = b"", timeout: float = 120) -> CommandResult:
        if self.dropped:
            raise TransportError("SSH command failed: the connection is closed")
        step = next((name for name, rx in PATTERNS if re.search(rx, command, re.S)), None)
        assert step is not None, f"the fake host does not know: {command}"
        self.steps.append(step)
        self.served_log.append(self.serving if self.proxy_running else None)
        self.commands.append(command)
        self.stdins.append(stdin)
        key = step if step in self.failures else "any" if "any" in self.failures else None
        how = self.failures[key].fires(command) if key else None
        if how and key and self.failures[key].when is None:
            del self.failures[key]
        if how == "drop":
            self.dropped = True
            raise TransportError("SSH command failed: connection reset by peer")
        if how == "exit":
            return CommandResult(1, "", f"injected failure at {step}")
        return getattr(self, "_" + step.replace("-", "_"))(command, stdin)

    # -- the commands -------------------------------------------------------------------------

    @staticmethod
    def _ok(out: str = "") -> CommandResult:
        return CommandResult(0, out, "")

    def _lock(self, command: str, stdin: bytes) -> CommandResult:
        owner = f"{LOCK_DIR}/owner.json"
        if owner in self.files:
            return CommandResult(1, "", "exists")
        self.files[owner] = stdin.decode()
        return self._ok()

    def _lock_status(self, command: str, stdin: bytes) -> CommandResult:
        text = self.files.get(f"{LOCK_DIR}/owner.json")
        return self._ok(text) if text else CommandResult(1, "", "")

    def _renew(self, command: str, stdin: bytes) -> CommandResult:
        self.files[f"{LOCK_DIR}/owner.json"] = stdin.decode()
        return self._ok()

    def _unlock(self, command: str, stdin: bytes) -> CommandResult:
        self.files.pop(f"{LOCK_DIR}/owner.json", None)
        return self._ok()

    def _survey(self, command: str, stdin: bytes) -> CommandResult:
        lines = ["ledger"] if LEDGER_PATH in self.files else []
        lines.append(f"current releases/{self.current}" if self.current else "current ")
        for d in self.release_dirs():
            base = f"{APP_DIR}/releases/{d}"
            if d.startswith(".staging-"):
                lines.append(f"staging {d}")
            elif f"{base}/manifest.json" in self.files:
                lines.append(f"release {d} {1 if f'{base}/.committed' in self.files else 0}")
        return self._ok("".join(f"{line}\n" for line in lines))

    def _live(self, command: str, stdin: bytes) -> CommandResult:
        return self._ok(f"releases/{self.current}\n" if self.current else "")

    def _clean(self, command: str, stdin: bytes) -> CommandResult:
        staged = [d for d in self.release_dirs() if d.startswith(".staging-")]
        self._remove(*(f"{APP_DIR}/releases/{d}" for d in staged))
        return self._ok("".join(f"{d}\n" for d in staged))

    def _releases(self, command: str, stdin: bytes) -> CommandResult:
        rows = []
        for d in self.release_dirs():
            base = f"{APP_DIR}/releases/{d}"
            if f"{base}/manifest.json" in self.files:
                rows.append(f"{d} {1 if f'{base}/.committed' in self.files else 0}\n")
        return self._ok("".join(rows))

    def _mongo_ps(self, command: str, stdin: bytes) -> CommandResult:
        if "-proxy --filter" in command:  # the proxy's container (same `docker ps` shape)
            return self._ok("p1\n" if self.proxy_running else "")
        return self._ok("abc123\n" if self.mongo_running else "")

    def _backup(self, command: str, stdin: bytes) -> CommandResult:
        self.backups += 1
        name = f"{BACKUP_DIR}/smartsmoker-predeploy-2026112{self.backups}T000000Z.archive.gz"
        sha = f"{self.backups:064x}"
        self.files[name] = "archive"
        self.files[name.replace(".archive.gz", ".json")] = json.dumps({"sha256": sha})
        return self._ok(name + "\n")

    def _backup_check(self, command: str, stdin: bytes) -> CommandResult:
        archive = shlex.split(command.split(";", 1)[0].removeprefix("a="))[0]
        manifest = self.files[archive.replace(".archive.gz", ".json")]
        return self._ok(json.loads(manifest)["sha256"] + "\n" + manifest)

    def _restore(self, command: str, stdin: bytes) -> CommandResult:
        archive = shlex.split(command)[2].rsplit("/", 1)[-1].removesuffix(".archive.gz")
        self.documents = self.offsite.get(archive, self.documents)
        return self._ok("restored\n")

    def _fetch(self, command: str, stdin: bytes) -> CommandResult:
        words = shlex.split(command)
        name = words[2] if len(words) > 2 else max(self.offsite)
        if name not in self.offsite:
            return CommandResult(1, "", f"smart-smoker-backup: no off-guest backup named {name}")
        path = f"{BACKUP_DIR}/{name}.archive.gz"
        self.files[path] = "archive"
        self.files[path.replace(".archive.gz", ".json")] = json.dumps({"sha256": "f" * 64})
        return self._ok(path + "\n")

    def _backup_report(self, command: str, stdin: bytes) -> CommandResult:
        return self._ok(self.report)

    def _backup_prune(self, command: str, stdin: bytes) -> CommandResult:
        return self._ok()

    def _stage(self, command: str, stdin: bytes) -> CommandResult:
        staging = shlex.split(command)[-1]
        self.files[f"{staging}/.dir"] = ""
        return self._ok()

    def _write(self, command: str, stdin: bytes) -> CommandResult:
        self.files[shlex.split(command)[-1]] = stdin.decode()
        return self._ok()

    def _pull(self, command: str, stdin: bytes) -> CommandResult:
        ref = shlex.split(command.split(">", 1)[0])[-1]
        if "@sha256:" in ref:
            known = self.images | self.moved | set(self.registry.values())
            if ref not in known:
                return CommandResult(1, "", f"manifest for {ref} not found")
            self.images.add(ref)
            return self._ok()
        if ref not in self.registry:
            return CommandResult(1, "", f"manifest for {ref} not found: manifest unknown")
        self.images.add(self.registry[ref])
        return self._ok(json.dumps([self.registry[ref]]) + "\n")

    def _manifest(self, command: str, stdin: bytes) -> CommandResult:
        path = shlex.split(command)[1]
        return self._ok(self.files[path]) if path in self.files else CommandResult(1, "", "")

    def _seal(self, command: str, stdin: bytes) -> CommandResult:
        words = shlex.split(command)
        staging, target = words[-2], words[-1]
        for path in [p for p in self.files if p.startswith(staging + "/")]:
            self.files[target + path[len(staging) :]] = self.files.pop(path)
        return self._ok()

    def _release_of(self, command: str) -> str:
        path = shlex.split(command)[5]
        return path.rsplit("/", 2)[-2]

    def _project_of(self, command: str) -> str:
        return shlex.split(command)[3]

    def _group(self, project: str) -> dict[str, Container]:
        """The containers of a Compose project (the guest's own: `containers`)."""
        if project == PROJECT:
            return self.containers
        return self.projects.setdefault(project, {})

    def _create(self, group: dict[str, Container], services: dict[str, Any], base: str) -> None:
        for name, svc in services.items():
            env = "".join(self.files.get(f"{base}/{f}", "") for f in svc.get("env_file", []))
            old = group.get(name)
            if old is None or (old.image, old.env) != (svc["image"], env):
                self.generation += 1
                group[name] = Container(svc["image"], env, self.generation)

    def _up(self, command: str, stdin: bytes) -> CommandResult:
        base = f"{APP_DIR}/releases/{self._release_of(command)}"
        if f"{base}/compose.yaml" not in self.files:
            return CommandResult(1, "", "no such compose file")
        services = yaml.safe_load(self.files[f"{base}/compose.yaml"])["services"]
        project = self._project_of(command)
        if project != PROJECT:  # a release's own project: the services without a profile
            services = {n: svc for n, svc in services.items() if not svc.get("profiles")}
        group = self._group(project)
        self._create(group, services, base)
        for name in set(group) - set(services):
            del group[name]
        if any(c.image in self.broken for c in group.values()) and project != PROJECT:
            # compose waits for the backend to be healthy before the frontend: it fails
            return CommandResult(1, "", "dependency failed to start: backend is unhealthy")
        return self._ok()

    def _up_data(self, command: str, stdin: bytes) -> CommandResult:
        base = f"{APP_DIR}/releases/{self._release_of(command)}"
        services = yaml.safe_load(self.files[f"{base}/compose.yaml"])["services"]
        self._create(self.containers, {"mongo": services["mongo"]}, base)
        return self._ok()

    def _ps(self, command: str, stdin: bytes) -> CommandResult:
        rows = [
            {
                "Service": name,
                "Image": c.image,
                "State": "running",
                "Health": "unhealthy" if c.image in self.broken else "healthy",
            }
            for name, c in self._group(self._project_of(command)).items()
        ]
        return self._ok("\n".join(json.dumps(r) for r in rows))

    def _http(self, command: str, stdin: bytes) -> CommandResult:
        url = shlex.split(command)[-1]
        host = url.split("/")[2].split(":")[0]
        if host == "127.0.0.1":  # in place: the guest's project publishes the ports
            backend = self.containers.get("backend")
        else:
            backend = next(
                (
                    group["backend"]
                    for group in self.projects.values()
                    if any(c.ip == host for c in group.values()) and "backend" in group
                ),
                None,
            )
        if backend is None:
            return self._ok("\n000")
        if backend.image in self.broken | self.http_broken:
            return self._ok('{"status":"error"}\n503')
        return self._ok('{"status":"ok"}\n200')

    # -- the cutover --------------------------------------------------------------------------

    def _networks(self, command: str, stdin: bytes) -> CommandResult:
        return self._ok()

    def _addresses(self, command: str, stdin: bytes) -> CommandResult:
        project = re.search(r"project=(\S+) \|", command)
        assert project is not None
        group = self.projects.get(shlex.split(project[1])[0], {})
        return self._ok("".join(f"{name} {c.ip} \n" for name, c in group.items()))

    def _projects(self, command: str, stdin: bytes) -> CommandResult:
        names = {name for name, group in self.projects.items() if group}
        if self.containers:
            names.add(PROJECT)
        if self.proxy_running:
            names.add(f"{PROJECT}-proxy")
        return self._ok("".join(f"{n}\n" for n in sorted(names)))

    def _connections(self, command: str, stdin: bytes) -> CommandResult:
        project = re.search(r"docker inspect -f '\{\{\.State\.Pid\}\}' (\S+)-backend-1", command)
        assert project is not None
        n = self.open_connections.get(project[1], 0)
        if n:
            self.open_connections[project[1]] = n - 1  # one request finishes per poll
        return self._ok(f"backend {n}\nfrontend 0\n")

    def _down(self, command: str, stdin: bytes) -> CommandResult:
        project = re.search(r"project=(\S+)\)", command)
        assert project is not None
        self.projects.pop(shlex.split(project[1])[0], None)
        return self._ok()

    def _stop_legacy(self, command: str, stdin: bytes) -> CommandResult:
        for name in ("backend", "frontend"):
            self.containers.pop(name, None)
        return self._ok()

    def _proxy_up(self, command: str, stdin: bytes) -> CommandResult:
        if "backend" in self.containers or "frontend" in self.containers:
            return CommandResult(1, "", "Bind for 127.0.0.1:3001 failed: port is already allocated")
        self.proxy_running = True
        self.serving = self._upstreams_release()
        return self._ok()

    def _served(self, command: str, stdin: bytes) -> CommandResult:
        return self._ok(f"{self.serving}\n" if self.proxy_running else "")

    def _upstreams(self, command: str, stdin: bytes) -> CommandResult:
        path = f"{APP_DIR}/proxy/conf/upstreams.conf"
        if path in self.files:
            self.files[path + ".prev"] = self.files[path]
        self.files[path] = stdin.decode()
        return self._ok()

    def _reload(self, command: str, stdin: bytes) -> CommandResult:
        """nginx -t resolves every upstream server: a missing container fails the test."""
        path = f"{APP_DIR}/proxy/conf/upstreams.conf"
        servers = re.findall(r"server (\S+)-(backend|frontend)-1:\d+;", self.files[path])
        if not all(svc in self.projects.get(proj, {}) for proj, svc in servers):
            if path + ".prev" in self.files:
                self.files[path] = self.files.pop(path + ".prev")
            return CommandResult(1, "", "host not found in upstream")
        self.serving = self._upstreams_release()
        return self._ok()

    def _upstreams_release(self) -> str | None:
        text = self.files.get(f"{APP_DIR}/proxy/conf/upstreams.conf", "")
        found = re.search(r'default "(\S+)";', text)
        return found[1] if found else None

    def _db_url(self, command: str, stdin: bytes) -> CommandResult:
        text = self.files.get(shlex.split(command)[-1], "")
        return self._ok(
            "".join(line[7:] + "\n" for line in text.splitlines() if line.startswith("DB_URL="))
        )

    def _commit(self, command: str, stdin: bytes) -> CommandResult:
        release = re.search(r"ln -sfn releases/(\S+) ", command)
        assert release is not None
        self.files[f"{APP_DIR}/releases/{release[1]}/.committed"] = ""
        self.current = release[1]
        return self._ok()

    def _image_rm(self, command: str, stdin: bytes) -> CommandResult:
        for ref in shlex.split(command.split(">", 1)[0])[3:]:
            self.images.discard(ref)
        return self._ok()

    def _rm(self, command: str, stdin: bytes) -> CommandResult:
        self._remove(*shlex.split(command)[2:])
        return self._ok()

    def _ledger(self, command: str, stdin: bytes) -> CommandResult:
        self.files[LEDGER_PATH] = self.files.get(LEDGER_PATH, "") + stdin.decode()
        return self._ok()

    def _agent_installed(self, command: str, stdin: bytes) -> CommandResult:
        unit = f"/etc/systemd/system/{AGENT_SERVICE}"
        found = any(p == unit or p.startswith(AGENT_STATE_DIR + "/") for p in self.files)
        return self._ok("installed\n" if found else "")

    def _agent_read(self, command: str, stdin: bytes) -> CommandResult:
        return self._ok(self.files.get(shlex.split(command)[1], ""))

    def _ledger_read(self, command: str, stdin: bytes) -> CommandResult:
        return self._ok(self.files.get(LEDGER_PATH, ""))

    def _remove(self, *paths: str) -> None:
        for path in paths:
            for key in [k for k in self.files if k == path or k.startswith(path + "/")]:
                del self.files[key]
