"""The images a release runs are pinned to digests when the program runs (preview included):
pulumi-docker's registry lookup, through the explicit `docker` provider, answered here by the
stand-in table the synth uses (tools/synth_registry.json)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from components.images import LOOKUP_ONLY_HOST
from deploy.release import service_images
from tools.registry import stand_in_digest
from tools.synth import REGISTRY_LOOKUP, Synthesis, synthesize

RELEASE = "pulumi-python:dynamic/app:Release"
DESIRED_RELEASE = "pulumi-python:dynamic/device:DesiredRelease"
NIGHTLY_BACKEND = "benjr70/smart-smoker-backend:nightly"


@pytest.fixture(scope="module")
def dev() -> Synthesis:
    return synthesize("dev")


@pytest.fixture(scope="module")
def prod() -> Synthesis:
    return synthesize("prod")


def releases(synthesis: Synthesis) -> dict[str, dict[str, Any]]:
    return {r.name: r.inputs for r in synthesis.by_type(RELEASE)}


def published(synthesis: Synthesis) -> dict[str, str]:
    """Each device's published release (DesiredRelease): its compose file."""
    return {r.name: r.inputs["compose"] for r in synthesis.by_type(DESIRED_RELEASE)}


def test_every_release_image_is_its_tag_pinned_to_the_registrys_digest(
    dev: Synthesis, prod: Synthesis
) -> None:
    expected = {
        "dev-cloud-release": {
            "mongo": "mongo:7.0",
            "backend": NIGHTLY_BACKEND,
            "frontend": "benjr70/smart-smoker-frontend:nightly",
        },
        "prod-cloud-release": {
            "mongo": "mongo:7.0",
            "backend": "benjr70/smart-smoker-backend:v1.0.0",
            "frontend": "benjr70/smart-smoker-frontend:v1.0.0",
        },
    }
    found = {**releases(dev), **releases(prod)}
    assert set(found) == set(expected)
    for name, images in expected.items():
        pinned = {svc: f"{ref}@{stand_in_digest(ref)}" for svc, ref in images.items()}
        assert found[name]["images"] == pinned
        compose = found[name]["compose"]
        assert sorted(service_images(compose).values()) == sorted(pinned.values())
    # the devices (the VM, kind vm; the physical smoker, kind host): their published
    # releases, with the same pins
    devices = {
        "virtual-smoker-device-desired-release": "nightly",
        "smoker-desired-release": "v1.0.0",
    }
    found_published = {**published(dev), **published(prod)}
    assert set(found_published) == set(devices)
    for name, tag in devices.items():
        refs = [
            f"benjr70/smart-smoker-device-service:{tag}",
            f"benjr70/smart-smoker-smoker:{tag}",
        ]
        assert sorted(service_images(found_published[name]).values()) == sorted(
            f"{ref}@{stand_in_digest(ref)}" for ref in refs
        )


def test_the_device_images_keep_their_platform(dev: Synthesis) -> None:
    compose = yaml.safe_load(published(dev)["virtual-smoker-device-desired-release"])
    for service in compose["services"].values():
        assert "@sha256:" in service["image"] and service["platform"] == "linux/arm/v7"


def test_each_lookup_goes_through_the_explicit_docker_provider(dev: Synthesis) -> None:
    (provider,) = dev.by_type("pulumi:providers:docker")
    lookups = [i for i in dev.invokes if i.token == REGISTRY_LOOKUP]
    planned = [ref for inputs in releases(dev).values() for ref in inputs["images"].values()]
    planned += [
        ref for compose in published(dev).values() for ref in service_images(compose).values()
    ]
    assert sorted(i.args["name"] for i in lookups) == sorted(ref.split("@")[0] for ref in planned)
    assert all(i.provider and i.provider.startswith(provider.urn) for i in lookups)
    assert "registryAuth" not in provider.inputs  # public images: no credentials
    # no Docker daemon: pulumi-docker's native half pings one at Configure, except over SSH
    assert provider.inputs["host"] == LOOKUP_ONLY_HOST
    assert provider.inputs["disableDockerDaemonCheck"] == "true"  # provider config: strings


def test_a_moved_nightly_changes_exactly_the_dev_release(dev: Synthesis) -> None:
    moved = "sha256:" + "f" * 64
    after = synthesize("dev", digest_of=lambda ref: stand_in_digest(ref, {NIGHTLY_BACKEND: moved}))
    before_by_urn = {r.urn: r for r in dev.resources}
    changed = [r.name for r in after.resources if r.inputs != before_by_urn[r.urn].inputs]
    assert changed == ["dev-cloud-release"]
    images = releases(after)["dev-cloud-release"]["images"]
    assert images["backend"] == f"{NIGHTLY_BACKEND}@{moved}"


def test_private_images_authenticate_with_a_secret(dev: Synthesis) -> None:
    from tests.configs import set_path, stack_raw

    raw = set_path(
        stack_raw("dev"), "app.registryAuth", {"address": "ghcr.io", "username": "benjr70"}
    )
    raw = set_path(raw, "registryPassword", "ghp_registry0123456789", secret=True)
    from tests.sdk.wire import SECRET_SIG, SIG

    (provider,) = synthesize("dev", *raw).by_type("pulumi:providers:docker")
    assert provider.inputs["registryAuth"] == "[secret]"
    # the engine gets the credentials inside a secret envelope: encrypted in state, never shown
    assert provider.wire_inputs["registryAuth"][SIG] == SECRET_SIG
