"""STAND-INs for GitHub (the REST API a self-hosted runner uses) and the runner's and Pulumi
CLI's release tarballs, for the tier-3 runner tests. See each module for what they cannot prove."""

from .server import GitHubStandin, Registration, Runner
from .tarballs import pulumi_tarball, runner_tarball

__all__ = ["GitHubStandin", "Registration", "Runner", "pulumi_tarball", "runner_tarball"]
