#!/bin/sh
# Managed by smoker-infra: remove guest-network NAT from the Proxmox node.
set -eu
if [ -f /etc/systemd/system/smart-smoker-nat.service ]; then
  systemctl disable --now smart-smoker-nat.service || true
  rm -f /etc/systemd/system/smart-smoker-nat.service
  systemctl daemon-reload
fi
rm -f /etc/sysctl.d/90-smart-smoker-nat.conf
