"""Tailscale on a guest: install, join with the auth key from stdin, converge identity and serve.

Hostname, tags and accept-dns are re-applied with `tailscale up --reset` on every change, so a
rename or a tag change converges (the old setup only ran `up` on a disconnected node). Serve and
funnel mappings are compared with `tailscale serve status --json` and rebuilt only when they
differ, so they end exactly as configured. A guest that also serves directories
(`serveDirectories`: `tailscale serve --set-path=<path> <directory>`, tailnet only) compares
every handler with its mount point and kind, so a proxy and a directory never look alike; the
step of a guest without directories is the same as before they existed.
"""

from __future__ import annotations

import json
import shlex

import layout
from config import ConfigError, Guest, GuestSpec, Problem, ServeDirectory, TailscaleSettings
from config.errors import REQUIRED, problem
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

# The same for a guest that serves directories: every Web handler as
# [https_port, mount, kind, value, funnel], kind "proxy" (value: the target), "path" (a file or
# directory tailscaled serves) or "other" (text, redirect: never wanted, so it is rebuilt).
_SERVE_STATE_HANDLERS = """\
import json, sys
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


RELEASES_PORT_EXAMPLE = 9443
RELEASES_SERVE_EXAMPLE = (
    f"{{httpsPort: {RELEASES_PORT_EXAMPLE}, path: /device-releases, "
    f"directory: {layout.PUBLISHED_RELEASES_DIR}}}"
)


def release_source_problems(publisher: GuestSpec, tailnet: str, device: str) -> list[Problem]:
    """What stops the device `device` from pulling its desired release from the publisher
    `publisher` (the stack's cloud guest) over the tailnet: the publisher must be on the
    tailnet, the tailnet's DNS name known (the https certificate is for the full name), and
    the publisher must serve `layout.PUBLISHED_RELEASES_DIR` (`tailscale.serveDirectories`)."""
    key = f"guests.{publisher.name}.tailscale"
    why = f"the device {device} pulls its desired release from {publisher.name} over the tailnet"
    ts = publisher.tailscale
    if ts is None:
        return [
            problem(
                key,
                REQUIRED,
                f"{why}, but {publisher.name} is not on the tailnet",
                f"give guests.{publisher.name} a tailscale section (hostname, tags) with "
                f"serveDirectories: [{RELEASES_SERVE_EXAMPLE}]",
            )
        ]
    problems = []
    if not tailnet:
        problems.append(
            problem(
                "tailscale.tailnet",
                REQUIRED,
                f"{why}: its https URL needs the tailnet's DNS name",
                "set tailscale.tailnet to the tailnet's DNS name, e.g. tail74646.ts.net",
            )
        )
    if releases_served(ts) is None:
        problems.append(
            problem(
                f"{key}.serveDirectories",
                [d.directory for d in ts.serve_directories],
                f"{why}, but {publisher.name} does not serve {layout.PUBLISHED_RELEASES_DIR}",
                f"add {RELEASES_SERVE_EXAMPLE} to guests.{publisher.name}.tailscale."
                "serveDirectories",
            )
        )
    return problems


def releases_served(ts: TailscaleSettings) -> ServeDirectory | None:
    """The publisher's `serveDirectories` entry that serves the published device releases."""
    return next(
        (d for d in ts.serve_directories if d.directory == layout.PUBLISHED_RELEASES_DIR), None
    )


def release_source_url(stack: str, publisher: GuestSpec, tailnet: str, device: str) -> str:
    """The https URL the device `device` fetches its desired release from (the agent's
    `--source`): `https://<publisher's tailnet name>[:port]<path>/<device>.json`, the file the
    DesiredRelease writes (`layout.published_release`) as the publisher serves it on the
    tailnet. A `ConfigError` naming the keys and the fix when the publisher cannot serve it."""
    problems = release_source_problems(publisher, tailnet, device)
    if problems:
        raise ConfigError(stack, problems)
    assert publisher.tailscale is not None
    served = releases_served(publisher.tailscale)
    assert served is not None
    port = "" if served.https_port == 443 else f":{served.https_port}"
    name = layout.published_release(device).removeprefix(layout.PUBLISHED_RELEASES_DIR + "/")
    return f"https://{publisher.tailscale.hostname}.{tailnet}{port}{served.mount}{name}"


def up_flags(ts: TailscaleSettings) -> str:
    return " ".join(
        [
            f"--hostname={ts.hostname}",
            f"--advertise-tags={','.join(ts.tags)}",
            f"--accept-dns={'true' if ts.accept_dns else 'false'}",
        ]
    )


def wanted_serve(ts: TailscaleSettings) -> str:
    """What the serve step's state parser prints once serve is as configured."""
    if not ts.serve_directories:
        return json.dumps(sorted([m.https_port, m.target, ts.funnel] for m in ts.serve))
    handlers = [[m.https_port, "/", "proxy", m.target, ts.funnel] for m in ts.serve]
    handlers += [[d.https_port, d.mount, "path", d.directory, False] for d in ts.serve_directories]
    return json.dumps(sorted(handlers))


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
    """Serve (or funnel) the mappings, and serve the directories on the tailnet only."""
    command = "funnel" if ts.funnel else "serve"
    apply = [
        f"tailscale {command} --bg --https={m.https_port} {m.target} >/dev/null" for m in ts.serve
    ]
    # `tailscale serve` (never funnel) for a directory: tailscaled refuses a path that does not
    # exist, so each is created first (0755: what is in it is served anyway).
    directories = [
        f"[ -d {shlex.quote(d.directory)} ] || install -d -m 0755 {shlex.quote(d.directory)}"
        for d in ts.serve_directories
    ]
    apply += [
        f"tailscale serve --bg --https={d.https_port} --set-path={shlex.quote(d.path)} "
        f"{shlex.quote(d.directory)} >/dev/null"
        for d in ts.serve_directories
    ]
    parser = _SERVE_STATE_HANDLERS if ts.serve_directories else _SERVE_STATE
    return Step(
        "tailscale-serve",
        script(
            f"wanted={shlex.quote(wanted_serve(ts))}",
            f"state() {{ tailscale serve status --json 2>/dev/null | python3 -c {shlex.quote(parser)}; }}",
            *directories,
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
