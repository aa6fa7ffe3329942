set -eu
size_mb=100
if [ -f /swapfile ] && [ "$(($(stat -c %s /swapfile) / 1048576))" = "$size_mb" ] && grep -q '^/swapfile ' /etc/fstab; then
  swapon --show=NAME --noheadings | grep -qx /swapfile || swapon /swapfile
  echo "unchanged /swapfile"; exit 0
fi
swapoff /swapfile 2>/dev/null || true
dd if=/dev/zero of=/swapfile bs=1M count="$size_mb" status=none
chmod 0600 /swapfile
mkswap /swapfile >/dev/null
swapon /swapfile
grep -q '^/swapfile ' /etc/fstab || echo '/swapfile none swap sw 0 0' >> /etc/fstab
echo "changed /swapfile ${size_mb} MB"
