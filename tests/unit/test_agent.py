"""Tier 1: the device's update agent over the fake host: converge, up to date, every refusal
leaving the live release untouched, rollback, busy, unreachable, and a device off for weeks."""

from __future__ import annotations

import base64
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deploy.agent import REPORT_FILE, STATE_FILE, Report, converge, main
from deploy.desired import canonical, public_pem, publish, release_hash, sign
from deploy.engine import Engine
from deploy.lock import HostLock
from deploy.release import ReleaseSpec
from tests.unit.engine_kit import APP_PASSWORD, REG, Clock, digest, make_engine, spec
from tests.unit.fake_host import FakeHost

KEY = Ed25519PrivateKey.generate()


class Device:
    """The fake host as a device: where the document is published, the agent's state, the
    root-only env directory the push path fills."""

    def __init__(self, host: FakeHost, clock: Clock, tmp_path: Path) -> None:
        self.host, self.clock = host, clock
        self.source = tmp_path / "desired.json"
        self.state_dir = tmp_path / "state"
        self.env_dir = tmp_path / "env"
        self.env_dir.mkdir(mode=0o700)
        self.engine_runs = 0

    def publish(self, version: str, sequence: int, **change: Any) -> bytes:
        release = spec(version, planned=True, **change)
        self.deliver(release)
        data = publish(release, stack="dev", guest="smoker-pi", sequence=sequence, private_key=KEY)
        self.source.write_bytes(data)
        return data

    def deliver(self, release: ReleaseSpec) -> None:
        for name, content in release.env_files.items():
            (self.env_dir / name).write_text(content)

    def engine(self) -> Engine:
        self.engine_runs += 1
        return make_engine(self.host, self.clock)

    def converge(self, pushed_copy: Path | None = None) -> Report:
        self.clock.t += 60  # distinct, ordered release ids
        self.host.steps.clear()
        return converge(
            str(self.source),
            KEY.public_key(),
            self.state_dir,
            self.engine,
            env_dir=self.env_dir,
            guest="smoker-pi",
            clock=self.clock.wall,
            pushed_copy=str(pushed_copy) if pushed_copy else None,
        )

    def report_file(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state_dir / REPORT_FILE).read_text())
        return data


@pytest.fixture
def device(host: FakeHost, clock: Clock, tmp_path: Path) -> Device:
    return Device(host, clock, tmp_path)


@pytest.fixture
def live(device: Device) -> Iterator[str]:
    """Sequence 1 (1.0.0) applied and live."""
    device.publish("1.0.0", 1)
    report = device.converge()
    assert report.outcome == "deployed", report
    assert device.host.current is not None
    yield device.host.current


def test_first_run_deploys_and_reports(device: Device) -> None:
    data = device.publish("1.0.0", 1)
    report = device.converge()
    assert (report.outcome, report.exit_code, report.sequence) == ("deployed", 0, 1)
    assert report.live_release == device.host.current
    assert device.host.containers["backend"].image == digest("backend", "1.0.0")
    assert "lock" in device.host.steps and device.host.ledger()[-1]["outcome"] == "deployed"
    written = device.report_file()
    doc = json.loads(data)["document"]
    assert written["desired"] == {"sequence": 1, "contentHash": doc["contentHash"]}
    assert written["outcome"] == "deployed" and written["liveRelease"] == device.host.current
    assert written["time"] and written["error"] is None
    assert APP_PASSWORD not in (device.state_dir / REPORT_FILE).read_text()
    assert APP_PASSWORD not in (device.state_dir / STATE_FILE).read_text()
    assert (device.state_dir.stat().st_mode & 0o777) == 0o700


def test_an_applied_document_that_verifies_is_up_to_date_without_a_deploy(
    device: Device, live: str
) -> None:
    report = device.converge()
    assert (report.outcome, report.exit_code, report.live_release) == ("up-to-date", 0, live)
    assert "lock" not in device.host.steps and "pull" not in device.host.steps
    assert device.report_file()["outcome"] == "up-to-date"


