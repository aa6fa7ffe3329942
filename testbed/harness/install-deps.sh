#!/usr/bin/env bash
# Install the host packages the tier-3 test harness needs (Debian 12).
# Idempotent: runs `apt-get update` (once) and `apt-get install` only when
# something is missing. Does not start any service.
set -euo pipefail

PACKAGES=(
  docker.io        # dockerd 20.10 + /usr/bin/docker CLI (isolated engine per test run)
  debootstrap      # builds the offline base image
  openssh-client   # ssh / ssh-keygen / ssh-keyscan
  iproute2         # ip (debugging the harness bridge)
  ca-certificates
  tar
  xz-utils
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: must run as root" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  if [ "$status" != "installed" ]; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps.sh: all harness packages present" >&2
  exit 0
fi

echo "install-deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# --no-install-recommends: docker.io recommends would pull extra tooling we do not use.
apt-get install -y -q --no-install-recommends "${missing[@]}"
