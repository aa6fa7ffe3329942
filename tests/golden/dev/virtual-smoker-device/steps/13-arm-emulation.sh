set -eu
entry=/proc/sys/fs/binfmt_misc/qemu-arm
[ -e "$entry" ] || systemctl restart systemd-binfmt
grep -q "^flags: .*F" "$entry" || { echo "qemu-arm is not registered with the F flag" >&2; exit 1; }
echo "unchanged qemu-arm binfmt (flags: $(sed -n "s/^flags: //p" "$entry"))"
