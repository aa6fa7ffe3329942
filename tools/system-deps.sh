#!/usr/bin/env bash
# System packages the tests need (`make deps`) on Debian 12 (root only; idempotent; starts no service):
# the validators of tier 2, then the tier-3 harness's own list.
set -euo pipefail
cd "$(dirname "$0")/.."

VALIDATORS=(
  systemd          # systemd-analyze verify
  openssh-server   # sshd -t
  openssh-client   # ssh-keygen
  fail2ban         # fail2ban-client -t
  logrotate        # logrotate -d
)
missing=()
for pkg in "${VALIDATORS[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)" = installed ] || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "system-deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
bash testbed/harness/install-deps.sh
