"""The self-hosted GitHub Actions runner guest: the runner, the Pulumi CLI its jobs use, and
what keeps the runner registered.

`runner_plan()` gives the ordered steps for the guest (after the baseline); `ca_step()` trusts
the Proxmox node's CA so the jobs reach the Proxmox API with verification. The registration
credential (secret `githubRunnerToken`) is either a one-time registration token or a personal
access token the guest mints registration tokens from; it reaches the guest only on stdin, into
a root-only file that only `ensure-registered` (root) reads.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import replace
from urllib.parse import urlparse

from config import GuestSpec, HostStackConfig
from config.runner import RunnerSettings
from rendering.baseline import packages_step
from rendering.plan import Step, file_step, install_file, script, verified_download
from rendering.shell import with_prologue

RUNNER_PACKAGES = (
    "git",
    "make",
    "jq",
    "curl",
    "ca-certificates",
    "openssl",
    "python3",
    "python3-venv",
    "python3-pip",
    "openssh-client",
    "tar",
)
RUNNER_SERVICE = "smoker-github-runner.service"
REGISTRATION_SERVICE = "smoker-runner-registration.service"
REGISTRATION_TIMER = "smoker-runner-registration.timer"
UNIT_DIR = "/etc/systemd/system"
TOKEN_FILE = "/etc/smoker-runner/github-token"
STATE_FILE = "/var/lib/smoker-runner/registration"
ENSURE_REGISTERED = "/usr/local/lib/smoker-runner/ensure-registered"
PULUMI_ROOT = "/opt/pulumi"
VERSION_FILE = ".smoker-version"  # in installDir: the runner release unpacked there
# Kept when a new runner release is unpacked: the registration and the jobs' work directory.
REGISTRATION_FILES = (".runner", ".credentials", ".credentials_rsaparams", ".env", ".path")
CA_FILE = "/usr/local/share/ca-certificates/proxmox-pve-root-ca.crt"
CA_NOTE = (
    "# from the Proxmox node's /etc/pve/pve-root-ca.pem at apply time (public, not rendered)\n"
)
HOSTS_MARK = "# smoker-infra: the Proxmox node"
TOOL_CACHE = "/opt/hostedtoolcache"  # where actions/setup-* put their toolchains
CA_STEP = "proxmox-ca"  # its stdin, the node's CA, is only known at apply time


def ensure_registered(settings: RunnerSettings, guest: GuestSpec) -> str:
    """The `ensure-registered` program (rendering/ensure_registered.sh with its values)."""
    return with_prologue(
        "ensure_registered.sh",
        "Managed by smoker-infra: keeps the GitHub Actions runner registered.",
        {
            "URL": settings.url,
            "API_URL": settings.api_url.rstrip("/"),
            "API_SCOPE": settings.api_scope,
            "NAME": settings.runner_name(guest),
            "LABELS": ",".join(settings.labels),
            "WORK": settings.work_dir,
            "INSTALL_DIR": settings.install_dir,
            "RUNNER_USER": settings.user,
            "TOKEN_FILE": TOKEN_FILE,
            "STATE_FILE": STATE_FILE,
            "SERVICE": RUNNER_SERVICE,
        },
    )


def runner_service(settings: RunnerSettings) -> str:
    """The runner itself, as its user; it never sees the registration credential."""
    home = settings.install_dir
    return f"""\
# Managed by smoker-infra: the self-hosted GitHub Actions runner.
[Unit]
Description=GitHub Actions runner (smoker-infra)
After=network-online.target
Wants=network-online.target
ConditionPathExists={home}/.runner

[Service]
Type=simple
User={settings.user}
WorkingDirectory={home}
ExecStart={home}/run.sh
# actions/setup-python's builds are made for this tool cache (docs/delivery.md)
Environment=AGENT_TOOLSDIRECTORY={TOOL_CACHE}
Restart=always
RestartSec=30
# SIGTERM to every process of the unit, the listener and a running job included: run.sh is a
# wrapper, and stopping it alone would leave the listener running outside the service
KillMode=control-group
KillSignal=SIGTERM
TimeoutStopSec=5min
NoNewPrivileges=yes

