#!/bin/bash
# smart-smoker-backup: MongoDB backups of one Compose project ($PROJECT). Usage:
#   smart-smoker-backup dump [--class daily|weekly|monthly|predeploy]   dump, verify, record
#   smart-smoker-backup nightly                                          dump (class by date) + prune
#   smart-smoker-backup prune                                            retention by count per class
#   smart-smoker-backup validate                                         newest: present, fresh, intact, restorable
#   smart-smoker-backup restore ARCHIVE [--to-db NAME | --in-place]      restore (scratch database by default)
#   smart-smoker-backup list                                             local and off-guest copies, ages
#   smart-smoker-backup report                                           JSON: newest copies, problems
#   smart-smoker-backup ship                                             every unshipped dump -> restic
#   smart-smoker-backup fetch [SNAPSHOT|ARCHIVE]                         off-guest copy -> local, verified
#   smart-smoker-backup report-failure UNIT
# With OFFSITE=1 every complete dump is shipped to the restic repository of $RESTIC_ENV (a
# root-only file; the repository's location is never on a command line): by the ship unit, or,
# for tests, inline (SMOKER_BACKUP_SHIP=inline) or by a later `ship` (=later).
# SMOKER_BACKUP_NOW (epoch seconds) replaces the clock, for tests.
set -euo pipefail
umask 077

CLASSES="daily weekly monthly predeploy"

now() { echo "${SMOKER_BACKUP_NOW:-$(date +%s)}"; }
die() { echo "$TOOL_NAME: $*" >&2; exit 1; }

mongo_container() {
  local id
  id=$(docker ps -q --filter "label=$PROJECT_LABEL=$PROJECT" \
    --filter "label=$SERVICE_LABEL=$MONGO_SERVICE" | head -n 1)
  [ -n "$id" ] || die "no running $MONGO_SERVICE container in project $PROJECT"
  echo "$id"
}

# Run a MongoDB tool in the mongo container with the admin password from the root-only config
# file, copied into the container's private /tmp for the call and removed after (never in argv).
in_mongo() {
  local id=$1; shift
  docker exec -i "$id" sh -c 'umask 077; cat > /tmp/.smoker-tools.yaml' < "$TOOLS_CONFIG"
  local rc=0
  docker exec -i "$id" "$@" --config=/tmp/.smoker-tools.yaml --username="$ADMIN_USER" \
    --authenticationDatabase=admin || rc=$?
  docker exec "$id" rm -f /tmp/.smoker-tools.yaml || true
  return "$rc"
}

class_for() {  # monthly on the 1st, weekly on Sunday, daily otherwise (local time)
  case "$(date -d "@$1" +%d-%u)" in
    01-*) echo monthly ;;
    *-7) echo weekly ;;
    *) echo daily ;;
  esac
}

archives() {  # newest first; optional class
  local pattern="smartsmoker-${1:-*}-*.archive.gz"
  find "$BACKUP_DIR" -maxdepth 1 -type f -name "$pattern" -printf '%f\n' 2>/dev/null |
    sed -E 's/^(smartsmoker-[a-z]+-)([0-9TZ]+)(\.archive\.gz)$/\2 \1\2\3/' | sort -r | cut -d' ' -f2
}

manifest_of() { echo "$BACKUP_DIR/${1%.archive.gz}.json"; }

