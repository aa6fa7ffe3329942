"""MongoDB backups on a cloud guest: the backup tool, its systemd units and the failure hook.

One tool, one backup directory: the nightly dump, the retention, the validation and the restore
all read and write `<app_dir>/backups` (the old system dumped to one path and checked another).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import layout
from config import StackConfig
from layout import BACKUP_FAILURES_LOG as FAILURES_LOG
from layout import (
    BACKUP_RETENTION,
    BACKUP_SHIP_UNIT,
    BACKUP_TOOL_NAME,
    INSTANCE_ID,
    LATEST_BACKUP,
    MONGO_SERVICE,
    OFFSITE_LAST,
    PROJECT_LABEL,
    RESTIC_CACHE_DIR,
    RESTIC_DIR,
    SECRETS_DIR,
    SERVICE_LABEL,
    STATUS_DIR,
)
from layout import BACKUP_TOOL as TOOL_PATH
from rendering import restic
from rendering.app import MONGO_ADMIN_USER, MONGO_APP_DATABASE, MONGO_TOOLS_CONFIG
from rendering.plan import APT_GET, APT_PROLOGUE, Step, file_step, script
from rendering.restic import ResticSecrets
from rendering.shell import ShellValue, with_prologue

RESTIC_VERSION = "0.14.0"  # Debian bookworm's restic; the tool is tested with it
RETENTION_SOURCE = Path(__file__).with_name("backup_retention.py")

WEBHOOK_CONFIG = f"{SECRETS_DIR}/backup-webhook.curl"
UNIT_PREFIX = BACKUP_TOOL_NAME


def backup_dir(cfg: StackConfig) -> str:
    return layout.backup_dir(cfg.baseline.app_dir)


def backup_tool(cfg: StackConfig, project: str) -> str:
    """The `smart-smoker-backup` command: `backup.sh` after a prologue of values from the config."""
    backups = cfg.app.backups
    retention = backups.retention
    keep = {
        "daily": retention.daily,
        "weekly": retention.weekly,
        "monthly": retention.monthly,
        "predeploy": backups.pre_deploy_keep,
    }
    values: dict[str, ShellValue] = {
        "TOOL_NAME": BACKUP_TOOL_NAME,
        "BACKUP_DIR": backup_dir(cfg),
        "PROJECT": project,
        "PROJECT_LABEL": PROJECT_LABEL,
        "SERVICE_LABEL": SERVICE_LABEL,
        "MONGO_SERVICE": MONGO_SERVICE,
        "TOOLS_CONFIG": MONGO_TOOLS_CONFIG,
        "ADMIN_USER": MONGO_ADMIN_USER,
        "APP_DB": MONGO_APP_DATABASE,
        "KEEP": keep,
        "MAX_AGE_HOURS": backups.max_age_hours,
        "WEBHOOK_CONFIG": WEBHOOK_CONFIG,
        "STATUS_DIR": STATUS_DIR,
        "FAILURES_LOG": FAILURES_LOG,
        "LATEST": LATEST_BACKUP,
        "CURRENT_MANIFEST": f"{layout.current_link(cfg.baseline.app_dir)}/{layout.MANIFEST}",
        "INSTANCE_FILE": INSTANCE_ID,
        "RETENTION": BACKUP_RETENTION,
        "OFFSITE": int(backups.offsite.enabled),
        "OFFSITE_LAST": OFFSITE_LAST,
        "RESTIC_ENV": restic.ENV_FILE,
        "RESTIC_TAG": "smart-smoker",
        "SFTP_COMMAND": restic.SFTP_COMMAND,
        "READ_SUBSET": backups.offsite.read_data_subset,
        "SHIP_UNIT": BACKUP_SHIP_UNIT,
    }
    header = (
        f"Managed by smoker-infra: MongoDB backups for the Compose project {project}.\n"
        "The values below come from the stack's config; the program after them is\n"
        "rendering/backup.sh of smoker-infra, verbatim."
    )
    return with_prologue("backup.sh", header, values)


def units(cfg: StackConfig) -> dict[str, str]:
    """systemd units: nightly dump, weekly validation, and the loud failure hook."""
    backups = cfg.app.backups
    failure = f"OnFailure={UNIT_PREFIX}-failure@%n.service"
    service = """\
# Managed by smoker-infra
[Unit]
Description={description}
After=docker.service
Requires=docker.service
{failure}

[Service]
Type=oneshot
ExecStart={tool} {command}
"""
    timer = """\
# Managed by smoker-infra
[Unit]
Description={description}

[Timer]
OnCalendar={calendar}
Persistent=true

