"""STAND-IN release tarballs for the runner guest (tier-3 tests only): an actions/runner
tarball whose config.sh, run.sh and bin/installdependencies.sh are the stand-ins next to this
file (they talk to the GitHub API stand-in at `api_url`), and a Pulumi CLI tarball whose
`pulumi/pulumi` only prints its version.

What they cannot prove: anything about the real runner (.NET listener, its dependencies, job
execution, self-update) or the real Pulumi CLI beyond the tarball layout (a top-level `pulumi/`
directory of binaries).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

RUNNER_DIR = Path(__file__).resolve().parent / "runner"


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uid, info.gid = len(data), mode, 1001, 1001  # not root's
    tar.addfile(info, io.BytesIO(data))


def runner_tarball(api_url: str, version: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(RUNNER_DIR.rglob("*")):
            if path.is_file():
                _add(tar, f"./{path.relative_to(RUNNER_DIR)}", path.read_bytes())
        _add(tar, "./.standin-api", f"{api_url}\n".encode(), 0o644)
        _add(tar, "./bin/Runner.Listener.version", f"{version}\n".encode(), 0o644)
    return buffer.getvalue()


def pulumi_tarball(version: str) -> bytes:
    stub = (
        "#!/bin/sh\n"
        "# STAND-IN for the Pulumi CLI (tier-3 tests only): prints its version, nothing else.\n"
        f'case "${{1:-}}" in version) echo v{version} ;; '
        '*) echo "pulumi stand-in: only version" >&2; exit 1 ;; esac\n'
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        _add(tar, "pulumi/pulumi", stub.encode())
        _add(tar, "pulumi/pulumi-language-python", b"#!/bin/sh\nexit 0\n")
    return buffer.getvalue()