json_field() {  # json_field FILE KEY
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

cmd_dump() {
  local class="" t
  while [ $# -gt 0 ]; do
    case "$1" in
      --class) class=$2; shift 2 ;;
      *) die "dump: unknown argument $1" ;;
    esac
  done
  t=$(now)
  class=${class:-$(class_for "$t")}
  case " $CLASSES " in *" $class "*) ;; *) die "unknown class $class" ;; esac
  install -d -m 0700 "$BACKUP_DIR"
  local id stamp name tmp size sha version
  id=$(mongo_container)
  stamp=$(date -u -d "@$t" +%Y%m%dT%H%M%SZ)
  name="smartsmoker-$class-$stamp.archive.gz"
  tmp=$(mktemp "$BACKUP_DIR/.partial.XXXXXX")
  # A dump that cannot be written whole (a full disk) is removed here and never becomes latest.
  trap 'rm -f "$tmp" "$(manifest_of "$name").tmp"' EXIT
  in_mongo "$id" mongodump --archive --gzip > "$tmp" || die "mongodump failed$(space_note)"
  [ -s "$tmp" ] || die "mongodump wrote an empty archive$(space_note)"
  gzip -t "$tmp" || die "the archive is not valid gzip$(space_note)"
  size=$(stat -c %s "$tmp")
  sha=$(sha256sum "$tmp" | cut -d' ' -f1)
  version=$(docker exec "$id" mongod --version | sed -n 's/^db version v//p' | head -n 1)
  printf '{"archive": "%s", "class": "%s", "time": "%s", "epoch": %s, "size": %s, "sha256": "%s", "mongodb_version": "%s", "instance": "%s"}\n' \
    "$name" "$class" "$(date -u -d "@$t" +%Y-%m-%dT%H:%M:%SZ)" "$t" "$size" "$sha" "$version" \
    "$(instance)" > "$(manifest_of "$name").tmp" || die "could not write the manifest$(space_note)"
  mv "$(manifest_of "$name").tmp" "$(manifest_of "$name")"
  mv "$tmp" "$BACKUP_DIR/$name"
  trap - EXIT
  ln -sfn "$name" "$BACKUP_DIR/.latest.tmp" && mv -T "$BACKUP_DIR/.latest.tmp" "$BACKUP_DIR/$LATEST"
  echo "$BACKUP_DIR/$name"
}

space_note() {  # why a write failed, when the disk is the reason
  local free
  free=$(df -Pk "$BACKUP_DIR" 2>/dev/null | awk 'NR == 2 {print $4}')
  [ -n "$free" ] && [ "$free" -lt 1048576 ] && echo " ($((free / 1024)) MiB free in $BACKUP_DIR: the disk is full)"
  true
}

instance() {  # this guest disk's id (a rebuilt guest is a new instance)
  [ -s "$INSTANCE_FILE" ] || {
    install -d -m 0750 "$(dirname "$INSTANCE_FILE")"
    cat /proc/sys/kernel/random/uuid > "$INSTANCE_FILE"
  }
  cat "$INSTANCE_FILE"
}

protected() {  # names retention never deletes: the newest complete dump, the live release's
  local newest_dump
  newest_dump=$(readlink "$BACKUP_DIR/$LATEST" 2>/dev/null || true)
  [ -n "$newest_dump" ] && echo "$newest_dump"
  [ -f "$CURRENT_MANIFEST" ] &&
    python3 -c 'import json,sys; b=json.load(open(sys.argv[1])).get("backup") or {}; print(b.get("id", ""))' \
      "$CURRENT_MANIFEST" 2>/dev/null | grep -v '^$' || true
}

keep_json() {
  local c sep="" out="{"
  for c in $CLASSES; do out="$out$sep\"$c\": ${KEEP[$c]:-0}"; sep=", "; done
  echo "$out}"
}

locked() {  # run "$@" holding the backup directory's lock (prune and ship never overlap)
  install -d -m 0750 "$STATUS_DIR"
  ( flock 8; "$@" ) 8> "$STATUS_DIR/.backups.lock"
}

cmd_prune() { locked prune_now; }

prune_now() {  # keep the newest KEEP[class] of each class, and always the protected names
  local name newest
  newest=$(archives | sed -n 1p)
  # shellcheck disable=SC2046 # one name a line
  for name in $(python3 "$RETENTION" local "$BACKUP_DIR" "$(keep_json)" $(protected) "$newest"); do
    rm -f "$BACKUP_DIR/$name" "$(manifest_of "$name")" "$BACKUP_DIR/.${name%.archive.gz}.shipped"
    echo "pruned $name"
  done
}

# -- off-guest copies (restic) ------------------------------------------------------------------

# restic with the repository's root-only env; its errors reach stderr classified, with the
# repository's location blanked out. Prints restic's stdout; returns restic's status.
restic_run() {
  local err rc=0
  err=$(mktemp)
  (
    set -a
    # shellcheck disable=SC1090
    . "$RESTIC_ENV"
    set +a
    if [ "$SMOKER_RESTIC_KIND" = sftp ]; then
      exec restic -o "sftp.command=$SFTP_COMMAND" "$@"
    fi
    exec restic "$@"
  ) 2> "$err" || rc=$?
  if [ "$rc" != 0 ]; then
    restic_error "$err" >&2
  fi
  rm -f "$err"
  return "$rc"
}

