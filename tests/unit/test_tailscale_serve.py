"""Tailscale serve of a directory (`tailscale.serveDirectories`) and the device's pull URL.

The publisher (the stack's cloud guest) serves the signed desired-release documents it holds,
`layout.PUBLISHED_RELEASES_DIR`, on the tailnet only; the device's agent fetches
`release_source_url(...)`. The serve step is run here against the testbed's recording
`tailscale` stand-in (outside a guest, under TAILSCALE_STUB_ROOT), which keeps the
`tailscale serve status --json` shape of the real ipn.ServeConfig.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import layout
from config import ConfigError, GuestSpec, StackConfig, TailscaleSettings, parse_config
from rendering.agent import AgentSettings, service_unit
from rendering.files import guest_plan
from rendering.tailscale import (
    release_source_problems,
    release_source_url,
    releases_served,
    serve_step,
    tailscale_plan,
    wanted_serve,
)
from tests.configs import Raw, evolve, parse, set_path, stack_raw

REPO = Path(__file__).resolve().parents[2]
STUB = REPO / "testbed/harness/images/guest/tailscale"
DEV_RAW = stack_raw("dev")
PROD_RAW = stack_raw("prod")
CLOUD = "guests.dev-cloud"
KEY = f"{CLOUD}.tailscale.serveDirectories"
RELEASES = {
    "httpsPort": 9443,
    "path": "/device-releases",
    "directory": layout.PUBLISHED_RELEASES_DIR,
}


def serving(raw: Raw, guest: str = CLOUD, *served: dict[str, object]) -> Raw:
    return set_path(raw, f"{guest}.tailscale.serveDirectories", list(served) or [RELEASES])


def problems_of(raw: Raw, stack: str = "dev") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(*raw, stack)
    return [str(p) for p in caught.value.problems]


# -- config ---------------------------------------------------------------------------------------


def test_a_served_directory_is_parsed_and_its_mount_ends_in_a_slash() -> None:
    cfg = parse(serving(DEV_RAW, CLOUD, {**RELEASES, "path": "/device-releases/"}))
    ts = cfg.guest("dev-cloud").tailscale
    assert ts is not None
    (served,) = ts.serve_directories
    assert (served.https_port, served.path, served.directory) == (
        9443,
        "/device-releases",
        layout.PUBLISHED_RELEASES_DIR,
    )
    assert served.mount == "/device-releases/"
    assert releases_served(ts) == served


def test_only_the_publisher_serves_a_directory() -> None:
    """dev-cloud and prod-cloud serve their devices' desired releases; no other guest serves
    any directory (nothing unless configured)."""
    for stack, raw in (("dev", DEV_RAW), ("prod", stack_raw("prod"))):
        cfg = parse(raw, stack)
        served = {g.name for g in cfg.guests if g.tailscale and g.tailscale.serve_directories}
        assert served == {f"{stack}-cloud"}, served


BAD: list[tuple[str, dict[str, object] | list[dict[str, object]], str, str]] = [
    # (case, the serveDirectories value (one entry or the list), key named, text in the message)
    ("relative-directory", {**RELEASES, "directory": "srv/x"}, f"{KEY}[0].directory", "absolute"),
    ("directory-dotdot", {**RELEASES, "directory": "/srv/../etc"}, f"{KEY}[0].directory", ".."),
    ("directory-slash", {**RELEASES, "directory": "/srv/x/"}, f"{KEY}[0].directory", "trailing"),
    ("directory-root", {**RELEASES, "directory": "/"}, f"{KEY}[0].directory", "absolute"),
    (
        "directory-etc",
        {**RELEASES, "directory": "/etc/smart-smoker"},
        f"{KEY}[0].directory",
        "/etc",
    ),
    ("directory-varlib", {**RELEASES, "directory": "/var/lib/tailscale"}, f"{KEY}[0]", "secrets"),
    ("path-relative", {**RELEASES, "path": "device-releases"}, f"{KEY}[0].path", "start with '/'"),
    ("path-dotdot", {**RELEASES, "path": "/a/../b"}, f"{KEY}[0].path", "normalized"),
    ("path-space", {**RELEASES, "path": "/a b"}, f"{KEY}[0].path", "normalized"),
    ("port-zero", {**RELEASES, "httpsPort": 0}, f"{KEY}[0].httpsPort", "1..65535"),
    ("port-of-a-mapping", {**RELEASES, "httpsPort": 443}, f"{KEY}[0].httpsPort", "own"),
    ("missing-directory", {"httpsPort": 9443, "path": "/x"}, f"{KEY}[0].directory", "required"),
    ("unknown-key", {**RELEASES, "funnel": True}, f"{KEY}[0].funnel", ""),
    ("same-place", [RELEASES, {**RELEASES, "directory": "/srv/other"}], KEY, "same httpsPort"),
]


@pytest.mark.parametrize(("value", "key", "text"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_served_directory_names_the_key_and_the_fix(
    value: dict[str, object] | list[dict[str, object]], key: str, text: str
) -> None:
    served = value if isinstance(value, list) else [value]
    problems = problems_of(set_path(DEV_RAW, KEY, served))
    named = [p for p in problems if f"smoker-infra:{key}" in p]
    assert named, problems
    assert any(text in p and "Fix:" in p for p in named), named


def test_on_a_funneled_guest_the_directory_is_never_on_a_funneled_port() -> None:
    prod_key = "guests.prod-cloud.tailscale.serveDirectories"
    for port in (443, 8443):
        problems = problems_of(
            set_path(PROD_RAW, prod_key, [{**RELEASES, "httpsPort": port}]), "prod"
        )
        assert any(f"{prod_key}[0].httpsPort = {port}" in p and "funnel" in p for p in problems)
    # a port of its own, even one funnel could use, is served on the tailnet only
    cfg = parse(set_path(PROD_RAW, prod_key, [{**RELEASES, "httpsPort": 10000}]), "prod")
    ts = cfg.guest("prod-cloud").tailscale
    assert ts is not None and ts.funnel
    assert [10000, "/device-releases/", "path", layout.PUBLISHED_RELEASES_DIR, False] in json.loads(
        wanted_serve(ts)
    )


# -- rendering ------------------------------------------------------------------------------------


def _all_guests() -> list[tuple[StackConfig, GuestSpec]]:
    return [(cfg, g) for cfg in (parse(DEV_RAW), parse(PROD_RAW, "prod")) for g in cfg.guests]


def test_a_guest_without_directories_renders_the_serve_step_it_always_had() -> None:
    # the golden files pin the text; here: none of it mentions what directories add
    for _cfg, guest in _all_guests():
        if guest.tailscale is None or guest.tailscale.serve_directories:
            continue
        script = serve_step(guest.tailscale).script
        assert "--set-path" not in script and '"path"' not in script and "install -d" not in script


def test_the_serve_step_serves_the_directory_on_the_tailnet_only() -> None:
    cfg = parse(serving(PROD_RAW, "guests.prod-cloud"), "prod")
    guest = cfg.guest("prod-cloud")
    assert guest.tailscale is not None and guest.tailscale.funnel
    script = serve_step(guest.tailscale).script
    assert (
        f"tailscale serve --bg --https=9443 --set-path=/device-releases "
        f"{layout.PUBLISHED_RELEASES_DIR} >/dev/null" in script
    )
    assert f"install -d -m 0755 {layout.PUBLISHED_RELEASES_DIR}" in script
    # the mappings keep their funnel; the directory's line is `serve`, never `funnel`
    assert "tailscale funnel --bg --https=443 http://127.0.0.1:80" in script
    assert not [line for line in script.splitlines() if "funnel" in line and "--set-path" in line]
    assert json.loads(wanted_serve(guest.tailscale)) == [
        [443, "/", "proxy", "http://127.0.0.1:80", True],
        [8443, "/", "proxy", "http://127.0.0.1:3001", True],
        [9443, "/device-releases/", "path", layout.PUBLISHED_RELEASES_DIR, False],
    ]
    names = [s.name for s in guest_plan(cfg, guest)]
    assert names[-3:] == ["tailscale-install", "tailscale-up", "tailscale-serve"]


# -- the serve step against the recording stand-in ------------------------------------------------


@pytest.fixture
def stub(tmp_path: Path) -> Callable[[str], subprocess.CompletedProcess[str]]:
    """Run a script with the testbed's `tailscale` stand-in on PATH, its state under tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # the step's `python3` and the stand-in's: this interpreter (no shim to start each time)
    (bin_dir / "python3").symlink_to(sys.executable)
    (bin_dir / "tailscale").write_text(
        f'#!/bin/sh\nexec {sys.executable} {STUB} "$@"\n', encoding="utf-8"
    )
    (bin_dir / "tailscale").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "TAILSCALE_STUB_ROOT": str(tmp_path / "root"),
    }
    subprocess.run(
        ["tailscale", "up", "--auth-key=k", "--hostname=pub"],
        env=env,
        stdin=subprocess.DEVNULL,
        check=True,
        timeout=30,
    )

    def run(script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", script],
            env=env,
            stdin=subprocess.DEVNULL,  # the stand-in drains stdin (an open pipe: 2 s per call)
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def _serving(ts: TailscaleSettings, directory: Path) -> TailscaleSettings:
    served = ts.serve_directories[0] if ts.serve_directories else None
    assert served is not None
    return evolve(ts, serve_directories=(evolve(served, directory=str(directory)),))


def test_the_serve_step_converges_and_records_a_directory_handler(
    stub: Callable[[str], subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    guest = parse(serving(DEV_RAW)).guest("dev-cloud")
    assert guest.tailscale is not None
    directory = tmp_path / "srv" / "device-releases"  # does not exist yet: the step makes it
    ts = _serving(guest.tailscale, directory)
    step = serve_step(ts)

    first = stub(step.script)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("changed tailscale serve")
    assert directory.is_dir()
    status = json.loads(stub("tailscale serve status --json").stdout)
    assert status["Web"]["pub.stub.ts.net:9443"]["Handlers"] == {
        "/device-releases/": {"Path": str(directory)}
    }
    assert status["Web"]["pub.stub.ts.net:443"]["Handlers"] == {
        "/": {"Proxy": "http://127.0.0.1:80"}
    }
    assert "AllowFunnel" not in status

    second = stub(step.script)
    assert second.returncode == 0 and second.stdout.startswith("unchanged tailscale serve")

    # a handler changed by hand (a proxy where the directory was) is put back
    stub("tailscale serve --bg --https=9443 --set-path=/device-releases http://127.0.0.1:81")
    third = stub(step.script)
    assert third.returncode == 0 and third.stdout.startswith("changed"), third.stderr
    assert stub(step.script).stdout.startswith("unchanged")

    # and without the directory the guest's serve ends as it was before directories existed
    plain = evolve(ts, serve_directories=())
    back = stub(serve_step(plain).script)
    assert back.returncode == 0 and back.stdout.startswith("changed"), back.stderr
    status = json.loads(stub("tailscale serve status --json").stdout)
    assert "pub.stub.ts.net:9443" not in status["Web"]
    assert stub(serve_step(plain).script).stdout.startswith("unchanged")


def test_the_stand_in_refuses_a_path_that_does_not_exist_like_tailscale(
    stub: Callable[[str], subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere"
    result = stub(f"tailscale serve --bg --https=9443 --set-path=/x {missing}")
    assert result.returncode == 1 and "invalid path" in result.stderr
    file = tmp_path / "one.json"
    file.write_text("{}", encoding="utf-8")
    stub(f"tailscale serve --bg --https=9443 --set-path=/one.json {file}")
    status = json.loads(stub("tailscale serve status --json").stdout)
    # a file keeps its mount point as given; a directory's gets a trailing '/'
    assert status["Web"]["pub.stub.ts.net:9443"]["Handlers"] == {"/one.json": {"Path": str(file)}}
    stub("tailscale serve --https=9443 --set-path=/one.json off")
    assert json.loads(stub("tailscale serve status --json").stdout) == {}


# -- the device's source URL ----------------------------------------------------------------------


def test_the_source_url_is_the_published_document_on_the_publishers_tailnet_name() -> None:
    cfg = parse(serving(DEV_RAW))
    cloud = cfg.guest("dev-cloud")
    url = release_source_url(cfg.stack, cloud, cfg.tailnet, "smoker-pi")
    assert (
        url == "https://smart-smoker-dev-cloud.tail74646.ts.net:9443/device-releases/smoker-pi.json"
    )
    assert layout.published_release("smoker-pi").endswith("/smoker-pi.json")


def test_the_source_url_leaves_out_port_443_and_follows_the_configured_path() -> None:
    cfg = parse(
        set_path(
            set_path(
                DEV_RAW,
                f"{CLOUD}.tailscale.serve",
                [{"httpsPort": 8443, "target": "http://127.0.0.1:3001"}],
            ),
            KEY,
            [{**RELEASES, "httpsPort": 443, "path": "/releases/"}],
        )
    )
    url = release_source_url(cfg.stack, cfg.guest("dev-cloud"), cfg.tailnet, "smoker-pi")
    assert url == "https://smart-smoker-dev-cloud.tail74646.ts.net/releases/smoker-pi.json"


def test_a_publisher_off_the_tailnet_is_a_config_error_naming_the_key_and_the_fix() -> None:
    cfg = parse(set_path(DEV_RAW, f"{CLOUD}.tailscale", None))
    cloud = cfg.guest("dev-cloud")
    with pytest.raises(ConfigError) as caught:
        release_source_url(cfg.stack, cloud, cfg.tailnet, "smoker-pi")
    (only,) = caught.value.problems
    assert only.key == f"{CLOUD}.tailscale"
    assert "smoker-pi" in only.what and "not on the tailnet" in only.what
    assert "serveDirectories" in only.fix and layout.PUBLISHED_RELEASES_DIR in only.fix
    assert "stack 'dev'" in str(caught.value)


def test_a_publisher_that_does_not_serve_the_releases_is_a_config_error() -> None:
    cfg = parse(serving(DEV_RAW, CLOUD, {**RELEASES, "directory": "/srv/other"}))
    problems = release_source_problems(cfg.guest("dev-cloud"), cfg.tailnet, "smoker-pi")
    assert [p.key for p in problems] == [KEY]
    assert layout.PUBLISHED_RELEASES_DIR in problems[0].what
    assert "httpsPort: 9443" in problems[0].fix
    # nothing is wrong once it serves them
    assert (
        release_source_problems(parse(serving(DEV_RAW)).guest("dev-cloud"), "t.ts.net", "d") == []
    )


def test_a_stack_without_a_tailnet_name_cannot_give_the_device_a_url() -> None:
    cfg = parse(serving(DEV_RAW))
    problems = release_source_problems(cfg.guest("dev-cloud"), "", "smoker-pi")
    assert [p.key for p in problems] == ["tailscale.tailnet"]
    assert "tail74646.ts.net" in problems[0].fix


def test_the_plan_of_a_guest_serving_releases_still_ends_with_the_tailscale_steps() -> None:
    guest = parse(serving(DEV_RAW)).guest("dev-cloud")
    assert [s.name for s in tailscale_plan(guest, "k")] == [
        "tailscale-install",
        "tailscale-up",
        "tailscale-serve",
    ]


def test_the_agent_unit_carries_the_source_url() -> None:
    cfg = parse(serving(DEV_RAW))
    url = release_source_url(cfg.stack, cfg.guest("dev-cloud"), cfg.tailnet, "smoker-pi")
    settings = AgentSettings(
        stack=cfg.stack,
        guest="smoker-pi",
        project="smart-smoker-device",
        app_dir="/opt/smart-smoker-device",
        source=url,
    )
    assert f" --source {url} " in service_unit(settings)
