#!/bin/bash
# STAND-IN for actions/runner's run.sh (tier-3 tests only): stays running and heartbeats to the
# GitHub API stand-in with its runner credential until that registration is deleted there (the
# real listener stops then too).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -f .runner ]; then
  echo "Not configured. Run config.(sh/cmd) to configure the runner." >&2
  exit 1
fi
api=$(cat .standin-api)
credential=$(jq -r .data.credential .credentials)
while :; do
  status=$(printf 'header = "Authorization: RunnerCredential %s"\n' "$credential" |
    curl --config - -sS -o /dev/null -w '%{http_code}' -X POST "$api/standin/heartbeat") ||
    status=000
  if [ "$status" = 404 ]; then
    echo "The runner registration has been deleted from the server" >&2
    exit 1
  fi
  sleep 1
done
