#!/bin/sh
# Keep this guest's GitHub Actions runner registered; run as root (the runner registration
# service, its timer and the apply plan run it). Prints `unchanged runner registration` or
# `changed runner registration`.
#
# The credential (root-only $TOKEN_FILE) is either a one-time registration token or a GitHub
# personal access token (ghp_..., github_pat_...) from which a registration token is minted. It
# reaches curl on stdin (`--config -`) and config.sh through ACTIONS_RUNNER_INPUT_TOKEN: never
# through a command line. A PAT also lets the timer bring back a runner deleted on GitHub; a
# one-time token registers once (a deleted runner then needs a new token applied). Values (URL,
# NAME, ...) come from the prologue.
set -eu
umask 077

fail() {
  echo "ensure-registered: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || fail "must run as root"
exec 9>/run/smoker-runner-registration.lock
flock 9 # one registration at a time (the timer and an apply may meet)

[ -s "$TOKEN_FILE" ] || fail "no credential in $TOKEN_FILE: apply the host stack (githubRunnerToken)"
credential=$(cat "$TOKEN_FILE")
case "$credential" in
  *[!A-Za-z0-9_.-]*) fail "the credential in $TOKEN_FILE holds unexpected characters" ;;
  ghp_* | github_pat_*) mode=pat ;;
  *) mode=token ;;
esac

response=$(mktemp)
trap 'rm -f "$response"' EXIT

# api METHOD PATH: the API's answer to METHOD $API_URL/$API_SCOPE/PATH, on stdout.
api() {
  status=$(printf 'header = "Authorization: Bearer %s"\n' "$credential" |
    curl --config - -sS --retry 3 -o "$response" -w '%{http_code}' -X "$1" \
      -H 'Accept: application/vnd.github+json' -H 'X-GitHub-Api-Version: 2022-11-28' \
      "$API_URL/$API_SCOPE/$2") || fail "$1 $API_URL/$API_SCOPE/$2: no answer"
  case "$status" in
    2??) cat "$response" ;;
    *)
      message=$(jq -r '.message? // empty' "$response" 2>/dev/null | head -c 200 || true)
      fail "$1 $API_URL/$API_SCOPE/$2 answered HTTP $status${message:+: $message}"
      ;;
  esac
}

listed_on_github() {
  runners=$(api GET "actions/runners?name=$NAME&per_page=100") || exit 1
  printf '%s' "$runners" | jq -e --arg name "$NAME" 'any(.runners[]?; .name == $name)' >/dev/null
}

# What the registration was made with: the settings, and in token mode the token (a one-time
# token registers once; a new one means register again). A PAT may rotate without re-registering.
if [ "$mode" = token ]; then
  wanted=$(printf '%s\n' "$URL" "$NAME" "$LABELS" "$WORK" "$credential" | sha256sum | cut -d' ' -f1)
else
  wanted=$(printf '%s\n' "$URL" "$NAME" "$LABELS" "$WORK" pat | sha256sum | cut -d' ' -f1)
fi
if [ -f "$INSTALL_DIR/.runner" ] && [ "$(cat "$STATE_FILE" 2>/dev/null)" = "$wanted" ]; then
  if [ "$mode" = token ] || listed_on_github; then
    echo "unchanged runner registration"
    exit 0
  fi
fi

if [ "$mode" = pat ]; then
  minted=$(api POST actions/runners/registration-token)
  registration_token=$(printf '%s' "$minted" | jq -r '.token // empty')
  [ -n "$registration_token" ] || fail "GitHub minted no registration token"
else
  registration_token=$credential
fi

systemctl stop "$SERVICE" 2>/dev/null || true
# The registration is set aside, not deleted: if config.sh fails (an expired one-time token,
# GitHub unreachable), it comes back and the runner keeps running as before.
kept=$(mktemp -d "$INSTALL_DIR/.registration-kept.XXXXXX")
for file in .runner .credentials .credentials_rsaparams; do
  if [ -e "$INSTALL_DIR/$file" ]; then mv "$INSTALL_DIR/$file" "$kept/"; fi
done
export ACTIONS_RUNNER_INPUT_TOKEN="$registration_token"
cd "$INSTALL_DIR"
if ! runuser -u "$RUNNER_USER" -- ./config.sh --unattended --url "$URL" --name "$NAME" \
  --labels "$LABELS" --work "$WORK" --replace --disableupdate >&2; then
  for file in .runner .credentials .credentials_rsaparams; do
    if [ -e "$kept/$file" ]; then mv -f "$kept/$file" "$INSTALL_DIR/"; fi
  done
  rmdir "$kept"
  if [ -e "$INSTALL_DIR/.runner" ]; then systemctl start "$SERVICE" || true; fi
  fail "config.sh could not register the runner (see $INSTALL_DIR/_diag); the previous registration was kept"
fi
rm -rf "$kept"
unset ACTIONS_RUNNER_INPUT_TOKEN registration_token credential
install -d -m 0700 "$(dirname "$STATE_FILE")"
echo "$wanted" >"$STATE_FILE"
systemctl enable --quiet "$SERVICE"
systemctl restart "$SERVICE"
echo "changed runner registration $NAME ($URL)"
