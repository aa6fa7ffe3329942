"""The device's update agent (`deploy/agent.py`): its systemd units, its files and the plan that
installs it on a device.

The agent runs as a oneshot service, at boot (a short delay after the network is online, so a
device that was off for weeks converges as soon as it is up) and on a timer. Its code is the
repository's own `deploy` package with `layout.py` and `errors.py`, copied as text under
`layout.AGENT_HOME`; it runs on Debian's `python3` with Debian's `python3-cryptography`,
`python3-yaml` and `python3-paramiko` (what `deploy.agent` imports through the engine), so no
pip and no wheel for armv7l is needed. The release signing key's public half arrives as PEM
text (derived from the secret in the component layer: nothing here sees the private key).

Exit codes 75 (busy, or waiting for the env files) and 69 (the document is unreachable) are
successes of the unit: the next run tries again, and neither is a failure to alert on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import layout
from errors import SmokerError
from rendering.plan import APT_GET, APT_PROLOGUE, Step, file_step, script

REPO = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"  # Debian's
PACKAGES = ("python3", "python3-cryptography", "python3-yaml", "python3-paramiko", "curl")
# the agent's code on the device: every module of the deploy package, and the two top-level
# modules it imports (layout, errors), at the same relative paths as in the repository
CODE = ("deploy/*.py", "layout.py", "errors.py")
SUCCESS_EXIT_STATUS = (layout.AGENT_UNREACHABLE_EXIT, layout.AGENT_BUSY_EXIT)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_PATH = re.compile(r"/[A-Za-z0-9._/-]+")
_URL = re.compile(r"https://[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+")


class AgentSettingsError(SmokerError):
    """A value the agent's units cannot carry."""


@dataclass(frozen=True)
class AgentSettings:
    """What the agent's units say: whom it converges, from where, and how often."""

    stack: str
    guest: str
    project: str  # the device's Compose project (layout.project_name)
    app_dir: str  # baseline.appDir
    source: str = layout.AGENT_DOCUMENT  # an https:// URL (the publisher), or a file path
    interval_seconds: int = 3600  # OnUnitActiveSec
    boot_delay_seconds: int = 60  # OnBootSec
    randomized_delay_seconds: int = 60
    fetch_timeout_seconds: int = 30
    run_timeout_seconds: int = 1800  # TimeoutStartSec: a pull of every image, up, verify

    def __post_init__(self) -> None:
        for what, value in (("stack", self.stack), ("guest", self.guest)):
            if not _NAME.fullmatch(value):
                raise AgentSettingsError(f"agent {what} {value!r}: letters, digits, '.', '_', '-'")
        if not _NAME.fullmatch(self.project):
            raise AgentSettingsError(f"agent project {self.project!r} is not a Compose name")
        if not _PATH.fullmatch(self.app_dir):
            raise AgentSettingsError(f"agent app dir {self.app_dir!r} is not an absolute path")
        if not (_PATH.fullmatch(self.source) or _URL.fullmatch(self.source)):
            raise AgentSettingsError(
                f"agent source {self.source!r}: an https:// URL or an absolute path (no spaces "
                "or quotes)"
            )
        if not 300 <= self.interval_seconds <= 7 * 86400:
            raise AgentSettingsError("the agent's interval must be 300 s .. 7 days")
        if not 10 <= self.boot_delay_seconds <= 3600:
            raise AgentSettingsError("the agent's boot delay must be 10 s .. 1 h")
        if not 0 <= self.randomized_delay_seconds <= self.interval_seconds // 2:
            raise AgentSettingsError("the agent's randomized delay must be 0 .. half the interval")
        if not 1 <= self.fetch_timeout_seconds <= 300:
            raise AgentSettingsError("the agent's fetch timeout must be 1 .. 300 s")
        if not 60 <= self.run_timeout_seconds <= 6 * 3600:
            raise AgentSettingsError("the agent's run timeout must be 60 s .. 6 h")


def agent_arguments(settings: AgentSettings) -> list[str]:
    """`python3 -m deploy.agent`'s arguments (the CLI of deploy/agent.py)."""
    pushed = [] if settings.source == layout.AGENT_DOCUMENT else [
        "--pushed-copy", layout.AGENT_DOCUMENT
    ]  # fmt: skip
    return [
        "--source",
        settings.source,
        *pushed,
        "--public-key",
        layout.AGENT_PUBLIC_KEY,
        "--state-dir",
        layout.AGENT_STATE_DIR,
        "--project",
        settings.project,
        "--app-dir",
        settings.app_dir,
        "--env-dir",
        layout.AGENT_ENV_DIR,
        "--stack",
        settings.stack,
        "--guest",
        settings.guest,
        "--timeout",
        str(settings.fetch_timeout_seconds),
    ]


def _systemd_word(word: str) -> str:
    """A word of an Exec line: `%` is a specifier to systemd (validated words need no quotes)."""
    return word.replace("%", "%%")


def service_unit(settings: AgentSettings) -> str:
    command = " ".join(
        _systemd_word(w) for w in [PYTHON, "-m", "deploy.agent", *agent_arguments(settings)]
    )
    success = " ".join(str(code) for code in SUCCESS_EXIT_STATUS)
    return f"""\
# Managed by smoker-infra: one run of the device's update agent (deploy/agent.py).
# Exit 75 (busy, waiting for env files) and 69 (document unreachable) are not failures.
[Unit]
Description=Smart Smoker update agent: converge {settings.guest} to its desired release
After=network-online.target docker.service
Wants=network-online.target

[Service]
Type=oneshot
WorkingDirectory={layout.AGENT_HOME}
Environment=PYTHONPATH={layout.AGENT_HOME}
Environment=PYTHONDONTWRITEBYTECODE=1
ExecStart={command}
SuccessExitStatus={success}
TimeoutStartSec={settings.run_timeout_seconds}
# root for the docker socket, the app dir and the host deploy lock; the rest is closed
UMask=0077
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=full
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
"""


