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
changed=''
current=$(ufw show added | sed -n "s/^ufw //p")
status=$(ufw status verbose)
case "$status" in
  *"Default: deny (incoming), allow (outgoing), deny (routed)"*) ;;
  *)
    ufw default deny incoming >/dev/null
    ufw default allow outgoing >/dev/null
    ufw default deny routed >/dev/null
    changed="$changed defaults" ;;
esac
while IFS= read -r rule; do
  case "$rule" in ""|"#"*) continue ;; esac
  if ! printf "%s\n" "$current" | grep -qxF -- "$rule"; then
    # shellcheck disable=SC2086 # a rule is several ufw arguments
    ufw $rule >/dev/null
    changed="$changed +[$rule]"
  fi
done < "$rules"
case "$status" in
  "Status: active"*) ;;
  *) ufw --force enable >/dev/null; changed="$changed enabled" ;;
esac
printf "%s\n" "$current" | while IFS= read -r rule; do
  case "$rule" in ""|*Fail2Ban*|*fail2ban*) continue ;; esac
  if ! grep -qxF -- "$rule" "$rules"; then
    # shellcheck disable=SC2086
    ufw delete $rule >/dev/null
    echo "removed undeclared ufw rule: $rule"
  fi
done
if [ -z "$changed" ]; then echo "unchanged ufw"; else echo "changed ufw:$changed"; fi