def test_a_live_release_that_stopped_verifying_is_brought_up_again(
    device: Device, live: str
) -> None:
    device.host.containers.pop("backend")  # e.g. removed by hand
    report = device.converge()
    assert report.outcome == "up-to-date" and "verified again" in report.message
    assert device.host.current == live and "backend" in device.host.containers
    assert device.host.ledger()[-1]["outcome"] == "unchanged"


# ---------------------------------------------------------------------------------------------
# Refusals: the live release stays untouched


def _signed_again(doc: dict[str, Any], rehash: bool = True) -> bytes:
    if rehash:
        doc["contentHash"] = release_hash(doc["release"])
    return sign(doc, KEY)


def tampered_compose(data: bytes) -> bytes:
    envelope = json.loads(data)
    release = envelope["document"]["release"]
    release["compose"] = release["compose"].replace("1.1.0", "6.6.6")
    return canonical(envelope)


def tampered_digest(data: bytes) -> bytes:
    envelope = json.loads(data)
    envelope["document"]["release"]["digests"]["backend"] = f"{REG}/evil@sha256:{'e' * 64}"
    return canonical(envelope)


def tampered_signature(data: bytes) -> bytes:
    envelope = json.loads(data)
    raw = bytearray(base64.b64decode(envelope["signature"]))
    raw[-1] ^= 0x80
    envelope["signature"] = base64.b64encode(bytes(raw)).decode()
    return canonical(envelope)


def wrong_key(data: bytes) -> bytes:
    return sign(json.loads(data)["document"], Ed25519PrivateKey.generate())


def unpinned_image(data: bytes) -> bytes:
    doc = json.loads(data)["document"]
    release = doc["release"]
    pinned = release["digests"]["backend"]
    release["compose"] = release["compose"].replace(pinned, pinned.split("@")[0])
    release["digests"]["backend"] = pinned.split("@")[0]
    return _signed_again(doc)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (tampered_compose, "bad signature"),
        (tampered_digest, "bad signature"),
        (tampered_signature, "bad signature"),
        (wrong_key, "bad signature"),
        (unpinned_image, "unpinned image for service 'backend'"),
        (lambda data: data[:40], "bad JSON"),
    ],
    ids=["compose", "digest", "signature", "wrong-key", "unpinned", "truncated"],
)
def test_a_bad_document_is_refused_and_the_live_release_untouched(
    device: Device, live: str, tamper: Any, message: str
) -> None:
    before = device.host.snapshot()
    device.source.write_bytes(tamper(device.publish("1.1.0", 2)))
    report = device.converge()
    assert (report.outcome, report.exit_code) == ("refused", 1)
    assert report.error is not None and message in report.error
    assert f"staying on release {live}" in report.message
    assert device.host.snapshot() == before and "lock" not in device.host.steps
    assert device.report_file()["outcome"] == "refused"
    # the good document still applies afterwards (a refusal moves no replay guard)
    device.publish("1.1.0", 2)
    assert device.converge().outcome == "deployed"


def test_a_replayed_sequence_is_refused(device: Device, live: str) -> None:
    old = device.source.read_bytes()
    device.publish("1.1.0", 2)
    assert device.converge().outcome == "deployed"
    before = device.host.snapshot()
    device.source.write_bytes(old)  # sequence 1, validly signed, served again
    report = device.converge()
    assert report.outcome == "refused" and "replay: sequence 1 is older than 2" in str(report.error)
    assert device.host.snapshot() == before and "lock" not in device.host.steps


