set -eu
zone=America/New_York
[ -e "/usr/share/zoneinfo/$zone" ] || { echo "unknown timezone $zone" >&2; exit 1; }
if [ "$(readlink /etc/localtime)" = "/usr/share/zoneinfo/$zone" ] && [ "$(cat /etc/timezone 2>/dev/null)" = "$zone" ]; then
  echo "unchanged timezone"; exit 0
fi
ln -sfn "/usr/share/zoneinfo/$zone" /etc/localtime
echo "$zone" > /etc/timezone
echo "changed timezone $zone"
