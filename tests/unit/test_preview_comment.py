"""The PR comment of image changes, rendered from recorded `pulumi preview --json` documents
(tests/fixtures/preview/images-*.json: nightly's backend moved on dev, a device release recorded
before digests were planned, prod moved from v1.0.0 to v1.1.0)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tools.preview_comment import MARKER, comment, main, only_release_images, rows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "preview"


def preview(stack: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"images-{stack}.json").read_text())
    return loaded


def test_each_service_shows_its_digest_change_or_unchanged() -> None:
    found = {(g, s): change for _, g, s, change in rows("dev", preview("dev"))}
    assert found[("dev-cloud", "backend")] == (
        "`nightly@sha256:da9cbefb8e27` → `nightly@sha256:999999999999`"
    )
    assert found[("dev-cloud", "frontend")] == "unchanged `nightly@sha256:7d076a6e0a84`"
    # a release recorded before the preview planned digests carried the tag only
    assert found[("virtual-smoker-device", "smokerUi")].startswith("`nightly` (tag only) → ")
    prod = {s: change for _, _, s, change in rows("prod", preview("prod"))}
    assert prod["backend"].startswith("`v1.0.0@sha256:") and "→ `v1.1.0@sha256:" in prod["backend"]
    assert prod["mongo"].startswith("unchanged `7.0@sha256:")


def test_the_comment_has_one_marker_and_a_row_per_service() -> None:
    text = comment({"dev": preview("dev"), "prod": preview("prod")})
    marker = MARKER.format(stacks="dev+prod")
    assert text.startswith(marker) and text.count("<!-- smoker-infra:images") == 1
    assert text.count("\n| dev |") == 5 and text.count("\n| prod |") == 3
    assert "[secret]" not in text


def test_same_create_and_delete_steps() -> None:
    step = preview("dev")["steps"][0]
    same = {"steps": [{**step, "op": "same"}]}
    assert all(change.startswith("unchanged") for *_, change in rows("dev", same))
    created = {"steps": [{**step, "op": "create", "oldState": None}]}
    assert all(change.startswith("new `") for *_, change in rows("dev", created))
    deleted = {"steps": [{**step, "op": "delete"}]}
    assert list(rows("dev", deleted)) == [("dev", "dev-cloud", "(all)", "removed")]


def test_bad_input_exits_2_with_the_fix(tmp_path: Path, capsys: Any) -> None:
    broken = tmp_path / "p.json"
    broken.write_text("[]")
    assert main([f"dev={broken}"]) == 2
    assert main(["dev"]) == 2
    assert "pulumi preview --json" in capsys.readouterr().err


def test_a_preview_that_only_moves_release_images_is_not_drift(tmp_path: Path) -> None:
    dev = preview("dev")
    assert only_release_images(dev) and only_release_images(preview("prod"))
    step = dev["steps"][0]
    other = {"steps": [{**step, "diffReasons": ["images", "checks"]}]}
    guest = {
        "op": "update",
        "urn": "urn:pulumi:dev::smoker-infra::proxmoxve:index/containerLegacy:ContainerLegacy::x",
        "diffReasons": ["tags"],
    }
    for not_only in (other, {"steps": [step, guest]}, {"steps": [{**step, "op": "same"}]}):
        assert not only_release_images(not_only)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(dev))
    assert main(["--images-only", f"dev={path}"]) == 0
    path.write_text(json.dumps({"steps": [step, guest]}))
    assert main(["--images-only", f"dev={path}"]) == 1


def test_the_smokers_published_release_is_a_row_and_a_moved_tag_is_not_drift() -> None:
    urn = (
        "urn:pulumi:prod::smoker-infra::smoker:device:DeviceApp$"
        "pulumi-python:dynamic/device:DesiredRelease::smoker-desired-release"
    )

    def compose(tag: str, digest: str) -> str:
        image = f"benjr70/smart-smoker-smoker:{tag}@sha256:{digest * 64}"
        return f"services:\n  smoker-ui:\n    image: {image}\n"

    step = {
        "op": "update",
        "urn": urn,
        "diffReasons": ["compose"],
        "oldState": {"inputs": {"compose": compose("v1.0.0", "a")}},
        "newState": {"inputs": {"compose": compose("v1.1.0", "b")}},
    }
    ((stack, guest, service, change),) = rows("prod", {"steps": [step]})
    assert (stack, guest, service) == ("prod", "smoker", "smoker-ui")
    assert change == "`v1.0.0@sha256:aaaaaaaaaaaa` → `v1.1.0@sha256:bbbbbbbbbbbb`"
    assert only_release_images({"steps": [step]})
