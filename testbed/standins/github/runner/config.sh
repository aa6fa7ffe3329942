#!/bin/bash
# STAND-IN for actions/runner's config.sh (tier-3 tests only, not the real runner): the same
# command-line shape (--unattended --url --name --labels --work --replace --disableupdate; the
# token from ACTIONS_RUNNER_INPUT_TOKEN or --token), refusing root and an already-configured
# directory, registering with the GitHub API stand-in and writing .runner and .credentials.
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(id -u)" = 0 ]; then
  echo "Must not run with sudo" >&2
  exit 1
fi
token=${ACTIONS_RUNNER_INPUT_TOKEN:-}
unset ACTIONS_RUNNER_INPUT_TOKEN
url='' name='' labels='' work=_work replace=false
while [ $# -gt 0 ]; do
  case "$1" in
    --url) url=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --labels) labels=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --token) token=$2; shift 2 ;;
    --replace) replace=true; shift ;;
    --unattended | --disableupdate) shift ;;
    *) echo "Unrecognized command-line input arguments: '$1'" >&2; exit 1 ;;
  esac
done
if [ -e .runner ]; then
  echo "Cannot configure the runner because it is already configured." >&2
  exit 1
fi
if [ -z "$token" ] || [ -z "$url" ] || [ -z "$name" ]; then
  echo "--url, --name and a token are required with --unattended" >&2
  exit 1
fi
api=$(cat .standin-api)
sleep 1 # the real configure takes seconds: the test's argv sampler sees this process run
response=$(mktemp)
trap 'rm -f "$response"' EXIT
printf '{"token":"%s","url":"%s","name":"%s","labels":"%s","replace":%s}' \
  "$token" "$url" "$name" "$labels" "$replace" |
  curl -fsS -o "$response" -H 'Content-Type: application/json' --data-binary @- \
    "$api/standin/register"
id=$(jq -r .id "$response")
printf '{"agentId":%s,"agentName":"%s","gitHubUrl":"%s","workFolder":"%s"}\n' \
  "$id" "$name" "$url" "$work" >.runner
(umask 077 && jq '{scheme: "OAuth", data: {credential: .credential}}' "$response" >.credentials)
mkdir -p "$work"
echo "Runner successfully added (stand-in, id $id)"