[Install]
WantedBy=timers.target
"""
    weekday, _, time_of_day = backups.validate_calendar.rpartition(" ")
    ship = {
        BACKUP_SHIP_UNIT: service.format(
            description="Smart Smoker off-guest copies of the MongoDB backups (restic)",
            failure=failure + "\nAfter=network-online.target\nWants=network-online.target",
            tool=TOOL_PATH,
            command="ship",
        )
    }
    return ({} if not backups.offsite.enabled else ship) | {
        f"{UNIT_PREFIX}.service": service.format(
            description="Smart Smoker nightly MongoDB backup",
            failure=failure,
            tool=TOOL_PATH,
            command="nightly",
        ),
        f"{UNIT_PREFIX}.timer": timer.format(
            description="Smart Smoker nightly MongoDB backup",
            calendar=f"*-*-* {backups.dump_time}:00",
        ),
        f"{UNIT_PREFIX}-validate.service": service.format(
            description="Smart Smoker backup validation",
            failure=failure,
            tool=TOOL_PATH,
            command="validate",
        ),
        f"{UNIT_PREFIX}-validate.timer": timer.format(
            description="Smart Smoker weekly backup validation",
            calendar=f"{weekday + ' ' if weekday else ''}*-*-* {time_of_day}:00",
        ),
        f"{UNIT_PREFIX}-failure@.service": f"""\
# Managed by smoker-infra: makes a failed backup or validation loud.
[Unit]
Description=Record and report the failure of %i

[Service]
Type=oneshot
ExecStart={TOOL_PATH} report-failure %i
""",
    }


def webhook_curl_config(url: str) -> str:
    """curl -K file: the webhook URL (a secret) stays out of argv."""
    escaped = url.replace("\\", "\\\\").replace('"', '\\"')
    return f'url = "{escaped}"\nrequest = "POST"\n'


def restic_step() -> Step:
    """restic from the distribution, refused unless it is the version the tool is tested with."""
    return Step(
        "restic",
        script(
            f"install -d -m 0700 {RESTIC_DIR}",
            f"install -d -m 0700 {RESTIC_CACHE_DIR}",
            f"want={RESTIC_VERSION}",
            "have=$(restic version 2>/dev/null | awk '{print $2}' || true)",
            'if [ "$have" = "$want" ]; then echo "unchanged restic $have"; exit 0; fi',
            *APT_PROLOGUE,
            f"{APT_GET} update -q >/dev/null",
            f"{APT_GET} install -y -q --no-install-recommends restic >/dev/null",
            "have=$(restic version | awk '{print $2}')",
            'if [ "$have" != "$want" ]; then',
            '  echo "restic $have installed, but the backup tool is tested with $want:'
            ' pin it (apt) or update RESTIC_VERSION with a tested tool" >&2',
            "  exit 1",
            "fi",
            'echo "changed restic $have installed"',
        ),
    )


def backup_plan(
    cfg: StackConfig, project: str, webhook_url: str | None, offsite: ResticSecrets | None = None
) -> list[Step]:
    """The tool, its units and timers (and the webhook's secret curl config when set); with
    `app.backups.offsite`, restic and the repository's secret files."""
    steps = []
    if cfg.app.backups.offsite.enabled:
        assert offsite is not None, "app.backups.offsite needs the restic secrets"
        steps.append(restic_step())
        for path, content in restic.secret_files(offsite).items():
            name = "restic-" + path.rsplit("/", 1)[-1].replace("_", "-")
            steps.append(file_step(name, path, content, secret=True, mode="0600"))
    if webhook_url:
        steps.append(
            file_step(
                "backup-webhook",
                WEBHOOK_CONFIG,
                webhook_curl_config(webhook_url),
                secret=True,
                mode="0600",
            )
        )
    steps.append(
        file_step(
            "backup-retention",
            BACKUP_RETENTION,
            RETENTION_SOURCE.read_text(),
            mode="0644",
            validate="python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' \"$new\"",
        )
    )
    steps.append(
        file_step(
            "backup-tool",
            TOOL_PATH,
            backup_tool(cfg, project),
            mode="0755",
            validate='bash -n "$new"',
        )
    )
    for unit, text in units(cfg).items():
        name = unit.removesuffix(".service").replace("@", "")
        steps.append(
            file_step(
                f"unit-{name}",
                f"/etc/systemd/system/{unit}",
                text,
                on_change="systemctl daemon-reload",
            )
        )
    timers = f"{UNIT_PREFIX}.timer {UNIT_PREFIX}-validate.timer"
    steps.append(
        Step(
            "backup-timers",
            script(
                f"timers={shlex.quote(timers)}",
                "# shellcheck disable=SC2086 # two unit names",
                "if systemctl is-enabled --quiet $timers && systemctl is-active --quiet $timers; then",
                '  echo "unchanged timers"; exit 0',
                "fi",
                "# shellcheck disable=SC2086",
                "systemctl enable --now $timers",
                'echo "changed timers enabled"',
            ),
        )
    )
    return steps
