"""The cloud guests' long-lived reverse proxy: nginx on the loopback ports Tailscale serve targets.

Releases come and go behind it (docs/safe-deploy.md, "Cutover"): the deploy engine writes
`upstreams.conf` (which release's containers take traffic) and reloads nginx, whose old workers
finish their requests while new connections go to the new release. This module renders what
does not change with releases: the proxy's Compose file and `nginx.conf`. The engine starts the
proxy (`deploy/cutover.py`): on a guest that still runs a release from before the proxy, the
old release's containers must first give up the ports.
"""

from __future__ import annotations

import layout
from config import Guest, StackConfig
from rendering.app import PROXY_ROUTES, project_name
from rendering.plan import Step, file_step

STOP_GRACE_SECONDS = 10  # `docker stop -t`: the old release's own graceful shutdown
# The proxy's worker stays until its last connection closes; give up only well after the
# engine has stopped the old release (whose shutdown closes its WebSockets properly).
SHUTDOWN_MARGIN_SECONDS = 30


def proxy_compose_path(cfg: StackConfig) -> str:
    return f"{layout.proxy_dir(cfg.baseline.app_dir)}/{layout.COMPOSE_FILE}"


def proxy_compose(cfg: StackConfig, guest: Guest) -> str:
    project = project_name(cfg, guest)
    ports = [f"127.0.0.1:{port}:{port}" for port in (*PROXY_ROUTES, layout.PROXY_STATUS_PORT)]
    conf = f"{layout.PROXY_MOUNT}/{layout.PROXY_CONF}"
    lines = [
        "# Managed by smoker-infra: the guest's reverse proxy; it outlives releases.",
        "# Started and reloaded by the deploy engine (python -m deploy status shows what it serves).",
        f"name: {layout.proxy_project(project)}",
        "services:",
        f"  {layout.PROXY_SERVICE}:",
        f"    image: {cfg.app.proxy.image}",
        "    restart: unless-stopped",
        f'    command: ["nginx", "-c", "{conf}", "-g", "daemon off;"]',
        "    stop_signal: SIGQUIT  # graceful: finish the requests in flight",
        "    ports:",
        *(f'      - "{port}"' for port in ports),
        "    volumes:",
        f"      - {layout.proxy_conf_dir(cfg.baseline.app_dir)}:{layout.PROXY_MOUNT}:ro",
        "    networks: [data, edge]",
        "    logging:",
        "      driver: json-file",
        '      options: {max-size: "10m", max-file: "3"}',
        "networks:",
        f"  data: {{name: {layout.data_network(project)}, external: true}}",
        f"  edge: {{name: {layout.edge_network(project)}, external: true}}",
    ]
    return "\n".join(lines) + "\n"


def nginx_conf(cfg: StackConfig) -> str:
    """The static part; the upstream blocks and `$smoker_release` come from upstreams.conf."""
    shutdown = cfg.app.deploy.drain_seconds + STOP_GRACE_SECONDS + SHUTDOWN_MARGIN_SECONDS
    servers = "\n".join(
        f"    server {{\n"
        f"        listen {port};\n"
        f"        location / {{ proxy_pass http://{layout.upstream_name(service)}; }}\n"
        f"    }}"
        for port, (service, _) in PROXY_ROUTES.items()
    )
    return f"""\
# Managed by smoker-infra: the reverse proxy in front of the live release (docs/safe-deploy.md).
user nginx;
worker_processes 2;
pid /run/nginx.pid;
error_log stderr notice;
# After a reload the old workers finish their connections; a WebSocket to the old release ends
# when the engine stops that release (drainSeconds + its own graceful stop), well before this.
worker_shutdown_timeout {shutdown}s;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    server_tokens off;
    # WebSocket (socket.io): pass the upgrade on; plain requests keep Connection empty.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ""      "";
    }}
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $http_x_forwarded_proto;
    proxy_connect_timeout 5s;
    proxy_read_timeout 1h;  # a quiet WebSocket stays open (socket.io pings every 25 s)
    proxy_send_timeout 1h;
    proxy_buffering off;
    client_max_body_size 20m;

    include {layout.PROXY_MOUNT}/{layout.PROXY_UPSTREAMS};

{servers}
    server {{
        listen {layout.PROXY_STATUS_PORT};
        location = /release {{ return 200 "$smoker_release\\n"; }}
        location / {{ return 404; }}
    }}
}}
"""


def proxy_plan(cfg: StackConfig, guest: Guest) -> list[Step]:
    """The proxy's files (the engine starts it and owns upstreams.conf)."""
    if guest.kind != "lxc":
        return []
    conf_dir = layout.proxy_conf_dir(cfg.baseline.app_dir)
    return [
        file_step(
            "proxy-compose",
            proxy_compose_path(cfg),
            proxy_compose(cfg, guest),
            mode="0644",
            validate='docker compose -f "$new" config -q',
        ),
        file_step("proxy-nginx-conf", f"{conf_dir}/{layout.PROXY_CONF}", nginx_conf(cfg)),
    ]