restic_error() {  # restic's stderr in $1 -> what went wrong and the fix, location blanked
  local text
  text=$(
    set -a
    # shellcheck disable=SC1090
    . "$RESTIC_ENV"
    python3 - "$1" <<'PY'
import os, sys
text = open(sys.argv[1], errors="replace").read()
for key in ("RESTIC_REPOSITORY", "SMOKER_RESTIC_HOST"):
    if os.environ.get(key):
        text = text.replace(os.environ[key], "<" + key.lower() + ">")
print(" | ".join(line.strip() for line in text.strip().splitlines()[-4:]))
PY
  )
  case "$text" in
    *"wrong password"*)
      echo "$TOOL_NAME: the restic repository refused the password: resticPassword is not this repository's password. Fix: pulumi config set --secret resticPassword <the repository's password>, then pulumi up. Nothing was changed." ;;
    *"Host key verification failed"*|*"REMOTE HOST IDENTIFICATION"*)
      echo "$TOOL_NAME: the sftp server's host key does not match resticSshKnownHosts. Fix: check the server, then pulumi config set --secret resticSshKnownHosts \"\$(ssh-keyscan HOST)\" and pulumi up." ;;
    *"Connection refused"*|*"timed out"*|*"No route to host"*|*"Could not resolve"*|*"unable to start the sftp session"*|*"dial tcp"*|*"no such host"*)
      echo "$TOOL_NAME: the restic repository cannot be reached ($text). The local dump still counts; the next ship sends every dump not yet shipped." ;;
    *"Permission denied"*)
      echo "$TOOL_NAME: the sftp server refused resticSshPrivateKey (Permission denied). Fix: authorize its public key for the repository's user." ;;
    *)
      echo "$TOOL_NAME: restic failed: $text" ;;
  esac
}

repository_ready() {  # the repository exists (made on first use) and takes the password;
  # checked again whenever the repository or the password changes
  local err rc=0 ready="$STATUS_DIR/.restic-ready" sum
  sum=$(cat "$RESTIC_ENV" "$(sed -n "s/^RESTIC_PASSWORD_FILE='\?\([^']*\)'\?$/\1/p" "$RESTIC_ENV")" |
    sha256sum | cut -d' ' -f1)
  [ "$(cat "$ready" 2>/dev/null)" = "$sum" ] && return 0
  err=$(mktemp)
  restic_run cat config > /dev/null 2> "$err" || rc=$?
  if [ "$rc" != 0 ] && grep -q "Is there a repository at the following location" "$err"; then
    restic_run init > /dev/null || { rm -f "$err"; die "could not create the restic repository"; }
    echo "created the restic repository" >&2
    rc=0
  else
    cat "$err" >&2
  fi
  rm -f "$err"
  [ "$rc" = 0 ] && echo "$sum" > "$ready"
  return "$rc"
}

ship_soon() {  # ship in the background unit (its failure is loud on its own) or, for tests, now
  [ "$OFFSITE" = 1 ] || return 0
  case "${SMOKER_BACKUP_SHIP:-unit}" in
    inline) ( cmd_ship ) >&2 || cmd_report_failure "$TOOL_NAME-ship" || true ;;
    later) ;;
    *) systemctl start --no-block "$SHIP_UNIT" ||
         echo "$TOOL_NAME: could not start $SHIP_UNIT; run $TOOL_NAME ship" >&2 ;;
  esac
}

cmd_ship() {
  [ "$OFFSITE" = 1 ] || die "off-guest copies are not configured (app.backups.offsite.enabled)"
  locked ship_now
}

