set -eu
target=/etc/ssh/sshd_config
[ -d "$(dirname "$target")" ] || install -d -m 0755 "$(dirname "$target")"
new=$(mktemp "$(dirname "$target")/.smoker-new.XXXXXX")
trap 'rm -f "$new"' EXIT
cat > "$new"
chown root:root "$new"
chmod 0644 "$new"
if [ -f "$target" ] && cmp -s "$new" "$target" && [ "$(stat -c %a:%U:%G "$target")" = 644:root:root ]; then
  echo "unchanged $target"
else
  if ! { install -d -m 0755 /run/sshd && sshd -t -f "$new"; }; then
    echo "refused $target: check failed, the old file stays" >&2
    exit 1
  fi
  mv -f "$new" "$target"
  echo "changed $target"
  systemctl reload-or-restart ssh
fi