def timer_unit(settings: AgentSettings) -> str:
    return f"""\
# Managed by smoker-infra: the update agent at boot and every {settings.interval_seconds} s.
[Unit]
Description=Smart Smoker update agent: at boot and every {settings.interval_seconds} s

[Timer]
OnBootSec={settings.boot_delay_seconds}s
OnUnitActiveSec={settings.interval_seconds}s
Persistent=true
RandomizedDelaySec={settings.randomized_delay_seconds}s
Unit={layout.AGENT_SERVICE}

[Install]
WantedBy=timers.target
"""


def units(settings: AgentSettings) -> dict[str, str]:
    return {
        layout.AGENT_SERVICE: service_unit(settings),
        layout.AGENT_TIMER: timer_unit(settings),
    }


def public_key_file(pem: str) -> str:
    """The release signing key's public half (SubjectPublicKeyInfo PEM), as the agent reads it."""
    text = pem.strip()
    if not (
        text.startswith("-----BEGIN PUBLIC KEY-----") and text.endswith("-----END PUBLIC KEY-----")
    ):
        raise AgentSettingsError(
            "the release public key must be a SubjectPublicKeyInfo PEM (BEGIN PUBLIC KEY): "
            "derive it from deviceReleaseSigningKey (deploy.desired.public_pem)"
        )
    return text + "\n"


def code_files(root: Path = REPO) -> dict[str, str]:
    """The agent's code on the device: path there -> the repository file's text."""
    files: dict[str, str] = {}
    for pattern in CODE:
        for path in sorted(root.glob(pattern)):
            relative = path.relative_to(root).as_posix()
            files[f"{layout.AGENT_HOME}/{relative}"] = path.read_text()
    return files


def packages_step() -> Step:
    """Debian's Python and the libraries the agent imports (no pip on the device)."""
    names = " ".join(PACKAGES)
    return Step(
        "agent-packages",
        script(
            f"pkgs='{names}'",
            "missing=''",
            "for p in $pkgs; do",
            "  dpkg-query -W -f='${Status}' \"$p\" 2>/dev/null | grep -q 'ok installed' "
            '|| missing="$missing $p"',
            "done",
            'if [ -z "$missing" ]; then echo "unchanged agent packages"; exit 0; fi',
            *APT_PROLOGUE,
            f"{APT_GET} update -q >/dev/null",
            "# shellcheck disable=SC2086 # a list of package names",
            f"{APT_GET} install -y -q --no-install-recommends $missing >/dev/null",
            'echo "changed agent packages:$missing"',
        ),
    )


def prune_step(installed: list[str]) -> Step:
    """Remove the agent's `*.py` files that the repository no longer has (a module removed or
    renamed): the code steps only install, and a stale module could still be imported."""
    return Step(
        "agent-prune",
        script(
            f"keep=' {' '.join(installed)} '",
            "removed=''",
            f"for f in $(find {layout.AGENT_HOME} -type f -name '*.py' | sort); do",
            '  case "$keep" in *" $f "*) ;; *) rm -f "$f"; removed="$removed $f" ;; esac',
            "done",
            'if [ -n "$removed" ]; then echo "changed removed$removed"; '
            'else echo "unchanged agent code"; fi',
        ),
    )


def agent_plan(settings: AgentSettings, public_key_pem: str) -> list[Step]:
    """Install the agent on a device: packages, directories, code, public key, units, timer."""
    steps = [
        packages_step(),
        Step(
            "agent-dirs",
            script(
                "changed=''",
                f"for d in {layout.AGENT_STATE_DIR} {layout.AGENT_ENV_DIR}; do",
                '  if [ ! -d "$d" ] || [ "$(stat -c %a:%U "$d")" != 700:root ]; then',
                '    install -d -m 0700 -o root -g root "$d"; changed="$changed $d"',
                "  fi",
                "done",
                f"install -d -m 0755 {layout.AGENT_HOME}/deploy",
                'if [ -n "$changed" ]; then echo "changed$changed"; '
                'else echo "unchanged agent dirs"; fi',
            ),
        ),
    ]
    for path, text in code_files().items():
        module = path.removeprefix(layout.AGENT_HOME + "/").removesuffix(".py")
        steps.append(
            file_step(
                "agent-code-" + module.replace("/", "-").replace("_", "-"),
                path,
                text,
                mode="0644",
                validate=f"{PYTHON} -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "
                '"$new"',
            )
        )
    steps.append(prune_step(sorted(code_files())))
    steps.append(
        file_step(
            "agent-public-key",
            layout.AGENT_PUBLIC_KEY,
            public_key_file(public_key_pem),
            mode="0644",
        )
    )
    for unit, text in units(settings).items():
        steps.append(
            file_step(
                "unit-" + unit.replace(".", "-"),
                f"/etc/systemd/system/{unit}",
                text,
                on_change="systemctl daemon-reload",
            )
        )
    steps.append(
        Step(
            "agent-timer",
            script(
                f"timer={layout.AGENT_TIMER}",
                'if systemctl is-enabled --quiet "$timer" && systemctl is-active --quiet "$timer"; '
                "then",
                '  echo "unchanged $timer"; exit 0',
                "fi",
                'systemctl enable --now "$timer"',
                'echo "changed $timer enabled"',
            ),
        )
    )
    return steps
