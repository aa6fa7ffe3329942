set -eu
umask 077
install -d -m 0700 /run/smart-smoker
keyfile=$(mktemp /run/smart-smoker/tailscale-auth.XXXXXX)
trap 'rm -f "$keyfile"' EXIT
cat > "$keyfile"
identity() { tailscale status --json 2>/dev/null | python3 -c 'import json, sys
status = json.loads(sys.stdin.read() or "{}")
me = status.get("Self") or {}
print(status.get("BackendState", ""), me.get("HostName", ""), ",".join(sorted(me.get("Tags") or [])))
'; }
before=$(identity || true)
flags='--hostname=smoker --advertise-tags=tag:device,tag:production --accept-dns=true'
case "$before" in
  Running*)
    # shellcheck disable=SC2086 # flags are several arguments
    tailscale up --reset $flags ;;
  *)
    # shellcheck disable=SC2086
    tailscale up --reset --auth-key="file:$keyfile" $flags ;;
esac
after=$(identity)
if [ "$after" != 'Running smoker tag:device,tag:production' ]; then
  echo "tailscale did not converge: have '$after', want 'Running smoker tag:device,tag:production'" >&2; exit 1
fi
if [ "$before" = "$after" ]; then echo "unchanged tailscale $after"; else echo "changed tailscale $after"; fi
