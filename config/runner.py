"""The self-hosted GitHub Actions runner guest (`runner`): the runner and the Pulumi CLI it uses.

Both are release tarballs pinned by version and sha256 (the guest refuses any other file). The
registration credential is the secret `githubRunnerToken`, never part of these settings.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, ClassVar
from urllib.parse import urlparse

from pydantic import Field, model_validator
from pydantic.alias_generators import to_snake

from config.errors import fail
from config.fields import (
    HttpsUrl,
    Int,
    Model,
    Sha256,
    Text,
    TextList,
    UserName,
    pattern,
    ranged,
    rule,
)

if TYPE_CHECKING:
    from config.guests import GuestSpec

RUNNER_TARBALL = (
    "https://github.com/actions/runner/releases/download/v{version}/"
    "actions-runner-linux-x64-{version}.tar.gz"
)
PULUMI_TARBALL = "https://get.pulumi.com/releases/sdk/pulumi-v{version}-linux-x64.tar.gz"
PULUMI_CHECKSUMS = "https://get.pulumi.com/releases/sdk/pulumi-{version}-checksums.txt"
DEFAULT_LABELS = ("self-hosted", "linux", "x64", "smart-smoker")

_OWNER = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})"
_REPO = r"[A-Za-z0-9._-]{1,100}"
_NAME = r"[A-Za-z0-9._-]+"

Version = Annotated[
    Text, pattern(r"\d+\.\d+\.\d+", "must be a release version X.Y.Z", "pin e.g. 2.321.0")
]


def _with_default_url(data: Any, template: str, key: str = "downloadUrl") -> Any:
    """`key` (a URL) defaults to the release asset of `version`."""
    if isinstance(data, dict) and data.get(key) is None and to_snake(key) not in data:
        version = data.get("version")
        if isinstance(version, str) and re.fullmatch(r"\d+\.\d+\.\d+", version.strip()):
            return {**data, key: template.format(version=version.strip())}
    return data


def _github_url(value: str) -> str:
    path = urlparse(value).path
    if not re.fullmatch(rf"/{_OWNER}(/{_REPO})?", path):
        raise fail(
            "is not a GitHub repository or organization URL",
            "write https://github.com/OWNER/REPO (a repository) or https://github.com/ORG",
        )
    if path.endswith(".git") or path.rsplit("/", 1)[-1] in (".", ".."):
        raise fail("is a clone URL, not the repository's page", "drop the .git suffix")
    return value


def _labels(labels: tuple[str, ...]) -> tuple[str, ...]:
    if not labels:
        raise fail("must name at least one label", "use e.g. [self-hosted, smart-smoker]")
    bad = [label for label in labels if not re.fullmatch(_NAME, label)]
    if bad:
        raise fail(
            f"labels may hold only letters, digits, '.', '_' and '-' (bad: {bad})",
            "rename the label, e.g. smart-smoker",
        )
    return tuple(dict.fromkeys(labels))  # config.sh takes a comma list: no repeats


def _opt_dir(value: str) -> str:
    parts = value.split("/")[1:]
    if not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", value) or any(p in (".", "..") for p in parts):
        raise fail("is not a plain absolute path", "use e.g. /opt/actions-runner")
    if len(parts) < 2 or parts[0] != "opt":
        raise fail(
            "is outside /opt (the runner step owns and re-modes this directory)",
            "use e.g. /opt/actions-runner",
        )
    return value


def _relative_name(value: str) -> str:
    if not re.fullmatch(_NAME, value) or value in (".", ".."):
        raise fail("must be one directory name inside installDir (no '/')", "use e.g. _work")
    return value


class PulumiCliSettings(Model):
    """The Pulumi CLI the jobs use, from its release tarball (in /opt/pulumi/<version>)."""

    FIXES: ClassVar[dict[str, str]] = {
        "version": "pin the Pulumi CLI release, e.g. 3.142.0",
        "downloadUrl": "fix version (the default URL is derived from it) or set downloadUrl",
        "sha256": "the tarball's sha256 (`sha256sum pulumi-v<version>-linux-x64.tar.gz`)",
    }
    version: Version = Field(description="Pulumi CLI release", examples=["3.142.0"])
    download_url: HttpsUrl = Field(
        "",
        description="the release tarball (default: get.pulumi.com's linux-x64 tarball of version)",
    )
    sha256: Sha256 | None = Field(
        None,
        description="the tarball's sha256 (pin it); unset: the line for the tarball in the "
        "release's checksums file (checksumsUrl), fetched at apply time",
    )
    checksums_url: HttpsUrl = Field(
        "", description="the release's checksums file (default: get.pulumi.com's of version)"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_urls(cls, data: Any) -> Any:
        data = _with_default_url(data, PULUMI_TARBALL)
        return _with_default_url(data, PULUMI_CHECKSUMS, "checksumsUrl")


class RunnerSettings(Model):
    """The self-hosted GitHub Actions runner: where it registers, what it runs with."""

    FIXES: ClassVar[dict[str, str]] = {
        "url": "set runner.url to https://github.com/OWNER/REPO or https://github.com/ORG",
        "version": "pin the actions/runner release, e.g. 2.321.0",
        "downloadUrl": "fix version (the default URL is derived from it) or set downloadUrl",
        "sha256": "the tarball's sha256 (published in the actions/runner release notes)",
        "pulumi": "set runner.pulumi (version and sha256 of the Pulumi CLI tarball)",
    }
    url: Annotated[HttpsUrl, rule(_github_url)] = Field(
        description="the repository (https://github.com/OWNER/REPO) or organization "
        "(https://github.com/ORG) the runner registers to",
        examples=["https://github.com/smart-smoker/smart-smoker-v2"],
    )
    api_url: HttpsUrl = Field(
        "https://api.github.com", description="the GitHub REST API the runner guest asks"
    )
    version: Version = Field(description="actions/runner release", examples=["2.321.0"])
    download_url: HttpsUrl = Field(
        "", description="the runner tarball (default: the linux-x64 release asset of version)"
    )
    sha256: Sha256 = Field(description="the runner tarball's sha256")
    labels: Annotated[TextList, rule(_labels)] = Field(
        DEFAULT_LABELS, description="labels the runner registers with"
    )
    name: (
        Annotated[Text, pattern(_NAME, "is not a runner name", "use e.g. github-runner")] | None
    ) = Field(None, description="the runner's name on GitHub (default: the guest's hostname)")
    user: UserName = Field("runner", description="the system user the runner and its jobs run as")
    install_dir: Annotated[Text, rule(_opt_dir, pattern=r"^/opt(/[A-Za-z0-9._-]+)+$")] = Field(
        "/opt/actions-runner", description="where the runner is unpacked (owned by user)"
    )
    work_dir: Annotated[Text, rule(_relative_name, pattern=rf"^{_NAME}$")] = Field(
        "_work", description="the jobs' work directory, inside installDir"
    )
    check_interval_minutes: Annotated[Int, ranged(1, 1440, "minutes")] = Field(
        10, description="how often the guest checks that GitHub still lists the runner"
    )
    pulumi: PulumiCliSettings = Field(description="the Pulumi CLI the jobs use")

    @model_validator(mode="before")
    @classmethod
    def _default_download_url(cls, data: Any) -> Any:
        return _with_default_url(data, RUNNER_TARBALL)

    def runner_name(self, guest: GuestSpec) -> str:
        return self.name or guest.hostname

    @property
    def api_scope(self) -> str:
        """The API path the runners live under: `repos/OWNER/REPO` or `orgs/ORG`."""
        parts = urlparse(self.url).path.strip("/").split("/")
        return f"repos/{parts[0]}/{parts[1]}" if len(parts) == 2 else f"orgs/{parts[0]}"
