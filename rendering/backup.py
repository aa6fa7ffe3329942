"""MongoDB backups on a cloud guest: the backup tool, its systemd units and the failure hook.

One tool, one backup directory: the nightly dump, the retention, the validation and the restore
all read and write `<app_dir>/backups` (the old system dumped to one path and checked another).
"""

from __future__ import annotations

import shlex

from config import StackConfig
from rendering.app import MONGO_ADMIN_USER, MONGO_APP_DATABASE, MONGO_TOOLS_CONFIG, SECRETS_DIR
from rendering.plan import Step, file_step, script

TOOL_PATH = "/usr/local/sbin/smart-smoker-backup"
WEBHOOK_CONFIG = f"{SECRETS_DIR}/backup-webhook.curl"
STATUS_DIR = "/var/lib/smart-smoker"
FAILURES_LOG = "/var/log/smart-smoker/backup-failures.jsonl"
UNIT_PREFIX = "smart-smoker-backup"


def backup_dir(cfg: StackConfig) -> str:
    return f"{cfg.baseline.app_dir}/backups"


def backup_tool(cfg: StackConfig, project: str) -> str:
    """The `smart-smoker-backup` command (bash); every path and count comes from the config."""
    retention = cfg.app.backups.retention
    return f"""\
#!/bin/bash
# Managed by smoker-infra: MongoDB backups for the Compose project {project}.
#   smart-smoker-backup dump [--class daily|weekly|monthly|predeploy]   dump, verify, record
#   smart-smoker-backup nightly                                          dump (class by date) + prune
#   smart-smoker-backup prune                                            retention by count per class
#   smart-smoker-backup validate                                         newest: present, fresh, intact, restorable
#   smart-smoker-backup restore ARCHIVE [--to-db NAME | --in-place]      restore (scratch database by default)
#   smart-smoker-backup list | report-failure UNIT
# SMOKER_BACKUP_NOW (epoch seconds) replaces the clock, for tests.
set -euo pipefail
umask 077

BACKUP_DIR={backup_dir(cfg)}
PROJECT={project}
TOOLS_CONFIG={MONGO_TOOLS_CONFIG}
ADMIN_USER="{MONGO_ADMIN_USER}"
APP_DB="{MONGO_APP_DATABASE}"
declare -A KEEP=([daily]={retention.daily} [weekly]={retention.weekly} [monthly]={retention.monthly} [predeploy]={cfg.app.backups.pre_deploy_keep})
MAX_AGE_HOURS={cfg.app.backups.max_age_hours}
WEBHOOK_CONFIG={WEBHOOK_CONFIG}
STATUS_DIR={STATUS_DIR}
FAILURES_LOG={FAILURES_LOG}
CLASSES="daily weekly monthly predeploy"

now() {{ echo "${{SMOKER_BACKUP_NOW:-$(date +%s)}}"; }}
die() {{ echo "smart-smoker-backup: $*" >&2; exit 1; }}

mongo_container() {{
  local id
  id=$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" \\
    --filter "label=com.docker.compose.service=mongo" | head -n 1)
  [ -n "$id" ] || die "no running mongo container in project $PROJECT"
  echo "$id"
}}

# Run a MongoDB tool in the mongo container with the admin password from the root-only config
# file, copied into the container's private /tmp for the call and removed after (never in argv).
in_mongo() {{
  local id=$1; shift
  docker exec -i "$id" sh -c 'umask 077; cat > /tmp/.smoker-tools.yaml' < "$TOOLS_CONFIG"
  local rc=0
  docker exec -i "$id" "$@" --config=/tmp/.smoker-tools.yaml --username="$ADMIN_USER" \\
    --authenticationDatabase=admin || rc=$?
  docker exec "$id" rm -f /tmp/.smoker-tools.yaml || true
  return "$rc"
}}

class_for() {{  # monthly on the 1st, weekly on Sunday, daily otherwise (local time)
  case "$(date -d "@$1" +%d-%u)" in
    01-*) echo monthly ;;
    *-7) echo weekly ;;
    *) echo daily ;;
  esac
}}

archives() {{  # newest first; optional class
  local pattern="smartsmoker-${{1:-*}}-*.archive.gz"
  find "$BACKUP_DIR" -maxdepth 1 -type f -name "$pattern" -printf '%f\\n' 2>/dev/null |
    sed -E 's/^(smartsmoker-[a-z]+-)([0-9TZ]+)(\\.archive\\.gz)$/\\2 \\1\\2\\3/' | sort -r | cut -d' ' -f2
}}

manifest_of() {{ echo "$BACKUP_DIR/${{1%.archive.gz}}.json"; }}

json_field() {{  # json_field FILE KEY
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}}

cmd_dump() {{
  local class="" t
  while [ $# -gt 0 ]; do
    case "$1" in
      --class) class=$2; shift 2 ;;
      *) die "dump: unknown argument $1" ;;
    esac
  done
  t=$(now)
  class=${{class:-$(class_for "$t")}}
  case " $CLASSES " in *" $class "*) ;; *) die "unknown class $class" ;; esac
  install -d -m 0700 "$BACKUP_DIR"
  local id stamp name tmp size sha version
  id=$(mongo_container)
  stamp=$(date -u -d "@$t" +%Y%m%dT%H%M%SZ)
  name="smartsmoker-$class-$stamp.archive.gz"
  tmp=$(mktemp "$BACKUP_DIR/.partial.XXXXXX")
  trap 'rm -f "$tmp"' EXIT
  in_mongo "$id" mongodump --archive --gzip > "$tmp" || die "mongodump failed"
  [ -s "$tmp" ] || die "mongodump wrote an empty archive"
  gzip -t "$tmp" || die "the archive is not valid gzip"
  size=$(stat -c %s "$tmp")
  sha=$(sha256sum "$tmp" | cut -d' ' -f1)
  version=$(docker exec "$id" mongod --version | sed -n 's/^db version v//p' | head -n 1)
  printf '{{"archive": "%s", "class": "%s", "time": "%s", "epoch": %s, "size": %s, "sha256": "%s", "mongodb_version": "%s"}}\n' \
    "$name" "$class" "$(date -u -d "@$t" +%Y-%m-%dT%H:%M:%SZ)" "$t" "$size" "$sha" "$version" \
    > "$(manifest_of "$name").tmp"
  mv "$(manifest_of "$name").tmp" "$(manifest_of "$name")"
  mv "$tmp" "$BACKUP_DIR/$name"
  trap - EXIT
  echo "$BACKUP_DIR/$name"
}}

cmd_prune() {{  # keep the newest KEEP[class] of each class, and always the newest of all
  local newest="" name class
  declare -A seen=()
  for name in $(archives); do
    newest=${{newest:-$name}}
    class=${{name#smartsmoker-}}
    class=${{class%%-*}}
    seen[$class]=$(( ${{seen[$class]:-0}} + 1 ))
    if [ "${{seen[$class]}}" -le "${{KEEP[$class]:-0}}" ] || [ "$name" = "$newest" ]; then continue; fi
    rm -f "$BACKUP_DIR/$name" "$(manifest_of "$name")"
    echo "pruned $name"
  done
}}

cmd_validate() {{
  local newest manifest age sha id
  newest=$(archives | head -n 1)
  [ -n "$newest" ] || die "no backup in $BACKUP_DIR"
  manifest=$(manifest_of "$newest")
  [ -s "$BACKUP_DIR/$newest" ] || die "$newest is empty"
  [ -f "$manifest" ] || die "$newest has no manifest"
  age=$(( ($(now) - $(json_field "$manifest" epoch)) / 3600 ))
  [ "$age" -lt "$MAX_AGE_HOURS" ] || die "$newest is $age h old (limit $MAX_AGE_HOURS h)"
  sha=$(sha256sum "$BACKUP_DIR/$newest" | cut -d' ' -f1)
  [ "$sha" = "$(json_field "$manifest" sha256)" ] || die "$newest does not match its checksum"
  id=$(mongo_container)
  in_mongo "$id" mongorestore --archive --gzip --dryRun < "$BACKUP_DIR/$newest" >/dev/null 2>&1 ||
    die "$newest is not restorable (mongorestore --dryRun failed)"
  echo "valid $newest (age $age h, sha256 $sha)"
}}

cmd_restore() {{
  local archive="" target="restore_drill" in_place=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --to-db) target=$2; shift 2 ;;
      --in-place) in_place=1; shift ;;
      *) archive=$1; shift ;;
    esac
  done
  [ -n "$archive" ] || die "restore: name an archive (see: smart-smoker-backup list)"
  case "$archive" in /*) ;; *) archive="$BACKUP_DIR/$archive" ;; esac
  [ -f "$archive" ] || die "no such archive $archive"
  local manifest id
  manifest=$(manifest_of "$(basename "$archive")")
  if [ -f "$manifest" ]; then
    [ "$(sha256sum "$archive" | cut -d' ' -f1)" = "$(json_field "$manifest" sha256)" ] ||
      die "$archive does not match its checksum"
  fi
  id=$(mongo_container)
  # Only the application database: users (admin.system.users) belong to Pulumi's MongoUsers, and
  # restoring them would silently undo a password rotation.
  if [ "$in_place" = 1 ]; then
    in_mongo "$id" mongorestore --archive --gzip --drop --nsInclude="$APP_DB.*" < "$archive"
    echo "restored $archive in place"
  else
    in_mongo "$id" mongorestore --archive --gzip --drop --nsInclude="$APP_DB.*" \\
      --nsFrom="$APP_DB.*" --nsTo="$target.*" < "$archive"
    echo "restored $archive into database $target"
  fi
}}

cmd_list() {{
  local name
  for name in $(archives); do
    printf '%s\\t%s\\n' "$name" "$(json_field "$(manifest_of "$name")" sha256 2>/dev/null || echo '?')"
  done
}}

cmd_report_failure() {{
  local unit=${{1:-unknown}} host t
  host=$(hostname)
  t=$(now)
  install -d -m 0750 "$STATUS_DIR" "$(dirname "$FAILURES_LOG")"
  printf '{{"time": %s, "unit": "%s", "host": "%s"}}\\n' "$t" "$unit" "$host" >> "$FAILURES_LOG"
  printf '%s %s\\n' "$t" "$unit" > "$STATUS_DIR/backup-failed"
  logger -p user.err -t smart-smoker-backup "FAILED: $unit on $host (see $FAILURES_LOG)"
  if [ -s "$WEBHOOK_CONFIG" ]; then
    printf '{{"content": "smart-smoker backup FAILED: %s on %s"}}' "$unit" "$host" |
      curl -fsS --max-time 20 -K "$WEBHOOK_CONFIG" -H 'Content-Type: application/json' \\
        --data-binary @- >/dev/null || echo "webhook post failed" >&2
  fi
}}

cmd=${{1:-}}
shift || true
case "$cmd" in
  dump) cmd_dump "$@" ;;
  nightly) cmd_dump; cmd_prune; rm -f "$STATUS_DIR/backup-failed" ;;
  prune) cmd_prune ;;
  validate) cmd_validate ;;
  restore) cmd_restore "$@" ;;
  list) cmd_list ;;
  report-failure) cmd_report_failure "$@" ;;
  *) die "usage: smart-smoker-backup dump|nightly|prune|validate|restore|list|report-failure" ;;
esac
"""


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
