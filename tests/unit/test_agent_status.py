"""`python -m deploy status` on a guest that runs the update agent: desired, applied and live
release, the agent's last report, and a finding for each thing to act on (over the fake host)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import deploy.engine as engine_module
import layout
from deploy import agent_status, cli
from deploy.record import iso
from deploy.transport import SshTarget
from tests.unit.engine_kit import Clock, fake_host, make_engine, spec
from tests.unit.fake_host import FakeHost

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHbMWXbmZq4rCkHXHnNaV9zHPkmh0Z3FmQ9YV8oL6yGZ"
REPORT = f"{layout.AGENT_STATE_DIR}/agent-report.json"
STATE = f"{layout.AGENT_STATE_DIR}/agent-state.json"
HASH = "3f2a1b4c5d6e" + "0" * 52


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def device(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> FakeHost:
    """The CLI's connection leads to a fake device with one release deployed by the agent."""
    host = fake_host()
    clock.t += 60
    make_engine(host, clock).deploy(spec("1.0.0"))

    @contextlib.contextmanager
    def connect(target: SshTarget) -> Iterator[FakeHost]:
        assert target.host_key == HOST_KEY
        yield host

    monkeypatch.setattr(engine_module, "connect", connect)
    monkeypatch.setattr(engine_module, "Engine", lambda *a, **k: make_engine(host, clock))
    return host


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519"
    path.write_text("KEY")
    return path


def status(key_file: Path, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    argv = ["--guest", "virtual-smoker-device", "--ssh-key", str(key_file)]
    argv += ["--host-key", HOST_KEY, "status", *extra]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def agent_ran(
    host: FakeHost, clock: Clock, outcome: str, age: float = 600, error: str | None = None
) -> None:
    """The agent's files as a run `age` seconds ago left them (sequence 12 applied as the live
    release unless the outcome says otherwise)."""
    live = host.current
    host.files[STATE] = json.dumps(
        {
            "seen": {"sequence": 12, "content_hash": HASH},
            "applied": {
                "sequence": 12,
                "content_hash": HASH,
                "outcome": "deployed",
                "release": live,
            },
            "last": {"sequence": 12, "content_hash": HASH, "outcome": outcome, "release": live},
        }
    )
    host.files[REPORT] = json.dumps(
        {
            "time": iso(clock.wall() - age),
            "outcome": outcome,
            "message": f"sequence 12 ({HASH[:12]}) {outcome}",
            "desired": {"sequence": 12, "contentHash": HASH},
            "liveRelease": live,
            "error": error,
        }
    )


def test_a_guest_without_the_agent_shows_no_agent_section(device: FakeHost, key_file: Path) -> None:
    code, out, _ = status(key_file, "--json")
    assert code == 0 and "agent" not in json.loads(out)


def test_an_installed_agent_without_a_report_says_so(device: FakeHost, key_file: Path) -> None:
    device.files[f"/etc/systemd/system/{layout.AGENT_SERVICE}"] = "[Unit]\n"
    code, out, _ = status(key_file, "--json")
    data = json.loads(out)
    assert code == 0 and data["agent"]["lastReport"] == "no report yet"
    assert data["agent"]["desired"] == "none accepted yet"
    assert data["agent"]["live"] == device.current
    assert not [f for f in data["findings"] if f.startswith("agent:")]


def test_desired_applied_live_and_the_last_report(
    device: FakeHost, clock: Clock, key_file: Path
) -> None:
    agent_ran(device, clock, "deployed")
    code, out, _ = status(key_file, "--json")
    assert code == 0
    data = json.loads(out)
    agent = data["agent"]
    assert agent["desired"] == f"sequence 12 ({HASH[:12]})"
    assert agent["applied"] == f"sequence 12 ({HASH[:12]}) as release {device.current}"
    assert agent["live"] == device.current
    report = agent["lastReport"]
    assert report["outcome"] == "deployed" and report["age"] == "10 min"
    assert not [f for f in data["findings"] if f.startswith("agent:")]
    _code, text, _ = status(key_file)  # the readable form
    assert f"agent.desired: sequence 12 ({HASH[:12]})" in text
    assert "agent.lastReport.outcome: deployed" in text


@pytest.mark.parametrize(
    ("outcome", "error", "finding"),
    [
        ("rolled-back", "backend unhealthy", "failed and was rolled back"),
        ("rollback-failed", "up failed", "rollback"),
        ("failed", "pull failed: no network", "failed before anything changed"),
        ("refused", "bad signature: tampered", "refused the desired release"),
        ("waiting-for-secrets", "env file backend.env is not in", "waits for its env files"),
    ],
)
def test_outcomes_to_act_on_are_findings(
    device: FakeHost, clock: Clock, key_file: Path, outcome: str, error: str, finding: str
) -> None:
    agent_ran(device, clock, outcome, error=error)
    code, out, _ = status(key_file, "--json")
    findings = [f for f in json.loads(out)["findings"] if f.startswith("agent:")]
    assert code == 0 and len(findings) == 1
    assert finding in findings[0] and error in findings[0]
    if outcome == "rollback-failed":
        assert "--guest virtual-smoker-device rollback" in findings[0]


def test_an_old_report_is_a_finding(device: FakeHost, clock: Clock, key_file: Path) -> None:
    agent_ran(device, clock, "up-to-date", age=3 * 86400)
    code, out, _ = status(key_file, "--json")
    findings = [f for f in json.loads(out)["findings"] if f.startswith("agent:")]
    assert code == 0 and len(findings) == 1
    assert "3.0 days old (more than 24 h)" in findings[0]
    assert f"systemctl status {layout.AGENT_TIMER}" in findings[0]
    code, out, _ = status(key_file, "--json", "--agent-max-age", "100")
    assert not [f for f in json.loads(out)["findings"] if f.startswith("agent:")]


def test_a_live_release_the_agent_did_not_apply_is_a_finding(
    device: FakeHost, clock: Clock, key_file: Path
) -> None:
    agent_ran(device, clock, "deployed")
    clock.t += 60
    make_engine(device, clock).deploy(spec("1.1.0"))  # by hand, not by the agent
    _code, out, _ = status(key_file, "--json")
    findings = [f for f in json.loads(out)["findings"] if f.startswith("agent:")]
    assert len(findings) == 1 and "is not the one the agent applied" in findings[0]


def test_an_unreadable_report_is_a_finding_not_a_crash(device: FakeHost, key_file: Path) -> None:
    device.files[REPORT] = "{not json"
    code, out, _ = status(key_file, "--json")
    data: dict[str, Any] = json.loads(out)
    assert code == 0 and data["agent"]["lastReport"] == agent_status.NO_REPORT
    assert any("agent-report.json is not JSON" in f for f in data["findings"])
