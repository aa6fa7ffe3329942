set -eu
wanted='[[443, "/", "proxy", "http://127.0.0.1:80", false], [8443, "/", "proxy", "http://127.0.0.1:3001", false], [9443, "/device-releases/", "path", "/srv/smart-smoker/device-releases", false]]'
state() { tailscale serve status --json 2>/dev/null | python3 -c 'import json, sys
config = json.loads(sys.stdin.read() or "{}") or {}
funnel = config.get("AllowFunnel") or {}
handlers = []
for host_port, web in (config.get("Web") or {}).items():
    port = int(host_port.rsplit(":", 1)[1])
    for mount, handler in (web.get("Handlers") or {}).items():
        if handler.get("Path"):
            kind, value = "path", handler["Path"]
        elif handler.get("Proxy"):
            kind, value = "proxy", handler["Proxy"]
        else:
            kind, value = "other", json.dumps(handler, sort_keys=True)
        handlers.append([port, mount, kind, value, bool(funnel.get(host_port))])
print(json.dumps(sorted(handlers)))
'; }
[ -d /srv/smart-smoker/device-releases ] || install -d -m 0755 /srv/smart-smoker/device-releases
if [ "$(state)" = "$wanted" ]; then echo "unchanged tailscale serve $wanted"; exit 0; fi
tailscale serve reset
tailscale serve --bg --https=443 http://127.0.0.1:80 >/dev/null
tailscale serve --bg --https=8443 http://127.0.0.1:3001 >/dev/null
tailscale serve --bg --https=9443 --set-path=/device-releases /srv/smart-smoker/device-releases >/dev/null
have=$(state)
if [ "$have" != "$wanted" ]; then
  echo "tailscale serve did not converge: have $have, want $wanted" >&2; exit 1
fi
echo "changed tailscale serve $wanted"
