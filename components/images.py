"""The images a release runs, resolved from tag to digest when the program runs (preview
included) by pulumi-docker's registry lookup, through the stack's explicit `docker` provider: a
lookup talks to the registry only, no Docker daemon is involved. The Release then carries
`repo:tag@sha256:<digest>`: a preview shows which images a deploy would run, a moved tag is a
diff by itself, and the engine refuses to deploy if the tag has moved since (deploy/steps.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pulumi
import pulumi_docker as docker

from config import StackConfig

DIGEST_MARK = "@sha256:"
# No Docker daemon is needed for a lookup, but pulumi-docker 5's native half pings one when the
# provider is configured (provider/image.go configureDockerClient), for every host but an SSH
# one, and ignores disableDockerDaemonCheck (which only the bridged upstream half reads; its
# registry lookup never makes a client: data_source_docker_registry_image.go). This host is
# never dialled: nothing of this provider talks to a daemon (pulumi/pulumi-docker#1106).
LOOKUP_ONLY_HOST = "ssh://lookups-only@127.0.0.1"


def docker_provider(cfg: StackConfig) -> docker.Provider:
    """The explicit provider of the lookups, with the private registry's credentials if any."""
    auth = cfg.app.registry_auth
    registry_auth = None
    if auth is not None:
        password = cfg.secrets.registry_password
        assert password is not None  # required with app.registryAuth (config.loader)
        registry_auth = [
            docker.ProviderRegistryAuthArgs(
                address=auth.address,
                username=auth.username,
                password=pulumi.Output.secret(password.reveal()),
            )
        ]
    return docker.Provider(
        "docker",
        host=LOOKUP_ONLY_HOST,
        disable_docker_daemon_check=True,
        registry_auth=registry_auth,
    )


def _pinned(ref: str) -> Callable[[str], str]:
    return lambda digest: f"{ref}@{digest}"


def planned_images(
    images: Mapping[str, str], provider: docker.Provider, parent: pulumi.Resource
) -> pulumi.Output[dict[str, str]]:
    """service -> `repo:tag@sha256:<digest>` (the digest the registry serves for the tag now;
    for a multi-arch tag the index's). A reference that already names a digest is kept."""
    planned: dict[str, pulumi.Input[str]] = {}
    for service, ref in images.items():
        if DIGEST_MARK in ref:
            planned[service] = ref
            continue
        found = docker.get_registry_image_output(
            name=ref, opts=pulumi.InvokeOptions(provider=provider, parent=parent)
        )
        planned[service] = found.sha256_digest.apply(_pinned(ref))
    return pulumi.Output.all(**planned).apply(dict)
