# shellcheck shell=sh
# Run $BODY while holding the host deploy lock (the deploy engine's, deploy/lock.py): fail at once
# with $LOCKED_EXIT, naming the holder, when someone else holds it. The prologue sets LOCK (the
# lock directory), OWNER_FILE, WHAT (what runs, for the holder's record), LEASE (seconds after
# which a dead holder's lock is stale), LOCKED_EXIT and BODY.
set -eu
mkdir -p "$(dirname "$LOCK")"
if ! mkdir -m 0700 "$LOCK" 2>/dev/null; then
  holder=$(cat "$LOCK/$OWNER_FILE" 2>/dev/null || echo "an unknown holder")
  echo "the host is locked: $holder; not running $WHAT" >&2
  exit "$LOCKED_EXIT"
fi
trap 'rm -rf "$LOCK"' EXIT
now=$(date +%s)
printf '{"who": "%s", "what": "%s", "since": %s, "until": %s}' \
  "$(id -un)@$(hostname) via pulumi" "$WHAT" "$now" "$((now + LEASE))" > "$LOCK/$OWNER_FILE"
sh -c "$BODY"
