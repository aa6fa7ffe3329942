set -eu
target=/etc/smart-smoker/ufw-rules
[ -d "$(dirname "$target")" ] || install -d -m 0755 "$(dirname "$target")"
new=$(mktemp "$(dirname "$target")/.smoker-new.XXXXXX")
trap 'rm -f "$new"' EXIT
cat > "$new"
chown root:root "$new"
chmod 0640 "$new"
if [ -f "$target" ] && cmp -s "$new" "$target" && [ "$(stat -c %a:%U:%G "$target")" = 640:root:root ]; then
  echo "unchanged $target"
else
  mv -f "$new" "$target"
  echo "changed $target"
fi
rules=/etc/smart-smoker/ufw-rules
before=$(ufw show added 2>/dev/null | grep "^ufw " || true)
status_before=$(ufw status | head -n 1)
ufw default deny incoming >/dev/null
ufw default allow outgoing >/dev/null
ufw default deny routed >/dev/null
while IFS= read -r rule; do
  case "$rule" in ""|"#"*) continue ;; esac
  # shellcheck disable=SC2086 # a rule is several ufw arguments
  ufw $rule >/dev/null
done < "$rules"
if [ "$status_before" != "Status: active" ]; then
  ufw --force enable >/dev/null
  echo "changed ufw: enabled"
fi
ufw show added | sed -n "s/^ufw //p" | while IFS= read -r rule; do
  case "$rule" in *Fail2Ban*|*fail2ban*) continue ;; esac
  if ! grep -qxF -- "$rule" "$rules"; then
    # shellcheck disable=SC2086
    ufw delete $rule >/dev/null
    echo "removed undeclared ufw rule: $rule"
  fi
done
after=$(ufw show added 2>/dev/null | grep "^ufw " || true)
if [ "$before" = "$after" ]; then echo "unchanged ufw rules"; else echo "changed ufw rules"; fi
