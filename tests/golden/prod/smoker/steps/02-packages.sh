set -eu
wanted='ca-certificates curl openssh-server sudo tzdata logrotate iptables ufw fail2ban python3 python3-systemd'
missing=""
for p in $wanted; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
if [ -z "$missing" ]; then echo "unchanged packages"; exit 0; fi
export DEBIAN_FRONTEND=noninteractive
if [ -d /run/systemd/system ]; then
  timeout 600 systemd-run --quiet --wait --collect --property=After=apt-daily.service --property=After=apt-daily-upgrade.service /bin/true || true
fi
apt-get -o DPkg::Lock::Timeout=600 update -q
# shellcheck disable=SC2086 # a list of package names
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing
echo "changed packages:$missing"
