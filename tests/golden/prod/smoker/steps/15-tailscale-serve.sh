set -eu
wanted='[]'
state() { tailscale serve status --json 2>/dev/null | python3 -c 'import json, sys
config = json.loads(sys.stdin.read() or "{}") or {}
funnel = config.get("AllowFunnel") or {}
mappings = []
for host_port, web in (config.get("Web") or {}).items():
    port = int(host_port.rsplit(":", 1)[1])
    for handler in (web.get("Handlers") or {}).values():
        mappings.append([port, handler.get("Proxy", ""), bool(funnel.get(host_port))])
print(json.dumps(sorted(mappings)))
'; }
if [ "$(state)" = "$wanted" ]; then echo "unchanged tailscale serve $wanted"; exit 0; fi
tailscale serve reset
have=$(state)
if [ "$have" != "$wanted" ]; then
  echo "tailscale serve did not converge: have $have, want $wanted" >&2; exit 1
fi
echo "changed tailscale serve $wanted"
