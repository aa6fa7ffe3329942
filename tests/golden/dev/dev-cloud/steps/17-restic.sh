set -eu
install -d -m 0700 /etc/smart-smoker/restic
install -d -m 0700 /var/cache/smart-smoker/restic
want=0.14.0
have=$(restic version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" = "$want" ]; then echo "unchanged restic $have"; exit 0; fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends restic >/dev/null
have=$(restic version | awk '{print $2}')
if [ "$have" != "$want" ]; then
  echo "restic $have installed, but the backup tool is tested with $want: pin it (apt) or update RESTIC_VERSION with a tested tool" >&2
  exit 1
fi
echo "changed restic $have installed"