def test_an_env_file_not_delivered_yet_waits_then_applies(device: Device, live: str) -> None:
    before = device.host.snapshot()
    device.publish("1.1.0", 2, password="new-Pa55-word")
    (device.env_dir / "backend.env").write_text("DB_URL=the old one\n")  # not delivered yet
    report = device.converge()
    assert (report.outcome, report.exit_code) == ("waiting-for-secrets", 75)
    assert "backend.env" in str(report.error) and "new-Pa55-word" not in str(report.error)
    assert device.host.snapshot() == before and "lock" not in device.host.steps
    device.deliver(spec("1.1.0", password="new-Pa55-word"))  # the push path delivers it
    assert device.converge().outcome == "deployed"


# ---------------------------------------------------------------------------------------------
# Failures, concurrency, reachability


def test_a_broken_release_is_rolled_back_and_not_retried(device: Device, live: str) -> None:
    before = {name: c.image for name, c in device.host.containers.items()}
    device.publish("1.2.0", 2)  # its backend never becomes healthy
    report = device.converge()
    assert (report.outcome, report.exit_code) == ("rolled-back", 1)
    assert f"Rolled back: release {live} is live and verified" in str(report.error)
    assert device.host.current == live and report.live_release == live
    assert {name: c.image for name, c in device.host.containers.items()} == before
    assert device.report_file()["outcome"] == "rolled-back"
    again = device.converge()  # the same document: reported, not deployed again
    assert again.outcome == "rolled-back" and "not retried" in again.message
    assert "lock" not in device.host.steps
    device.publish("1.1.0", 3)  # a newer publication is applied
    assert device.converge().outcome == "deployed"


def test_a_failure_before_anything_changed_is_retried(device: Device, live: str) -> None:
    device.publish("1.1.0", 2)
    device.host.fail("pull")
    report = device.converge()
    assert report.outcome == "failed" and "Nothing was changed" in str(report.error)
    assert device.host.current == live
    assert device.converge().outcome == "deployed"


