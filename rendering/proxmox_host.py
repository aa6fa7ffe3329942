"""What the Proxmox node itself receives (guest-network NAT, the VM vendor data) and gives (its
CA certificate)."""

from __future__ import annotations

import ipaddress
import re
import shlex

from config import NetworkSettings

NAT_UNIT_NAME = "smart-smoker-nat.service"
NAT_SYSCTL_PATH = "/etc/sysctl.d/90-smart-smoker-nat.conf"
NAT_UNIT_PATH = f"/etc/systemd/system/{NAT_UNIT_NAME}"
NODE_CA_FILE = "/etc/pve/pve-root-ca.pem"  # signs the node's API certificate
_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n"
)


def nat_rule(cidr: ipaddress.IPv4Network) -> str:
    """The iptables rule (without -A/-C/-D) that masquerades the guest network out."""
    return f"POSTROUTING -s {cidr} ! -d {cidr} -m comment --comment smart-smoker-nat -j MASQUERADE"


def nat_sysctl() -> str:
    return (
        "# Managed by smoker-infra: the guest network is routed out through this host.\n"
        "net.ipv4.ip_forward = 1\n"
    )


def nat_unit(network: NetworkSettings) -> str:
    """A oneshot unit that, at boot, gives the bridge the gateway address when it lacks it and
    adds the masquerade rule once (iptables -C guards it)."""
    cidr = network.cidr
    rule = nat_rule(cidr)
    gateway = f"{network.gateway}/{cidr.prefixlen}"
    return f"""\
# Managed by smoker-infra: NAT for the Smart Smoker guest network {cidr}.
[Unit]
Description=Smart Smoker guest network NAT ({cidr})
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStartPre=/bin/sh -c 'ip -4 -o addr show dev {network.bridge} | grep -qF " {gateway} " || \\
  ip addr add {gateway} dev {network.bridge}'
ExecStart=/bin/sh -c 'iptables -t nat -C {rule} 2>/dev/null || iptables -t nat -A {rule}'
ExecStop=/bin/sh -c 'while iptables -t nat -C {rule} 2>/dev/null; do \\
  iptables -t nat -D {rule}; done'

[Install]
WantedBy=multi-user.target
"""


def nat_apply_script(network: NetworkSettings) -> str:
    """Converge NAT on the node: sysctl file, unit file, enabled and started. Idempotent."""
    q = shlex.quote
    return f"""\
#!/bin/sh
# Managed by smoker-infra: converge guest-network NAT on the Proxmox node.
set -eu
umask 022
cat > {q(NAT_SYSCTL_PATH)}.new <<'SYSCTL'
{nat_sysctl()}SYSCTL
mv {q(NAT_SYSCTL_PATH)}.new {q(NAT_SYSCTL_PATH)}
sysctl -q -p {q(NAT_SYSCTL_PATH)}
cat > {q(NAT_UNIT_PATH)}.new <<'UNIT'
{nat_unit(network)}UNIT
if ! cmp -s {q(NAT_UNIT_PATH)}.new {q(NAT_UNIT_PATH)}; then
  if [ -f {q(NAT_UNIT_PATH)} ]; then systemctl stop {NAT_UNIT_NAME} || true; fi
  mv {q(NAT_UNIT_PATH)}.new {q(NAT_UNIT_PATH)}
  systemctl daemon-reload
else
  rm -f {q(NAT_UNIT_PATH)}.new
fi
systemctl enable --now {NAT_UNIT_NAME}
"""


def nat_remove_script() -> str:
    """Undo `nat_apply_script` (ip_forward is left on: other guests may route through it)."""
    return f"""\
#!/bin/sh
# Managed by smoker-infra: remove guest-network NAT from the Proxmox node.
set -eu
if [ -f {NAT_UNIT_PATH} ]; then
  systemctl disable --now {NAT_UNIT_NAME} || true
  rm -f {NAT_UNIT_PATH}
  systemctl daemon-reload
fi
rm -f {NAT_SYSCTL_PATH}
"""


def vendor_data() -> str:
    """cloud-init vendor data for the VM template and its clones: the QEMU guest agent.

    Ubuntu cloud images ship without qemu-guest-agent; with `agent.enabled` and no agent, Proxmox
    waits 15 minutes on every start. Installing it on first boot avoids that.
    """
    return """\
#cloud-config
# Managed by smoker-infra: vendor data for the Smart Smoker VM template and its clones.
package_update: true
packages:
  - qemu-guest-agent
runcmd:
  - [systemctl, enable, --now, qemu-guest-agent]
"""


def ca_certificate_of(stdout: str) -> str:
    """The PEM certificate a `cat` of the node's CA file printed (refuses anything else)."""
    text = (stdout or "").strip().replace("\r\n", "\n") + "\n"
    if not _PEM_CERTIFICATE.fullmatch(text):
        raise ValueError(f"{NODE_CA_FILE} on the node is not one PEM certificate")
    return text