[Install]
WantedBy=multi-user.target
"""


def registration_service() -> str:
    return f"""\
# Managed by smoker-infra: (re-)registers the runner when GitHub no longer lists it.
[Unit]
Description=Keep the GitHub Actions runner registered (smoker-infra)
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
ExecStart={ENSURE_REGISTERED}
"""


def registration_timer(settings: RunnerSettings) -> str:
    return f"""\
# Managed by smoker-infra: checks the runner's registration at boot and periodically.
[Unit]
Description=Check the GitHub Actions runner registration (smoker-infra)

[Timer]
OnBootSec=1min
OnUnitActiveSec={settings.check_interval_minutes}min

[Install]
WantedBy=timers.target
"""


# ---------------------------------------------------------------------------------------------
# Steps


def user_step(settings: RunnerSettings) -> Step:
    """The runner's system user (no docker, no sudo), its install directory and the tool
    cache the setup-* actions write to."""
    user, home = settings.user, settings.install_dir
    q = shlex.quote
    return Step(
        "runner-user",
        script(
            "changed=''",
            f"id -u {user} >/dev/null 2>&1 || {{ useradd --system --create-home "
            f'--home-dir /home/{user} --shell /bin/bash {user}; changed="$changed user:{user}"; }}',
            "for group in docker sudo; do",
            f"  if id -nG {user} | tr ' ' '\\n' | grep -qx \"$group\"; then",
            f'    gpasswd -d {user} "$group" >/dev/null; changed="$changed -group:$group"',
            "  fi",
            "done",
            f'[ "$(stat -c %a:%U:%G {q(home)} 2>/dev/null)" = 750:{user}:{user} ] || '
            f"{{ install -d -m 0750 -o {user} -g {user} {q(home)}; "
            f'changed="$changed dir:{home}"; }}',
            f'[ "$(stat -c %a:%U:%G {TOOL_CACHE} 2>/dev/null)" = 755:{user}:{user} ] || '
            f"{{ install -d -m 0755 -o {user} -g {user} {TOOL_CACHE}; "
            f'changed="$changed dir:{TOOL_CACHE}"; }}',
            'if [ -z "$changed" ]; then echo "unchanged runner user"; '
            'else echo "changed runner user:$changed"; fi',
        ),
    )


def _pulumi_digest(settings: RunnerSettings) -> list[str]:
    """Shell lines setting $want: the pinned sha256, or the release checksums file's line."""
    cli = settings.pulumi
    if cli.sha256:
        return [f"want={cli.sha256}"]
    tarball = cli.download_url.rsplit("/", 1)[-1]
    return [
        f"want=$(curl -fsSL --retry 3 {shlex.quote(cli.checksums_url)} | "
        f"awk -v f={shlex.quote(tarball)} '$2 == f {{print $1}}')",
        "if ! printf '%s\\n' \"$want\" | grep -qxE '[0-9a-f]{64}'; then",
        f'  echo "no sha256 for {tarball} in the release checksums file; '
        'pin runner.pulumi.sha256" >&2',
        "  exit 1",
        "fi",
    ]


