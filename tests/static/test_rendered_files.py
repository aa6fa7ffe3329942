"""Tier 2: every rendered host file checked by the tool that will read it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from config import parse_config
from rendering import backup
from rendering.files import host_files
from tests.configs import parse, stack_raw
from tests.tools import tool

FILES = {
    f"{stack}/{path}": text
    for stack in ("host", "dev", "prod")
    for path, text in host_files(parse_config(*stack_raw(stack), stack)).items()
}


def by_suffix(*suffixes: str) -> list[str]:
    return sorted(p for p in FILES if p.endswith(suffixes))


SCRIPTS = sorted(set(by_suffix(".sh")) | {p for p, t in FILES.items() if t.startswith("#!/bin/")})


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_every_guest_and_the_node_have_files() -> None:
    assert (
        "host/proxmox-node/nat-apply.sh" in FILES and "host/proxmox-node/vendor-data.yaml" in FILES
    )
    assert not [p for p in FILES if "/proxmox-node/" in p and not p.startswith("host/")]
    for guest in (
        "host/github-runner",
        "dev/dev-cloud",
        "dev/virtual-smoker-device",
        "prod/prod-cloud",
        "prod/smoker",
    ):
        assert f"{guest}/files/etc/ssh/sshd_config" in FILES
        assert any(p.startswith(f"{guest}/steps/") for p in FILES)


@pytest.mark.parametrize("path", SCRIPTS)
def test_scripts_pass_shellcheck(path: str, tmp_path: Path) -> None:
    script = tmp_path / Path(path).name
    script.write_text(FILES[path])
    # step scripts run as `sh -c` over SSH; tools carry their own shebang
    shell = [] if FILES[path].startswith("#!") else ["--shell=sh"]
    result = run([tool("shellcheck"), *shell, "--severity=style", str(script)])
    assert result.returncode == 0, result.stdout + result.stderr


PROGRAMS = sorted((Path(backup.__file__).parent).glob("*.sh"))


def test_the_shell_programs_are_found() -> None:
    assert {p.name for p in PROGRAMS} >= {"backup.sh", "under_lock.sh"}


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_shell_programs_pass_shellcheck_as_files(program: Path) -> None:
    """The verbatim programs next to their renderers, checked as they are in the repository
    (their values come from a prologue as UPPER_CASE variables, which shellcheck accepts)."""
    result = run([tool("shellcheck"), "--severity=style", str(program)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", by_suffix("/sshd_config"))
def test_sshd_config_passes_sshd_t(path: str, tmp_path: Path) -> None:
    config, host_key = tmp_path / "sshd_config", tmp_path / "host_key"
    config.write_text(FILES[path])
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd -t wants its privilege-separation directory
    result = run([tool("sshd"), "-t", "-f", str(config), "-o", f"HostKey={host_key}"])
    assert result.returncode == 0, result.stderr
    broken = tmp_path / "broken"
    broken.write_text(FILES[path] + "PermitRootLogin maybe\n")
    assert run([tool("sshd"), "-t", "-f", str(broken), "-o", f"HostKey={host_key}"]).returncode


@pytest.mark.parametrize("path", by_suffix("/jail.local"))
def test_jail_passes_fail2ban_client_t(path: str, tmp_path: Path) -> None:
    config = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", config)
    (config / "jail.local").write_text(FILES[path])
    result = run([tool("fail2ban-client"), "-c", str(config), "-t"])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", by_suffix("/logrotate.d/smart-smoker"))
def test_logrotate_config_parses(path: str, tmp_path: Path) -> None:
    config = tmp_path / "smart-smoker"
    config.write_text(FILES[path])
    result = run([tool("logrotate"), "-d", str(config)])
    assert result.returncode == 0 and "error" not in result.stderr.lower(), result.stderr


@pytest.mark.parametrize("path", by_suffix("/daemon.json"))
def test_daemon_json_parses(path: str) -> None:
    config = json.loads(FILES[path])
    if path.startswith("prod/smoker/"):  # the physical smoker keeps Docker's runc (no crun)
        assert "default-runtime" not in config and "runtimes" not in config
    else:
        assert config["default-runtime"] == "crun"


@pytest.mark.parametrize("path", by_suffix(".service", ".timer"))
def test_units_pass_systemd_analyze_verify(path: str, tmp_path: Path) -> None:
    # verify also checks that each Exec* program exists: point those this machine lacks at a
    # temp copy, the rendered file when the guest gets one (else a stub: a downloaded release's)
    guest_dir = path.split("/files/")[0]
    units = [p for p in by_suffix(".service", ".timer") if p.startswith(guest_dir)]
    programs = {
        program
        for unit_path in units
        for program in re.findall(r"^Exec\w*=[-+!@:]*(/\S+)", FILES[unit_path], re.M)
        if not Path(program).exists()
    }
    local: dict[str, Path] = {}
    for number, program in enumerate(sorted(programs)):
        local[program] = tmp_path / f"program-{number}"
        local[program].write_text(FILES.get(f"{guest_dir}/files{program}", "#!/bin/sh\n"))
        local[program].chmod(0o755)
    for unit_path in units:  # a timer needs its service next to it
        text = FILES[unit_path]
        for program, copy in local.items():
            text = text.replace(program, str(copy))
        (tmp_path / Path(unit_path).name).write_text(text)
    unit = tmp_path / Path(path).name
    result = run([tool("systemd-analyze"), "verify", "--man=no", str(unit)])
    # verify also reports unrelated units of this machine; only ours must be clean
    ours = [line for line in result.stderr.splitlines() if unit.name in line]
    assert result.returncode == 0 and not ours, result.stderr


@pytest.mark.parametrize("path", by_suffix("vendor-data.yaml"))
def test_vendor_data_is_cloud_config(path: str) -> None:
    text = FILES[path]
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    assert "qemu-guest-agent" in data["packages"]
    assert ["systemctl", "enable", "--now", "qemu-guest-agent"] in data["runcmd"]


@pytest.mark.parametrize("path", by_suffix("ufw-rules", "authorized_keys", "sysctl-nat.conf"))
def test_plain_lists_have_no_stray_lines(path: str) -> None:
    lines = [line for line in FILES[path].splitlines() if line and not line.startswith("#")]
    assert lines and all(line == line.strip() for line in lines)


@pytest.mark.parametrize("path", by_suffix("compose.yaml"))
def test_compose_projects_pass_docker_compose_config(path: str, tmp_path: Path) -> None:
    text = FILES[path]
    for env_file in ("/etc/smart-smoker/backend.env", "/etc/smart-smoker/mongo.env"):
        local = tmp_path / Path(env_file).name
        local.write_text("PLACEHOLDER=1\n")
        text = text.replace(env_file, str(local))
    compose = tmp_path / "compose.yaml"
    compose.write_text(text)
    result = run([tool("docker-compose"), "-f", str(compose), "config", "-q"])
    assert result.returncode == 0, result.stderr
    project = yaml.safe_load(FILES[path])
    for service in project["services"].values():
        for port in service.get("ports", []):
            if project["name"] not in ("smart-smoker-device", "smoker-device"):  # the devices
                assert port.startswith("127.0.0.1:"), f"{port} is not loopback-only"
        if not project["name"].endswith("-proxy"):  # the engine asks the proxy itself
            assert service["healthcheck"]["interval"] == "30s"


# The physical smoker's other shapes: arm64, a stand-in serial node, the kiosk enabled.
KIOSK = "benjr70/smart-smoker-electron-shell:v1.0.0@sha256:" + "ab" * 32


def _host_variant(arch: str) -> str:
    from rendering.app import compose_file
    from tests.configs import set_path

    raw = set_path(stack_raw("prod"), "guests.smoker.arch", arch)
    raw = set_path(
        raw,
        "guests.smoker.device",
        {
            "serialDevice": "/dev/smoker-test-serial",
            "kiosk": {"enabled": True, "image": KIOSK},
        },
    )
    cfg = parse(raw, "prod")
    return compose_file(cfg, cfg.guest("smoker"))


@pytest.mark.parametrize("arch", ["armhf", "arm64"])
def test_the_smokers_compose_with_the_kiosk_passes_docker_compose_config(
    arch: str, tmp_path: Path
) -> None:
    text = _host_variant(arch)
    compose = tmp_path / "compose.yaml"
    compose.write_text(text)
    result = run([tool("docker-compose"), "-f", str(compose), "config", "-q"])
    assert result.returncode == 0, result.stderr
    project = yaml.safe_load(text)
    services = project["services"]
    assert project["name"] == "smoker-device" and list(services) == [
        "device-service",
        "smoker-ui",
        "electron_shell",
    ]
    platform = {"armhf": "linux/arm/v7", "arm64": "linux/arm64"}[arch]
    assert {s["platform"] for s in services.values()} == {platform}
    assert services["device-service"]["devices"] == ["/dev/smoker-test-serial:/dev/ttyS0"]
    assert services["electron_shell"]["image"] == KIOSK
    assert services["electron_shell"]["healthcheck"]["start_period"] == "60s"


# Every character the config accepts in an env-file secret (printable ASCII but $ " ' ` \ #,
# no edge spaces), and values Compose would change: refused by the config, shown changed here.
ENV_SAFE_SECRET = "A1b2!%&()*+,-./:;<=>?@[]^_{|}~ inner space"
MANGLED = {"dollar": "a$HOME", "hash": "a #b", "edges": " a ", "quoted": '"q"', "single": "'q'"}


def _compose_environment(tmp_path: Path, env_files: dict[str, str], compose: str) -> dict:
    for name, text in env_files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "compose.yaml").write_text(compose)
    result = run(
        [
            tool("docker-compose"),
            *("-f", str(tmp_path / "compose.yaml"), "--profile", "data"),  # MongoDB's profile
            *("config", "--format", "json"),
        ]
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    return {name: service.get("environment", {}) for name, service in services.items()}


def test_accepted_secrets_reach_the_services_intact_through_compose(tmp_path: Path) -> None:
    from config import ConfigError
    from rendering import app
    from tests.configs import set_path

    raw = stack_raw("dev")
    for key in ("mongoRootPassword", "mongoAppPassword", "vapidPrivateKey"):
        raw = set_path(raw, key, f"{key}-{ENV_SAFE_SECRET}", secret=True)
    cfg = parse(raw, "dev")  # accepted
    guest = cfg.guest("dev-cloud")
    s = cfg.secrets
    assert s.mongo_root_password and s.mongo_app_password and s.vapid_private_key
    secrets = app.AppSecrets(
        mongo_root_password=s.mongo_root_password.reveal(),
        mongo_app_password=s.mongo_app_password.reveal(),
        vapid_private_key=s.vapid_private_key.reveal(),
    )
    env = _compose_environment(
        tmp_path, app.release_env_files(cfg, guest, secrets), app.compose_file(cfg, guest)
    )
    assert env["mongo"]["MONGO_INITDB_ROOT_PASSWORD"] == secrets.mongo_root_password
    assert env["backend"]["VAPID_PRIVATE_KEY"] == secrets.vapid_private_key
    assert env["backend"]["DB_URL"] == app.database_url(secrets.mongo_app_password)

    # what the config refuses is what Compose would change
    lines = "".join(f"{name.upper()}={value}\n" for name, value in MANGLED.items())
    compose = "services:\n  probe:\n    image: busybox\n    env_file: [probe.env]\n"
    seen = _compose_environment(tmp_path, {"probe.env": lines}, compose)["probe"]
    for name, value in MANGLED.items():
        assert seen[name.upper()] != value, f"Compose keeps {value!r}: no need to refuse it"
        with pytest.raises(ConfigError, match="Compose env file"):
            parse(set_path(stack_raw("dev"), "mongoRootPassword", value + "-long-enough-x", True))
