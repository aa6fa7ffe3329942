"""Tailscale on a guest: install, join with the auth key from stdin, converge identity and serve.

Hostname, tags and accept-dns are re-applied with `tailscale up --reset` on every change, so a
rename or a tag change converges (the old setup only ran `up` on a disconnected node). Serve and
funnel mappings are compared with `tailscale serve status --json` and rebuilt only when they
differ, so they end exactly as configured.
"""

from __future__ import annotations

import json
import shlex

from config import Guest, TailscaleSettings
from rendering.plan import APT_GET, APT_PROLOGUE, Step, script

AUTH_KEY_DIR = "/run/smart-smoker"

# Reads `tailscale serve status --json` (ipn.ServeConfig) on stdin and prints the mappings as a
# sorted JSON list of [https_port, proxy_target, funnel].
_SERVE_STATE = """\
import json, sys
config = json.loads(sys.stdin.read() or "{}") or {}
funnel = config.get("AllowFunnel") or {}
mappings = []
for host_port, web in (config.get("Web") or {}).items():
    port = int(host_port.rsplit(":", 1)[1])
    for handler in (web.get("Handlers") or {}).values():
        mappings.append([port, handler.get("Proxy", ""), bool(funnel.get(host_port))])
print(json.dumps(sorted(mappings)))
"""

_IDENTITY = """\
import json, sys
status = json.loads(sys.stdin.read() or "{}")
me = status.get("Self") or {}
print(status.get("BackendState", ""), me.get("HostName", ""), ",".join(sorted(me.get("Tags") or [])))
"""


def serve_urls(ts: TailscaleSettings, tailnet: str) -> dict[str, str]:
    """https port -> the tailnet URL `tailscale serve` publishes it at."""
    fqdn = f"{ts.hostname}.{tailnet}" if tailnet else ts.hostname
    return {str(m.https_port): f"https://{fqdn}:{m.https_port}" for m in ts.serve}


def up_flags(ts: TailscaleSettings) -> str:
    return " ".join(
        [
            f"--hostname={ts.hostname}",
            f"--advertise-tags={','.join(ts.tags)}",
            f"--accept-dns={'true' if ts.accept_dns else 'false'}",
        ]
    )


def wanted_serve(ts: TailscaleSettings) -> str:
    return json.dumps(sorted([m.https_port, m.target, ts.funnel] for m in ts.serve))


def install_step() -> Step:
    return Step(
        "tailscale-install",
        script(
            "if command -v tailscale >/dev/null 2>&1; then",
            "  systemctl is-active --quiet tailscaled || systemctl enable --now tailscaled",
            '  echo "unchanged tailscale"; exit 0',
            "fi",
            "# shellcheck disable=SC1091 # the guest's own os-release\n. /etc/os-release",
            'base="https://pkgs.tailscale.com/stable/$ID/$VERSION_CODENAME"',
            'curl -fsSL --retry 3 "$base.noarmor.gpg" -o /usr/share/keyrings/tailscale-archive-keyring.gpg',
            'curl -fsSL --retry 3 "$base.tailscale-keyring.list" -o /etc/apt/sources.list.d/tailscale.list',
            *APT_PROLOGUE,
            f"{APT_GET} update -q",
            f"{APT_GET} install -y -q tailscale",
            "systemctl enable --now tailscaled",
            'echo "changed tailscale installed"',
        ),
    )


def up_step(ts: TailscaleSettings, auth_key: str) -> Step:
    """Join (auth key read from stdin into a root-only file) or re-apply identity and flags."""
    wanted = f"Running {ts.hostname} {','.join(ts.tags)}"
    return Step(
        "tailscale-up",
        script(
            "umask 077",
            f"install -d -m 0700 {AUTH_KEY_DIR}",
            f"keyfile=$(mktemp {AUTH_KEY_DIR}/tailscale-auth.XXXXXX)",
            "trap 'rm -f \"$keyfile\"' EXIT",
            'cat > "$keyfile"',
            f"identity() {{ tailscale status --json 2>/dev/null | python3 -c {shlex.quote(_IDENTITY)}; }}",
            "before=$(identity || true)",
            f"flags={shlex.quote(up_flags(ts))}",
            'case "$before" in',
            "  Running*)",
            "    # shellcheck disable=SC2086 # flags are several arguments",
            "    tailscale up --reset $flags ;;",
            "  *)",
            "    # shellcheck disable=SC2086",
            '    tailscale up --reset --auth-key="file:$keyfile" $flags ;;',
            "esac",
            "after=$(identity)",
            f'if [ "$after" != {shlex.quote(wanted)} ]; then',
            f"  echo \"tailscale did not converge: have '$after', want '{wanted}'\" >&2; exit 1",
            "fi",
            'if [ "$before" = "$after" ]; then echo "unchanged tailscale $after"; '
            'else echo "changed tailscale $after"; fi',
        ),
        stdin=auth_key,
        secret=True,
    )


def serve_step(ts: TailscaleSettings) -> Step:
    command = "funnel" if ts.funnel else "serve"
    apply = [
        f"tailscale {command} --bg --https={m.https_port} {m.target} >/dev/null" for m in ts.serve
    ]
    return Step(
        "tailscale-serve",
        script(
            f"wanted={shlex.quote(wanted_serve(ts))}",
            f"state() {{ tailscale serve status --json 2>/dev/null | python3 -c {shlex.quote(_SERVE_STATE)}; }}",
            'if [ "$(state)" = "$wanted" ]; then echo "unchanged tailscale serve $wanted"; exit 0; fi',
            "tailscale serve reset",
            *apply,
            "have=$(state)",
            'if [ "$have" != "$wanted" ]; then',
            '  echo "tailscale serve did not converge: have $have, want $wanted" >&2; exit 1',
            "fi",
            'echo "changed tailscale serve $wanted"',
        ),
    )


def tailscale_plan(guest: Guest, auth_key: str) -> list[Step]:
    ts = guest.tailscale
    if ts is None:
        return []
    return [install_step(), up_step(ts, auth_key), serve_step(ts)]
