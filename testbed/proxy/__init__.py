"""The reverse proxy of the cloud guests, for the tier-3 tests: the REAL nginx 1.22.1.

Production runs the upstream ``nginx:1.22.1`` image (pinned by digest); the build machines cannot
pull it, so tier 3 runs ``smoker-test/nginx:1.22.1-bookworm``: the same nginx release from
Debian bookworm's ``nginx`` package, built offline FROM the harness's debootstrap'ed base and
shaped like the official image (user ``nginx``, ``/etc/nginx/nginx.conf`` including
``conf.d/*.conf``, no site enabled, ``STOPSIGNAL SIGQUIT``, ``nginx -g 'daemon off;'``; see
``image/Dockerfile``). The build checks that ``nginx -v`` says 1.22.1 and fails otherwise.

Public API::

    build_proxy(engine) -> "smoker-test/nginx:1.22.1-bookworm" (built or reused, version-checked)
    PROXY_IMAGE, NGINX_VERSION
"""

from __future__ import annotations

import time
from pathlib import Path

from testbed.harness import Engine, HarnessError
from testbed.harness.engine import log
from testbed.harness.images import build_base
from testbed.standins.images import build_labelled

__all__ = ["NGINX_VERSION", "PROXY_IMAGE", "build_proxy", "package_version"]

NGINX_VERSION = "1.22.1"
PROXY_IMAGE = f"smoker-test/nginx:{NGINX_VERSION}-bookworm"
IMAGE_DIR = Path(__file__).resolve().parent / "image"


def _run(engine: Engine, ref: str, *argv: str) -> str:
    """Output (stdout and stderr) of a throwaway container of ``ref``."""
    result = engine.docker("run", "--rm", "--network", "none", ref, *argv, check=False)
    return (result.stdout + result.stderr).decode(errors="replace").strip()


def package_version(engine: Engine, ref: str = PROXY_IMAGE) -> str:
    """The Debian package the image's nginx comes from, e.g. ``nginx 1.22.1-9+deb12u9``."""
    return _run(engine, ref, "cat", "/etc/smoker-test/nginx-package")


def build_proxy(engine: Engine) -> str:
    """Build (or reuse) the proxy image; raises HarnessError unless it runs nginx 1.22.1."""
    t0 = time.monotonic()
    ref = build_labelled(engine, PROXY_IMAGE, IMAGE_DIR, build_base(engine))
    version = _run(engine, ref, "nginx", "-v")
    if version != f"nginx version: nginx/{NGINX_VERSION}":
        raise HarnessError(f"{ref} must run nginx {NGINX_VERSION}, but `nginx -v` says {version!r}")
    log(f"proxy image {ref} ready ({package_version(engine, ref)}) in {time.monotonic() - t0:.1f}s")
    return ref
