"""The guest baseline: hardened sshd, UFW, fail2ban, Docker Engine with crun, and the basics.

Pure functions from the stack config to file text, and `baseline_plan()`: the ordered steps that
converge one guest. Values come from the stack config (stated in docs/values.md). An existing
machine (`kind: host`, the Raspberry Pi) gets the same baseline without the LXC and VM steps:
Docker from the repository of its architecture, runc (no crun), and a check of its serial device.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import replace

from config import APP_ENVIRONMENTS, BaselineSettings, CommonConfig, Guest, HostSpec
from layout import LOG_DIR, SECRETS_DIR
from rendering.plan import (
    APT_GET,
    APT_PROLOGUE,
    Step,
    file_step,
    install_file,
    script,
    verified_download,
)

SSH_GROUP = "sshd-users"
CRUN_PATH = "/usr/local/bin/crun"
UFW_RULES_PATH = f"{SECRETS_DIR}/ufw-rules"
TAILSCALE_PORT = "41641/udp"

BASE_PACKAGES = (
    "ca-certificates",
    "curl",
    "openssh-server",
    "sudo",
    "tzdata",
    "logrotate",
    "iptables",
    "ufw",
    "fail2ban",
    "python3",
    "python3-systemd",
)
DEVICE_PACKAGES = ("qemu-user-static", "binfmt-support")
# The device's ports on an existing machine: the device service and the smoker UI.
DEVICE_PORTS = ("3003/tcp", "8080/tcp")
DOCKER_DOWNLOADS = "https://download.docker.com/linux"
# An existing machine's Docker apt repository by its Debian architecture: (distribution, arch).
# Raspberry Pi OS 32-bit (armhf) has Docker's raspbian repository; arm64 uses Debian's.
DOCKER_REPOSITORIES = {"armhf": ("raspbian", "armhf"), "arm64": ("debian", "arm64")}


def ssh_members(guest: Guest) -> tuple[str, ...]:
    """Who may log in over SSH (the AllowGroups group)."""
    return ("root",) if guest.kind == "lxc" else ("root", guest.ssh_user)


def sshd_config() -> str:
    """The whole sshd_config: no Include, so no drop-in (cloud-init's) can loosen it."""
    return """\
# Managed by smoker-infra: hardened sshd for the Smart Smoker guests. Local edits are replaced.
Port 22
AddressFamily any
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
AuthenticationMethods publickey
UsePAM yes
MaxAuthTries 3
MaxSessions 10
LoginGraceTime 60
X11Forwarding no
AllowAgentForwarding no
PermitTunnel no
AllowGroups sshd-users
ClientAliveInterval 300
ClientAliveCountMax 2
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def authorized_keys(cfg: CommonConfig) -> str:
    return "# Managed by smoker-infra (sshAuthorizedKeys)\n" + "".join(
        f"{key}\n" for key in cfg.ssh_authorized_keys
    )


def ufw_rules(guest: Guest) -> list[str]:
    """The complete rule set, in `ufw show added` form. SSH comes first."""
    rules = ["allow 22/tcp", "allow in on tailscale0", f"allow {TAILSCALE_PORT}"]
    ports = (*DEVICE_PORTS, *guest.firewall_allow) if isinstance(guest, HostSpec) else ()
    ports = ports or guest.firewall_allow
    rules += [f"allow {port}" for port in dict.fromkeys(ports) if f"allow {port}" not in rules]
    return rules


def ufw_apply_script() -> str:
    """Converge UFW to the rules file: defaults, declared rules (SSH first), enable, prune.

    Rules nobody declared are removed and reported (`removed undeclared ...`), except fail2ban's
    own bans. The firewall is enabled only after the SSH rule is in place. ufw is only called to
    change something: on an active firewall every `ufw default` would reload it.
    """
    return script(
        f"rules={UFW_RULES_PATH}",
        "changed=''",
        'current=$(ufw show added | sed -n "s/^ufw //p")',
        "status=$(ufw status verbose)",
        'case "$status" in',
        '  *"Default: deny (incoming), allow (outgoing), deny (routed)"*) ;;',
        "  *)",
        "    ufw default deny incoming >/dev/null",
        "    ufw default allow outgoing >/dev/null",
        "    ufw default deny routed >/dev/null",
        '    changed="$changed defaults" ;;',
        "esac",
        "while IFS= read -r rule; do",
        '  case "$rule" in ""|"#"*) continue ;; esac',
        '  if ! printf "%s\\n" "$current" | grep -qxF -- "$rule"; then',
        "    # shellcheck disable=SC2086 # a rule is several ufw arguments",
        "    ufw $rule >/dev/null",
        '    changed="$changed +[$rule]"',
        "  fi",
        'done < "$rules"',
        'case "$status" in',
        '  "Status: active"*) ;;',
        '  *) ufw --force enable >/dev/null; changed="$changed enabled" ;;',
        "esac",
        'printf "%s\\n" "$current" | while IFS= read -r rule; do',
        '  case "$rule" in ""|*Fail2Ban*|*fail2ban*) continue ;; esac',
        '  if ! grep -qxF -- "$rule" "$rules"; then',
        "    # shellcheck disable=SC2086",
        "    ufw delete $rule >/dev/null",
        '    echo "removed undeclared ufw rule: $rule"',
        "  fi",
        "done",
        'if [ -z "$changed" ]; then echo "unchanged ufw"; else echo "changed ufw:$changed"; fi',
    )


def jail_local(settings: BaselineSettings) -> str:
    f2b = settings.fail2ban
    return f"""\
# Managed by smoker-infra: brute-force protection for sshd, enforced through UFW.
[DEFAULT]
banaction = ufw
banaction_allports = ufw
backend = systemd
ignoreip = {" ".join(f2b.ignore_ip)}

[sshd]
enabled = true
port = 22
maxretry = {f2b.max_retry}
findtime = {f2b.find_time_seconds}
bantime = {f2b.ban_time_seconds}
"""


def daemon_json(settings: BaselineSettings, crun: bool = True) -> str:
    """dockerd's configuration; `crun`: the default runtime (a guest; an existing machine keeps
    Docker's own runc)."""
    docker = settings.docker
    config: dict[str, object] = {
        "default-address-pools": [
            {"base": str(base), "size": size} for base, size in docker.address_pools
        ],
        "live-restore": True,
        "log-driver": "json-file",
        "log-opts": {"max-file": "3", "max-size": "10m"},
        "userland-proxy": False,
    }
    if crun:
        config["default-runtime"] = "crun"
        config["runtimes"] = {"crun": {"path": CRUN_PATH}}
    if docker.bridge_ip is not None:
        config["bip"] = str(docker.bridge_ip)
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def logrotate_config(settings: BaselineSettings, app: bool = True) -> str:
    paths = f"{LOG_DIR}/*.log" + (f" {settings.app_dir}/logs/*.log" if app else "")
    return f"""\
# Managed by smoker-infra: application logs (the deployment ledger, *.jsonl, is never rotated).
{paths} {{
    daily
    rotate {settings.logrotate_days}
    compress
    delaycompress
    missingok
    notifempty
    copytruncate
}}
"""


def apt_sandbox_config() -> str:
    # In an unprivileged LXC apt's _apt sandbox user cannot drop privileges (setgroups fails).
    return '# Managed by smoker-infra: unprivileged LXC\nAPT::Sandbox::User "root";\n'


# ---------------------------------------------------------------------------------------------
# Steps


def packages_step(packages: tuple[str, ...]) -> Step:
    wanted = " ".join(packages)
    return Step(
        "packages",
        script(
            f"wanted={shlex.quote(wanted)}",
            'missing=""',
            "for p in $wanted; do",
            "  dpkg-query -W -f='${Status}' \"$p\" 2>/dev/null | grep -q 'ok installed' || "
            'missing="$missing $p"',
            "done",
            'if [ -z "$missing" ]; then echo "unchanged packages"; exit 0; fi',
            *APT_PROLOGUE,
            f"{APT_GET} update -q",
            "# shellcheck disable=SC2086 # a list of package names",
            f"{APT_GET} install -y -q --no-install-recommends $missing",
            'echo "changed packages:$missing"',
        ),
    )


def timezone_step(zone: str) -> Step:
    q = shlex.quote(zone)
    return Step(
        "timezone",
        script(
            f"zone={q}",
            '[ -e "/usr/share/zoneinfo/$zone" ] || { echo "unknown timezone $zone" >&2; exit 1; }',
            'if [ "$(readlink /etc/localtime)" = "/usr/share/zoneinfo/$zone" ] && '
            '[ "$(cat /etc/timezone 2>/dev/null)" = "$zone" ]; then',
            '  echo "unchanged timezone"; exit 0',
            "fi",
            'ln -sfn "/usr/share/zoneinfo/$zone" /etc/localtime',
            'echo "$zone" > /etc/timezone',
            'echo "changed timezone $zone"',
        ),
    )


def users_step(guest: Guest, settings: BaselineSettings, app: bool = True) -> Step:
    """SSH group and members, the log directory, and where the guest runs the services (`app`)
    the app user and the app directory layout."""
    user, app_dir = settings.app_user, settings.app_dir
    login = guest.kind != "lxc" and user == guest.ssh_user  # the VM's or the machine's own user
    shell = "/bin/bash" if login else "/usr/sbin/nologin"
    lines = [
        "changed=''",
        f"getent group {SSH_GROUP} >/dev/null || {{ groupadd --system {SSH_GROUP}; "
        f'changed="$changed group:{SSH_GROUP}"; }}',
    ]
    if app:
        lines.append(
            f"id -u {user} >/dev/null 2>&1 || {{ useradd --create-home --shell {shell} {user}; "
            f'changed="$changed user:{user}"; }}'
        )
    for member in ssh_members(guest):
        lines.append(
            f"id -nG {member} | tr ' ' '\\n' | grep -qx {SSH_GROUP} || "
            f'{{ usermod -aG {SSH_GROUP} {member}; changed="$changed member:{member}"; }}'
        )
    app_directories = [
        (app_dir, "root", user, "0750"),
        (f"{app_dir}/releases", "root", user, "0750"),
        (f"{app_dir}/backups", "root", "root", "0700"),
        (f"{app_dir}/data", "root", user, "0750"),
        (f"{app_dir}/logs", user, user, "0750"),
    ]
    directories = [
        *(app_directories if app else []),
        (LOG_DIR, "root", "root", "0750"),
        ("/etc/smart-smoker", "root", "root", "0750"),
    ]
    for path, owner, group, mode in directories:
        want = f"{int(mode, 8):o}:{owner}:{group}"
        lines.append(
            f'[ "$(stat -c %a:%U:%G {path} 2>/dev/null)" = {want} ] || '
            f"{{ install -d -m {mode} -o {owner} -g {group} {path}; "
            f'changed="$changed dir:{path}"; }}'
        )
    lines.append(
        'if [ -z "$changed" ]; then echo "unchanged users"; else echo "changed$changed"; fi'
    )
    return Step("users", script(*lines))


def authorized_keys_steps(cfg: CommonConfig, guest: Guest) -> list[Step]:
    keys = authorized_keys(cfg)
    steps = [file_step("authorized-keys-root", "/root/.ssh/authorized_keys", keys, mode="0600")]
    if guest.ssh_user != "root":
        user = guest.ssh_user
        steps.append(
            file_step(
                f"authorized-keys-{user}",
                f"/home/{user}/.ssh/authorized_keys",
                keys,
                mode="0600",
                owner=user,
                group=user,
            )
        )
    return steps


def sshd_step() -> Step:
    # sshd -t checks the candidate before reload, so a bad render never locks anyone out.
    return file_step(
        "sshd-config",
        "/etc/ssh/sshd_config",
        sshd_config(),
        mode="0644",
        validate='install -d -m 0755 /run/sshd && sshd -t -f "$new"',
        on_change="systemctl reload-or-restart ssh",
    )


def firewall_step(guest: Guest) -> Step:
    rules = "# Managed by smoker-infra: the complete UFW rule set\n" + "".join(
        f"{rule}\n" for rule in ufw_rules(guest)
    )
    install = install_file(UFW_RULES_PATH, mode="0640")
    return Step(
        "firewall",
        install + ufw_apply_script().removeprefix("set -eu\n"),
        stdin=rules,
        files={UFW_RULES_PATH: rules},
    )


def fail2ban_step(settings: BaselineSettings) -> Step:
    check = (
        'check=$(mktemp -d) && cp -a /etc/fail2ban/. "$check"/ && cp "$new" "$check/jail.local" '
        '&& fail2ban-client -c "$check" -t >/dev/null; rc=$?; rm -rf "$check"; [ "$rc" = 0 ]'
    )
    return file_step(
        "fail2ban",
        "/etc/fail2ban/jail.local",
        jail_local(settings),
        validate=check,
        on_change="systemctl enable fail2ban >/dev/null 2>&1; systemctl restart fail2ban",
        always="systemctl is-active --quiet fail2ban || systemctl enable --now fail2ban",
    )


def docker_repository(guest: Guest) -> tuple[str, str]:
    """Docker's apt repository for a guest: (URL, architecture). A Proxmox guest takes both from
    itself (its os-release `ID`, dpkg's architecture); an existing machine's follow its `arch`
    (`machine_check_step` proved the machine is that)."""
    if not isinstance(guest, HostSpec):
        return f"{DOCKER_DOWNLOADS}/$ID", "$(dpkg --print-architecture)"
    distribution, arch = DOCKER_REPOSITORIES[guest.arch]
    return f"{DOCKER_DOWNLOADS}/{distribution}", arch


def docker_engine_step(settings: BaselineSettings, guest: Guest) -> Step:
    """Docker Engine and the compose plugin at the pinned versions, from Docker's apt repository
    (an existing machine: the repository of its architecture)."""
    docker = settings.docker
    base, arch = docker_repository(guest)
    return Step(
        "docker-engine",
        script(
            f"want_engine={docker.engine_version}",
            f"want_compose={docker.compose_version}",
            "have_engine=$(dockerd --version 2>/dev/null | sed -n 's/^Docker version \\([^,]*\\),.*/\\1/p')",
            "have_engine=${have_engine%%[+~-]*}",
            "have_compose=$(docker compose version --short 2>/dev/null || true)",
            "have_compose=${have_compose#v}",
            'if [ "$have_engine" = "$want_engine" ] && [ "$have_compose" = "$want_compose" ]; then',
            '  echo "unchanged docker $have_engine, compose $have_compose"; exit 0',
            "fi",
            "# shellcheck disable=SC1091 # the guest's own os-release\n. /etc/os-release",
            "install -d -m 0755 /etc/apt/keyrings",
            "[ -s /etc/apt/keyrings/docker.asc ] || "
            f'curl -fsSL --retry 3 "{base}/gpg" -o /etc/apt/keyrings/docker.asc',
            f'echo "deb [arch={arch} signed-by=/etc/apt/keyrings/docker.asc] '
            f'{base} $VERSION_CODENAME stable" '
            "> /etc/apt/sources.list.d/docker.list",
            *APT_PROLOGUE,
            f"{APT_GET} update -q",
            'engine=$(apt-cache madison docker-ce | awk -v v="$want_engine" '
            '\'$3 ~ ("^5:" v "-") {print $3; exit}\')',
            'compose=$(apt-cache madison docker-compose-plugin | awk -v v="$want_compose" '
            '\'$3 ~ ("^" v "-") {print $3; exit}\')',
            '[ -n "$engine" ] || { echo "docker-ce $want_engine is not in Docker\'s repository" >&2; exit 1; }',
            '[ -n "$compose" ] || { echo "compose $want_compose is not in Docker\'s repository" >&2; exit 1; }',
            "apt-mark unhold docker-ce docker-ce-cli docker-compose-plugin >/dev/null 2>&1 || true",
            f'{APT_GET} install -y -q --allow-downgrades "docker-ce=$engine" "docker-ce-cli=$engine" '
            'containerd.io "docker-compose-plugin=$compose"',
            "apt-mark hold docker-ce docker-ce-cli docker-compose-plugin >/dev/null",
            'echo "changed docker $want_engine, compose $want_compose"',
        ),
    )


def docker_config_step(settings: BaselineSettings, use_crun: bool = True) -> Step:
    """crun (checksum-verified) and daemon.json; dockerd restarts only when either changed.
    Without `use_crun` (an existing machine: the pinned crun is an amd64 build) daemon.json only,
    and Docker keeps its own runc."""
    crun = settings.docker.crun
    content = daemon_json(settings, use_crun)
    install_crun = [
        "changed=0",
        f'if [ "$(sha256sum {CRUN_PATH} 2>/dev/null | cut -d" " -f1)" != {crun.sha256} ]; then',
        *(f"  {line}" for line in verified_download("crun", crun.url, crun.sha256)),
        f'  install -m 0755 -o root -g root "$download" {CRUN_PATH}',
        '  rm -f "$download"',
        f'  changed=1; echo "changed {CRUN_PATH} {crun.version}"',
        "fi",
        f"{CRUN_PATH} --version >/dev/null",
    ]
    runtime = "crun" if use_crun else "runc"
    return Step(
        "docker-config",
        script(
            *(install_crun if use_crun else ["changed=0"]),
            "install -d -m 0755 /etc/docker",
            "new=$(mktemp /etc/docker/.daemon.json.XXXXXX)",
            "trap 'rm -f \"$new\"' EXIT",
            'cat > "$new"',
            'python3 -m json.tool "$new" >/dev/null',
            'if cmp -s "$new" /etc/docker/daemon.json; then',
            '  echo "unchanged /etc/docker/daemon.json"',
            "else",
            '  install -m 0644 "$new" /etc/docker/daemon.json',
            '  changed=1; echo "changed /etc/docker/daemon.json"',
            "fi",
            'if [ "$changed" = 1 ]; then',
            "  systemctl restart docker",
            "else",
            "  systemctl is-active --quiet docker || systemctl enable --now docker",
            "fi",
            f"docker info --format '{{{{.DefaultRuntime}}}}' | grep -qx {runtime}",
        ),
        stdin=content,
        files={"/etc/docker/daemon.json": content},
    )


def logrotate_step(settings: BaselineSettings, app: bool = True) -> Step:
    return file_step(
        "logrotate",
        "/etc/logrotate.d/smart-smoker",
        logrotate_config(settings, app),
        validate='logrotate -d "$new" >/dev/null 2>&1',
    )


def swapfile_step(size_mb: int) -> Step:
    return Step(
        "swapfile",
        script(
            f"size_mb={size_mb}",
            'if [ -f /swapfile ] && [ "$(($(stat -c %s /swapfile) / 1048576))" = "$size_mb" ] '
            "&& grep -q '^/swapfile ' /etc/fstab; then",
            "  swapon --show=NAME --noheadings | grep -qx /swapfile || swapon /swapfile",
            '  echo "unchanged /swapfile"; exit 0',
            "fi",
            "swapoff /swapfile 2>/dev/null || true",
            'dd if=/dev/zero of=/swapfile bs=1M count="$size_mb" status=none',
            "chmod 0600 /swapfile",
            "mkswap /swapfile >/dev/null",
            "swapon /swapfile",
            "grep -q '^/swapfile ' /etc/fstab || echo '/swapfile none swap sw 0 0' >> /etc/fstab",
            'echo "changed /swapfile ${size_mb} MB"',
        ),
    )


def arm_emulation_step() -> Step:
    """arm/v7 containers on the x86 device VM: qemu-user-static registered with the F flag."""
    return Step(
        "arm-emulation",
        script(
            "entry=/proc/sys/fs/binfmt_misc/qemu-arm",
            '[ -e "$entry" ] || systemctl restart systemd-binfmt',
            'grep -q "^flags: .*F" "$entry" || { echo "qemu-arm is not registered with the F flag" >&2; exit 1; }',
            'echo "unchanged qemu-arm binfmt (flags: $(sed -n "s/^flags: //p" "$entry"))"',
        ),
    )


def machine_check_step(guest: HostSpec) -> Step:
    """An existing machine is what its config says: its architecture, and the serial device the
    device service is given (never dropped from the release when it is missing: it fails here)."""
    key = f"guests.{guest.name}"
    dev = guest.device.serial_device
    fix_serial = (
        "enable the UART (enable_uart=1 in /boot/firmware/config.txt) and reboot; "
        "on a test machine, point serialDevice at a stand-in node (docs/application.md)"
    )
    _, arch = DOCKER_REPOSITORIES[guest.arch]
    return Step(
        "machine-check",
        script(
            f"dev={shlex.quote(dev)}",
            "have=$(dpkg --print-architecture)",
            f'if [ "$have" != {arch} ]; then',
            f'  echo "{key}.arch = {guest.arch}, but the machine is $have. '
            f"Fix: set {key}.arch to the machine's\" >&2; exit 1",
            "fi",
            'if [ ! -e "$dev" ]; then',
            f'  echo "{key}.device.serialDevice = $dev does not exist. Fix: {fix_serial}" >&2',
            "  exit 1",
            "fi",
            'if [ ! -c "$dev" ]; then',
            f'  echo "{key}.device.serialDevice = $dev is not a character device. '
            f'Fix: {fix_serial}" >&2',
            "  exit 1",
            "fi",
            'echo "unchanged machine: $have, serial device $dev"',
        ),
    )


def baseline_plan(cfg: CommonConfig, guest: Guest) -> list[Step]:
    """Every step that converges `guest` to the baseline, in order (an existing machine: no
    LXC or VM step, its own check first)."""
    settings = cfg.baseline
    app = cfg.environment in APP_ENVIRONMENTS  # the guest runs the services
    packages = BASE_PACKAGES + (DEVICE_PACKAGES if guest.kind == "vm" else ())
    steps: list[Step] = []
    if isinstance(guest, HostSpec):
        steps.append(machine_check_step(guest))
    if guest.kind == "lxc":
        steps.append(
            file_step(
                "apt-sandbox", "/etc/apt/apt.conf.d/99smart-smoker-sandbox", apt_sandbox_config()
            )
        )
    steps += [
        packages_step(packages),
        timezone_step(settings.timezone),
        users_step(guest, settings, app),
        *authorized_keys_steps(cfg, guest),
        sshd_step(),
        firewall_step(guest),
        fail2ban_step(settings),
        docker_engine_step(settings, guest),
        docker_config_step(settings, use_crun=not isinstance(guest, HostSpec)),
        logrotate_step(settings, app),
    ]
    if not isinstance(guest, HostSpec) and guest.kind == "vm":
        if guest.swap_mb:
            steps.append(swapfile_step(guest.swap_mb))
        steps.append(arm_emulation_step())
    return [replace(step, locked=True) for step in steps]  # never while a deploy runs