def pulumi_step(settings: RunnerSettings) -> Step:
    """The Pulumi CLI unpacked in /opt/pulumi/<version>, every binary linked into /usr/local/bin
    (verified against the pinned sha256, or the release's checksums file when none is pinned)."""
    cli = settings.pulumi
    home = f"{PULUMI_ROOT}/{cli.version}"
    installed = cli.sha256 or cli.version  # what the install records, to know it is current
    return Step(
        "pulumi-cli",
        script(
            "changed=''",
            f"home={home}",
            'trap \'rm -rf "${staging:-}" "${download:-}"\' EXIT',
            f'if [ "$(cat "$home/{VERSION_FILE}" 2>/dev/null)" != {installed} ]; then',
            *(f"  {line}" for line in _pulumi_digest(settings)),
            *(f"  {line}" for line in verified_download("pulumi", cli.download_url, "$want")),
            f"  staging=$(mktemp -d {PULUMI_ROOT}.XXXXXX)",
            '  tar -xzf "$download" -C "$staging" --strip-components=1 --no-same-owner',
            '  rm -f "$download"',
            '  [ -x "$staging/pulumi" ] || { rm -rf "$staging"; '
            'echo "the pulumi tarball holds no pulumi/pulumi" >&2; exit 1; }',
            f'  echo {installed} > "$staging/{VERSION_FILE}"',
            '  chmod -R go-w "$staging" && chmod 0755 "$staging"',
            f"  install -d -m 0755 {PULUMI_ROOT}",
            '  rm -rf "$home" && mv "$staging" "$home"',
            f'  changed="$changed {cli.version}"',
            "fi",
            'for binary in "$home"/*; do',
            '  [ -f "$binary" ] && [ -x "$binary" ] || continue',
            '  link="/usr/local/bin/$(basename "$binary")"',
            '  [ "$(readlink "$link")" = "$binary" ] && continue',
            '  ln -sfn "$binary" "$link"; changed="$changed link:$link"',
            "done",
            "for link in /usr/local/bin/*; do",  # links into an older version
            '  [ -L "$link" ] || continue',
            '  case "$(readlink "$link")" in',
            '    "$home"/*) ;;',
            f'    {PULUMI_ROOT}/*) rm -f "$link"; changed="$changed -link:$link" ;;',
            "  esac",
            "done",
            f'for old in {PULUMI_ROOT}/*; do [ "$old" = "$home" ] || rm -rf "$old"; done',
            'PULUMI_SKIP_UPDATE_CHECK=true "$home/pulumi" version | grep -qF ' + cli.version,
            'if [ -z "$changed" ]; then echo "unchanged pulumi ' + cli.version + '"; '
            'else echo "changed pulumi:$changed"; fi',
        ),
    )


def install_step(settings: RunnerSettings) -> Step:
    """The runner release unpacked in installDir; a new release keeps the registration and the
    work directory (nothing is touched until the new release is verified and unpacked)."""
    home, user = settings.install_dir, settings.user
    wanted = f"{settings.version} {settings.sha256}"
    kept = " ".join(f"! -name {name}" for name in (*REGISTRATION_FILES, settings.work_dir))
    return Step(
        "runner-install",
        script(
            f"home={shlex.quote(home)}",
            f'if [ "$(cat "$home/{VERSION_FILE}" 2>/dev/null)" = {shlex.quote(wanted)} ] '
            '&& [ -x "$home/config.sh" ] && [ -x "$home/run.sh" ]; then',
            f'  echo "unchanged runner {settings.version}"; exit 0',
            "fi",
            *verified_download("runner", settings.download_url, settings.sha256),
            'staging=$(mktemp -d "$home.XXXXXX")',
            'trap \'rm -rf "$staging" "$download"\' EXIT',
            'tar -xzf "$download" -C "$staging" --no-same-owner',
            '[ -x "$staging/config.sh" ] && [ -x "$staging/run.sh" ] || '
            '{ echo "the runner tarball holds no config.sh and run.sh" >&2; exit 1; }',
            f"active=$(systemctl is-active {RUNNER_SERVICE} 2>/dev/null || true)",
            f'[ "$active" != active ] || systemctl stop {RUNNER_SERVICE}',
            f'find "$home" -mindepth 1 -maxdepth 1 {kept} -exec rm -rf {{}} +',
            'find "$staging" -mindepth 1 -maxdepth 1 -exec mv -t "$home" {} +',
            f'chown -R {user}:{user} "$home" && chmod 0750 "$home"',
            'if [ -x "$home/bin/installdependencies.sh" ]; then',
            '  "$home/bin/installdependencies.sh" >&2',
            "fi",
            # last: an unpack or installdependencies.sh that failed is retried on the next apply
            f'echo {shlex.quote(wanted)} > "$home/{VERSION_FILE}"',
            f'[ "$active" != active ] || systemctl start {RUNNER_SERVICE}',
            f'echo "changed runner {settings.version}"',
        ),
    )


def token_step(token: str) -> Step:
    return file_step("runner-token", TOKEN_FILE, token, secret=True, mode="0600")


