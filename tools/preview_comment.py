"""The PR comment that says which images each release would run, from `pulumi preview --json`.

`python -m tools.preview_comment dev=preview-dev.json prod=preview-prod.json` prints Markdown:
per stack, guest and service, the digest a merge would deploy next to the live one (`old -> new`),
or `unchanged`. The digests are the Release's `images` input, which the program pins at preview
time (components/images.py); a Release recorded before that carried tags only, shown as such.
The document is Pulumi's PreviewDigest: `{"steps": [{"op", "urn", "oldState", "newState"}]}`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from deploy.release import repository, service_images
from tools.preview_guard import urn_type

MARKER = "<!-- smoker-infra:images:{stacks} -->"  # one comment per set of stacks, updated in place
RELEASE_TYPES = (
    "pulumi-python:dynamic/app:Release",
    "pulumi-python:dynamic/device:DesiredRelease",  # a device's release, published for its pull
    "pulumi-python:dynamic:Resource",
)


def short(ref: str | None) -> str:
    """`repo:tag@sha256:0123...` -> `tag@sha256:0123456789ab` (enough to tell digests apart)."""
    if not ref:
        return "—"
    name, _, digest = ref.partition("@")
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    return f"`{tag}@{digest[:19]}`" if digest else f"`{tag}` (tag only)"


def _images(state: Mapping[str, Any] | None) -> dict[str, str]:
    """service -> image reference of a Release state: its `images`, else its compose file's."""
    inputs = (state or {}).get("inputs") or {}
    if isinstance(inputs.get("images"), Mapping):
        return {str(k): str(v) for k, v in inputs["images"].items()}
    compose = inputs.get("compose")
    return service_images(compose) if isinstance(compose, str) else {}


def _old_ref(new_ref: str, service: str, old: Mapping[str, str]) -> str | None:
    if service in old:
        return old[service]
    same_repo = [ref for ref in old.values() if repository(ref) == repository(new_ref)]
    return same_repo[0] if same_repo else None


def rows(stack: str, digest: Mapping[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """(stack, guest, service, change) of every image of every Release in a preview."""
    for step in digest.get("steps", []):
        if urn_type(step.get("urn", "")) not in RELEASE_TYPES:
            continue
        name = step["urn"].rsplit("::", 1)[-1]
        guest = name.removesuffix("-desired-release").removesuffix("-release")
        if step.get("op") in ("delete", "delete-replaced", "discard"):
            yield stack, guest, "(all)", "removed"
            continue
        new = _images(step.get("newState"))
        old = _images(step.get("oldState")) if step.get("oldState") else {}
        for service, ref in sorted(new.items()):
            before = _old_ref(ref, service, old)
            if step.get("op") == "same" or before == ref:
                change = f"unchanged {short(ref)}"
            elif before is None:
                change = f"new {short(ref)}"
            else:
                change = f"{short(before)} → {short(ref)}"
            yield stack, guest, service, change


IMAGE_INPUTS = frozenset({"images", "compose"})


def only_release_images(digest: Mapping[str, Any]) -> bool:
    """The preview changes nothing but the images of releases (a tag moved upstream since the
    last deploy: the next deploy takes it; not drift of the host)."""
    changed = [s for s in digest.get("steps", []) if s.get("op") not in ("same", "read")]
    return bool(changed) and all(
        s.get("op") == "update"
        and urn_type(s.get("urn", "")) in RELEASE_TYPES
        and set(s.get("diffReasons") or ()) <= IMAGE_INPUTS
        and set(s.get("diffReasons") or ())
        for s in changed
    )


def comment(previews: Mapping[str, Mapping[str, Any]]) -> str:
    lines = [
        MARKER.format(stacks="+".join(previews)),
        "#### Images a merge would deploy (pinned to digests by the preview)",
        "",
        "| stack | guest | service | image |",
        "|---|---|---|---|",
    ]
    found = [row for stack, digest in previews.items() for row in rows(stack, digest)]
    lines += [
        f"| {stack} | {guest} | {service} | {change} |" for stack, guest, service, change in found
    ]
    if not found:
        lines.append("| — | — | — | no release in these previews |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Print the comment; with --images-only, print nothing and exit 0 exactly when every
    preview changes only release images (1 otherwise)."""
    images_only = "--images-only" in argv
    previews: dict[str, Mapping[str, Any]] = {}
    try:
        for arg in (a for a in argv if a != "--images-only"):
            stack, sep, path = arg.partition("=")
            if not sep:
                raise ValueError(f"{arg!r} is not STACK=FILE")
            digest = json.loads(Path(path).read_text())
            if not isinstance(digest, Mapping) or not isinstance(digest.get("steps", []), list):
                raise ValueError(f'{path} is not a "pulumi preview --json" document')
            previews[stack] = digest
    except (OSError, ValueError) as err:
        print(
            f"preview_comment: {err}; usage: python -m tools.preview_comment "
            "STACK=PREVIEW.json ... (the output of `pulumi preview --json`)",
            file=sys.stderr,
        )
        return 2
    if images_only:
        return 0 if all(only_release_images(d) for d in previews.values()) else 1
    sys.stdout.write(comment(previews))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