ship_now() {  # every complete local dump without an off-guest copy, oldest first; then retention
  repository_ready || die "the off-guest copy failed: the restic repository is not usable"
  local name manifest marker snap epoch cls sha shipped=0
  for name in $(archives | tac); do
    marker="$BACKUP_DIR/.${name%.archive.gz}.shipped"
    manifest=$(manifest_of "$name")
    [ -f "$marker" ] || [ ! -f "$manifest" ] && continue
    epoch=$(json_field "$manifest" epoch)
    cls=$(json_field "$manifest" class)
    sha=$(json_field "$manifest" sha256)
    [ "$(sha256sum "$BACKUP_DIR/$name" | cut -d' ' -f1)" = "$sha" ] ||
      die "$name does not match its checksum: not shipped"
    snap=$(restic_run backup --json --host "$PROJECT" --time "$(date -d "@$epoch" '+%Y-%m-%d %H:%M:%S')" \
      --tag "$RESTIC_TAG" --tag "class=$cls" --tag "epoch=$epoch" --tag "sha256=$sha" \
      --tag "instance=$(json_field "$manifest" instance 2>/dev/null || instance)" \
      "$BACKUP_DIR/$name" "$manifest" |
      python3 -c 'import json,sys; print([json.loads(l) for l in sys.stdin if "summary" in l][-1]["snapshot_id"])') ||
      die "the off-guest copy of $name failed"
    echo "$snap" > "$marker"
    printf '{"name": "%s", "snapshot": "%s", "epoch": %s, "shipped": %s}\n' \
      "$name" "$snap" "$epoch" "$(now)" > "$OFFSITE_LAST"
    echo "shipped $name (snapshot ${snap:0:8})"
    shipped=$((shipped + 1))
  done
  if [ "$shipped" = 0 ]; then echo "nothing to ship"; else offsite_prune; fi
  if grep -qs -- "-ship" "$STATUS_DIR/backup-failed"; then rm -f "$STATUS_DIR/backup-failed"; fi
}

snapshots_json() {
  restic_run snapshots --json --host "$PROJECT" --tag "$RESTIC_TAG"
}

offsite_prune() {  # the local retention, mirrored; protected names are never forgotten
  local doomed
  # shellcheck disable=SC2046
  doomed=$(snapshots_json | python3 "$RETENTION" remote "$(keep_json)" $(protected)) ||
    die "could not list the off-guest snapshots"
  [ -n "$doomed" ] || return 0
  # shellcheck disable=SC2086 # snapshot ids
  restic_run forget --prune $doomed > /dev/null || die "restic forget --prune failed"
  echo "forgot $(echo "$doomed" | wc -w) off-guest snapshot(s)"
}

cmd_fetch() {  # fetch [SNAPSHOT|ARCHIVE]: an off-guest copy into the backup directory, verified
  [ "$OFFSITE" = 1 ] || die "off-guest copies are not configured (app.backups.offsite.enabled)"
  local snap name archive_path manifest_path tmp sha want
  install -d -m 0700 "$BACKUP_DIR"
  # shellcheck disable=SC2086
  read -r snap name archive_path manifest_path < <(
    snapshots_json | python3 "$RETENTION" pick "$(instance)" ${1:-}) || true
  if [ -z "${snap:-}" ]; then
    [ -n "${1:-}" ] && die "no off-guest backup named $1 (see: $TOOL_NAME list)"
    die "no off-guest backup made before this guest was built (name one: $TOOL_NAME list)"
  fi
  tmp=$(mktemp "$BACKUP_DIR/.partial.XXXXXX")
  trap 'rm -f "$tmp" "$tmp.json"' EXIT
  restic_run dump "$snap" "$archive_path" > "$tmp" || die "could not fetch $name$(space_note)"
  restic_run dump "$snap" "$manifest_path" > "$tmp.json" || die "could not fetch the manifest of $name"
  want=$(json_field "$tmp.json" sha256)
  sha=$(sha256sum "$tmp" | cut -d' ' -f1)
  [ "$sha" = "$want" ] || die "$name from snapshot ${snap:0:8} does not match its checksum ($sha, manifest $want)"
  mv "$tmp.json" "$(manifest_of "$name")"
  mv "$tmp" "$BACKUP_DIR/$name"
  trap - EXIT
  echo "$snap" > "$BACKUP_DIR/.${name%.archive.gz}.shipped"
  echo "fetched $name from snapshot ${snap:0:8} (sha256 $sha)" >&2
  echo "$BACKUP_DIR/$name"
}