def ensure_registered_step(settings: RunnerSettings, guest: GuestSpec) -> Step:
    return file_step(
        "runner-ensure-registered",
        ENSURE_REGISTERED,
        ensure_registered(settings, guest),
        mode="0755",
        validate='sh -n "$new"',
    )


def unit_step(name: str, unit: str, text: str, on_change: str = "") -> Step:
    reload = "systemctl daemon-reload" + (f" && {on_change}" if on_change else "")
    return file_step(name, f"{UNIT_DIR}/{unit}", text, on_change=reload)


def register_step() -> Step:
    """Register (when needed) and keep the runner and its registration check running."""
    return Step(
        "runner-register",
        script(
            f"{ENSURE_REGISTERED}",
            "changed=''",
            f"for unit in {RUNNER_SERVICE} {REGISTRATION_TIMER}; do",
            '  systemctl is-enabled --quiet "$unit" || '
            '{ systemctl enable --quiet "$unit"; changed="$changed enabled:$unit"; }',
            '  systemctl is-active --quiet "$unit" || '
            '{ systemctl start "$unit"; changed="$changed started:$unit"; }',
            "done",
            'if [ -z "$changed" ]; then echo "unchanged runner services"; '
            'else echo "changed runner services:$changed"; fi',
        ),
    )


def hosts_step(node_name: str, node_address: str) -> Step:
    """/etc/hosts maps the node's name to its address on the guest bridge (one managed line),
    so the Proxmox API certificate, issued for that name, verifies."""
    line = f"{node_address} {node_name} {HOSTS_MARK}"
    return Step(
        "proxmox-node-name",
        script(
            f"line={shlex.quote(line)}",
            'if grep -qxF "$line" /etc/hosts; then echo "unchanged /etc/hosts"; exit 0; fi',
            "new=$(mktemp /etc/.hosts.XXXXXX)",
            "trap 'rm -f \"$new\"' EXIT",
            f'grep -vF {shlex.quote(HOSTS_MARK)} /etc/hosts > "$new" || true',
            'echo "$line" >> "$new"',
            'chmod 0644 "$new"',
            'cat "$new" > /etc/hosts',  # in place: /etc/hosts may be a bind mount
            'echo "changed /etc/hosts: $line"',
        ),
        files={"/etc/hosts": f"# one managed line of /etc/hosts:\n{line}\n"},
    )


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def runner_plan(
    settings: RunnerSettings,
    guest: GuestSpec,
    token: str,
    node_address: str,
    node_name: str | None,
) -> list[Step]:
    """Every step that turns a baselined guest into the self-hosted runner, in order."""
    steps = [
        replace(packages_step(RUNNER_PACKAGES), name="runner-packages"),
        user_step(settings),
        pulumi_step(settings),
        install_step(settings),
        token_step(token),
        ensure_registered_step(settings, guest),
        unit_step(
            "runner-service",
            RUNNER_SERVICE,
            runner_service(settings),
            on_change=f"systemctl try-restart {RUNNER_SERVICE}",
        ),
        unit_step("runner-registration-service", REGISTRATION_SERVICE, registration_service()),
        unit_step("runner-registration-timer", REGISTRATION_TIMER, registration_timer(settings)),
        register_step(),
    ]
    if node_name and not _is_address(node_name):
        steps.append(hosts_step(node_name, node_address))
    return steps


def ca_step() -> Step:
    """Trust the Proxmox node's CA (its PEM on stdin, supplied by the component at apply time)."""
    return Step(
        CA_STEP,
        install_file(
            CA_FILE,
            validate='openssl x509 -noout -in "$new"',
            on_change="update-ca-certificates >/dev/null",
        ),
        stdin=None,
        files={CA_FILE: CA_NOTE},
    )


def runner_guest_plan(cfg: HostStackConfig, guest: GuestSpec, token: str) -> list[Step]:
    """What a host-stack guest gets after its baseline and Tailscale: the node's CA, then the
    runner. The CA step's stdin (the node's certificate) is supplied at apply time."""
    node_name = urlparse(cfg.proxmox.endpoint).hostname
    return [
        ca_step(),
        *runner_plan(cfg.runner, guest, token, str(cfg.network.gateway), node_name),
    ]
