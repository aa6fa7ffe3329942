set -eu
install -d -m 0700 /etc/smart-smoker/restic
install -d -m 0700 /var/cache/smart-smoker/restic
want=0.14.0
have=$(restic version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" = "$want" ]; then echo "unchanged restic $have"; exit 0; fi
export DEBIAN_FRONTEND=noninteractive
if [ -d /run/systemd/system ]; then
  timeout 600 systemd-run --quiet --wait --collect --property=After=apt-daily.service --property=After=apt-daily-upgrade.service /bin/true || true
fi
apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends restic >/dev/null
have=$(restic version | awk '{print $2}')
if [ "$have" != "$want" ]; then
  echo "restic $have installed, but the backup tool is tested with $want: pin it (apt) or update RESTIC_VERSION with a tested tool" >&2
  exit 1
fi
echo "changed restic $have installed"