cmd_validate() {
  local newest manifest age sha id
  newest=$(readlink "$BACKUP_DIR/$LATEST" 2>/dev/null || archives | sed -n 1p)
  [ -n "$newest" ] || die "no backup in $BACKUP_DIR"
  manifest=$(manifest_of "$newest")
  [ -s "$BACKUP_DIR/$newest" ] || die "$newest is empty"
  [ -f "$manifest" ] || die "$newest has no manifest"
  age=$(( ($(now) - $(json_field "$manifest" epoch)) / 3600 ))
  [ "$(json_field "$manifest" epoch)" -le $(( $(now) + 300 )) ] ||
    die "$newest is dated in the future ($(json_field "$manifest" time)): the clock jumped; not trusted as fresh"
  [ "$age" -lt "$MAX_AGE_HOURS" ] || die "$newest is $age h old (limit $MAX_AGE_HOURS h)"
  sha=$(sha256sum "$BACKUP_DIR/$newest" | cut -d' ' -f1)
  [ "$sha" = "$(json_field "$manifest" sha256)" ] || die "$newest does not match its checksum"
  id=$(mongo_container)
  in_mongo "$id" mongorestore --archive --gzip --dryRun < "$BACKUP_DIR/$newest" >/dev/null 2>&1 ||
    die "$newest is not restorable (mongorestore --dryRun failed)"
  echo "valid $newest (age $age h, sha256 $sha)"
  if [ "$OFFSITE" = 1 ]; then
    [ -f "$BACKUP_DIR/.${newest%.archive.gz}.shipped" ] ||
      die "$newest has no off-guest copy (see journalctl -u $SHIP_UNIT)"
    restic_run check --read-data-subset="$READ_SUBSET" > /dev/null ||
      die "restic check of the off-guest repository failed"
    echo "off-guest repository checked (read $READ_SUBSET of its data)"
  fi
}

cmd_restore() {
  local archive="" target="restore_drill" in_place=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --to-db) target=$2; shift 2 ;;
      --in-place) in_place=1; shift ;;
      *) archive=$1; shift ;;
    esac
  done
  [ -n "$archive" ] || die "restore: name an archive (see: $TOOL_NAME list)"
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
    in_mongo "$id" mongorestore --archive --gzip --drop --nsInclude="$APP_DB.*" \
      --nsFrom="$APP_DB.*" --nsTo="$target.*" < "$archive"
    echo "restored $archive into database $target"
  fi
}

cmd_list() {  # local and off-guest copies side by side
  local remote="[]"
  if [ "$OFFSITE" = 1 ]; then
    remote=$(snapshots_json) || { echo "(the off-guest repository could not be listed)" >&2; remote="[]"; }
  fi
  echo "$remote" | python3 "$RETENTION" list "$BACKUP_DIR" "$(now)"
}

cmd_report() {  # JSON for the operator CLI's status; reads no network
  python3 "$RETENTION" report "$BACKUP_DIR" "$(now)" "$MAX_AGE_HOURS" "$OFFSITE" \
    "$OFFSITE_LAST" "$STATUS_DIR/backup-failed"
}

cmd_report_failure() {
  local unit=${1:-unknown} host t
  host=$(hostname)
  t=$(now)
  install -d -m 0750 "$STATUS_DIR" "$(dirname "$FAILURES_LOG")"
  printf '{"time": %s, "unit": "%s", "host": "%s"}\n' "$t" "$unit" "$host" >> "$FAILURES_LOG"
  printf '%s %s\n' "$t" "$unit" > "$STATUS_DIR/backup-failed"
  logger -p user.err -t "$TOOL_NAME" "FAILED: $unit on $host (see $FAILURES_LOG)"
  if [ -s "$WEBHOOK_CONFIG" ]; then
    printf '{"content": "smart-smoker backup FAILED: %s on %s"}' "$unit" "$host" |
      curl -fsS --max-time 20 -K "$WEBHOOK_CONFIG" -H 'Content-Type: application/json' \
        --data-binary @- >/dev/null || echo "webhook post failed" >&2
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  dump) cmd_dump "$@"; ship_soon ;;
  nightly) cmd_dump; cmd_prune; rm -f "$STATUS_DIR/backup-failed"; ship_soon ;;
  prune) cmd_prune ;;
  validate) cmd_validate ;;
  restore) cmd_restore "$@" ;;
  list) cmd_list ;;
  report) cmd_report ;;
  ship) cmd_ship ;;
  fetch) cmd_fetch "$@" ;;
  report-failure) cmd_report_failure "$@" ;;
  *) die "usage: $TOOL_NAME dump|nightly|prune|validate|restore|list|report|ship|fetch|report-failure" ;;
esac
