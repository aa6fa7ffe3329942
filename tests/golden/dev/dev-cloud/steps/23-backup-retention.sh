set -eu
target=/usr/local/lib/smart-smoker/backup_retention.py
[ -d "$(dirname "$target")" ] || install -d -m 0755 "$(dirname "$target")"
new=$(mktemp "$(dirname "$target")/.smoker-new.XXXXXX")
trap 'rm -f "$new"' EXIT
cat > "$new"
chown root:root "$new"
chmod 0644 "$new"
if [ -f "$target" ] && cmp -s "$new" "$target" && [ "$(stat -c %a:%U:%G "$target")" = 644:root:root ]; then
  echo "unchanged $target"
else
  if ! { python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$new"; }; then
    echo "refused $target: check failed, the old file stays" >&2
    exit 1
  fi
  mv -f "$new" "$target"
  echo "changed $target"
fi
