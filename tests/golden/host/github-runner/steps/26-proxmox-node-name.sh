set -eu
line='10.20.0.1 pve # smoker-infra: the Proxmox node'
if grep -qxF "$line" /etc/hosts; then echo "unchanged /etc/hosts"; exit 0; fi
new=$(mktemp /etc/.hosts.XXXXXX)
trap 'rm -f "$new"' EXIT
grep -vF '# smoker-infra: the Proxmox node' /etc/hosts > "$new" || true
echo "$line" >> "$new"
chmod 0644 "$new"
cat "$new" > /etc/hosts
echo "changed /etc/hosts: $line"
