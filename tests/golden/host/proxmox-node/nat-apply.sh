#!/bin/sh
# Managed by smoker-infra: converge guest-network NAT on the Proxmox node.
set -eu
umask 022
cat > /etc/sysctl.d/90-smart-smoker-nat.conf.new <<'SYSCTL'
# Managed by smoker-infra: the guest network is routed out through this host.
net.ipv4.ip_forward = 1
SYSCTL
mv /etc/sysctl.d/90-smart-smoker-nat.conf.new /etc/sysctl.d/90-smart-smoker-nat.conf
sysctl -q -p /etc/sysctl.d/90-smart-smoker-nat.conf
cat > /etc/systemd/system/smart-smoker-nat.service.new <<'UNIT'
# Managed by smoker-infra: NAT for the Smart Smoker guest network 10.20.0.0/24.
[Unit]
Description=Smart Smoker guest network NAT (10.20.0.0/24)
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStartPre=/bin/sh -c 'ip -4 -o addr show dev vmbr0 | grep -qF " 10.20.0.1/24 " || \
  ip addr add 10.20.0.1/24 dev vmbr0'
ExecStart=/bin/sh -c 'iptables -t nat -C POSTROUTING -s 10.20.0.0/24 ! -d 10.20.0.0/24 -m comment --comment smart-smoker-nat -j MASQUERADE 2>/dev/null || iptables -t nat -A POSTROUTING -s 10.20.0.0/24 ! -d 10.20.0.0/24 -m comment --comment smart-smoker-nat -j MASQUERADE'
ExecStop=/bin/sh -c 'while iptables -t nat -C POSTROUTING -s 10.20.0.0/24 ! -d 10.20.0.0/24 -m comment --comment smart-smoker-nat -j MASQUERADE 2>/dev/null; do \
  iptables -t nat -D POSTROUTING -s 10.20.0.0/24 ! -d 10.20.0.0/24 -m comment --comment smart-smoker-nat -j MASQUERADE; done'

[Install]
WantedBy=multi-user.target
UNIT
if ! cmp -s /etc/systemd/system/smart-smoker-nat.service.new /etc/systemd/system/smart-smoker-nat.service; then
  if [ -f /etc/systemd/system/smart-smoker-nat.service ]; then systemctl stop smart-smoker-nat.service || true; fi
  mv /etc/systemd/system/smart-smoker-nat.service.new /etc/systemd/system/smart-smoker-nat.service
  systemctl daemon-reload
else
  rm -f /etc/systemd/system/smart-smoker-nat.service.new
fi
systemctl enable --now smart-smoker-nat.service
