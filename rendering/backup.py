"""MongoDB backups on a cloud guest: the backup tool, its systemd units and the failure hook.

One tool, one backup directory: the nightly dump, the retention, the validation and the restore
all read and write `<app_dir>/backups` (the old system dumped to one path and checked another).
"""

from __future__ import annotations

import shlex

import layout
from config import StackConfig
from layout import BACKUP_FAILURES_LOG as FAILURES_LOG
from layout import BACKUP_TOOL as TOOL_PATH
from layout import (
    BACKUP_TOOL_NAME,
    MONGO_SERVICE,
    PROJECT_LABEL,
    SECRETS_DIR,
    SERVICE_LABEL,
    STATUS_DIR,
)
from rendering.app import MONGO_ADMIN_USER, MONGO_APP_DATABASE, MONGO_TOOLS_CONFIG
from rendering.plan import Step, file_step, script
from rendering.shell import ShellValue, with_prologue

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
    return {
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


def backup_plan(cfg: StackConfig, project: str, webhook_url: str | None) -> list[Step]:
    """The tool, its units and timers (and the webhook's secret curl config when set)."""
    steps = []
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