def test_a_second_concurrent_run_is_busy(device: Device) -> None:
    device.publish("1.0.0", 1)
    device.state_dir.mkdir(mode=0o700)
    with open(device.state_dir / "agent.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        report = device.converge()
    assert (report.outcome, report.exit_code) == ("busy", 75)
    assert report.message == "another apply is running (pid 4242)"
    assert device.engine_runs == 0 and not device.host.steps
    assert not (device.state_dir / REPORT_FILE).exists()  # the holder's report is not replaced
    assert device.converge().outcome == "deployed"  # once the lock is free


def test_a_held_host_deploy_lock_is_busy(device: Device, live: str) -> None:
    device.publish("1.1.0", 2)
    HostLock(device.host, clock=device.clock.wall).acquire("alice@laptop via cli", "rollback")
    report = device.converge()
    assert (report.outcome, report.exit_code) == ("busy", 75)
    assert "the host is locked: rollback by alice@laptop" in str(report.error)
    assert device.host.current == live


def test_an_unreachable_document_touches_nothing(device: Device, live: str) -> None:
    before = device.host.snapshot()
    device.source.unlink()
    report = device.converge()
    assert (report.outcome, report.exit_code) == ("unreachable", 69)
    assert report.message == f"the desired release is unreachable: staying on release {live}"
    assert device.host.snapshot() == before and "lock" not in device.host.steps


def test_a_pushed_copy_is_applied_when_the_source_cannot_be_fetched(
    device: Device, live: str, tmp_path: Path
) -> None:
    """The push wrote sequence 2 to the device; the publisher's URL does not answer."""
    pushed = tmp_path / "pushed.json"
    pushed.write_bytes(device.publish("1.1.0", 2))
    device.source.unlink()
    report = device.converge(pushed)
    assert (report.outcome, report.sequence) == ("deployed", 2), report
    assert device.host.containers["backend"].image == digest("backend", "1.1.0")
    assert "(the pushed copy; the source: reading " in report.message


def test_the_newer_of_the_source_and_the_pushed_copy_wins(
    device: Device, live: str, tmp_path: Path
) -> None:
    pushed = tmp_path / "pushed.json"
    pushed.write_bytes(device.source.read_bytes())  # sequence 1, already applied
    device.publish("1.1.0", 2)
    report = device.converge(pushed)
    assert (report.outcome, report.sequence) == ("deployed", 2), report
    assert "pushed copy" not in report.message
    # and the other way round: the pushed copy is newer than what the source still serves
    old_source = device.source.read_bytes()
    pushed.write_bytes(device.publish("1.0.0", 3))
    device.source.write_bytes(old_source)
    report = device.converge(pushed)
    assert (report.outcome, report.sequence) == ("deployed", 3), report
    assert device.host.containers["backend"].image == digest("backend", "1.0.0")


def test_a_bad_pushed_copy_never_decides_the_outcome(
    device: Device, live: str, tmp_path: Path
) -> None:
    pushed = tmp_path / "pushed.json"
    pushed.write_bytes(tampered_signature(device.source.read_bytes()))
    assert device.converge(pushed).outcome == "up-to-date"  # the source is fine
    device.source.unlink()
    report = device.converge(pushed)  # nothing usable: the source's failure is the outcome
    assert report.outcome == "unreachable" and "reading " in str(report.error)
    assert device.converge(tmp_path / "never-pushed.json").outcome == "unreachable"


def test_an_https_url_that_does_not_answer_is_unreachable(device: Device, live: str) -> None:
    report = converge(
        "https://127.0.0.1:9/desired.json",
        KEY.public_key(),
        device.state_dir,
        device.engine,
        env_dir=device.env_dir,
        timeout=2,
    )
    assert report.outcome == "unreachable" and "127.0.0.1:9" in str(report.error)


def test_a_plain_http_source_is_refused(device: Device, live: str) -> None:
    report = converge(
        "http://example.test/d.json", KEY.public_key(), device.state_dir, device.engine
    )
    assert report.outcome == "refused" and "https://" in str(report.error)


def test_a_device_off_for_weeks_converges_to_the_newest_in_one_run(
    device: Device, live: str
) -> None:
    device.publish("1.1.0", 2)  # published while the device was off: never fetched
    device.publish("1.1.0", 3, password="rotated-Pa55")
    report = device.converge()
    assert (report.outcome, report.sequence) == ("deployed", 3)
    assert device.host.ledger()[-1]["previous"] == live
    assert len([r for r in device.host.ledger() if r["outcome"] == "deployed"]) == 2
    assert device.host.containers["backend"].image == digest("backend", "1.1.0")
    assert "rotated-Pa55" in device.host.containers["backend"].env


# ---------------------------------------------------------------------------------------------
# The CLI


def test_cli_exit_codes(device: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "release.pub"
    key_file.write_text(public_pem(KEY))
    args = ["--public-key", str(key_file), "--state-dir", str(device.state_dir)]
    args += ["--project", "smart-smoker-device", "--app-dir", str(tmp_path / "app")]
    assert main(["--source", str(tmp_path / "missing.json"), *args]) == 69
    assert "unreachable: the desired release is unreachable: staying on no release" in (
        capsys.readouterr().out
    )
    device.source.write_bytes(b"{}")
    assert main(["--source", str(device.source), *args]) == 1
    key_file.write_text("not a key")
    assert main(["--source", str(device.source), *args]) == 2
    assert "error: --public-key" in capsys.readouterr().err


def test_the_state_dir_holds_no_temporary_files(device: Device, live: str) -> None:
    """Report and state are written to a temporary sibling and renamed over."""
    names = os.listdir(device.state_dir)
    assert sorted(names) == ["agent-report.json", "agent-state.json", "agent.lock"]


def test_an_unreadable_state_file_stops_the_run(device: Device, live: str) -> None:
    (device.state_dir / STATE_FILE).write_text("{not json")
    device.publish("1.1.0", 2)
    report = device.converge()
    assert report.outcome == "failed" and "agent-state.json is unreadable" in str(report.error)
    assert device.host.current == live and "lock" not in device.host.steps
