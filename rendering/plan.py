"""Apply plans: the ordered steps that converge a guest, shared by Pulumi and the tests.

A step is a POSIX shell script run on the guest as root, plus the text it reads on stdin (a file's
content, or a secret: stdin is the only way secrets reach a host). Scripts are idempotent: run
against a converged guest they change nothing and print `unchanged ...`; otherwise `changed ...`.
The Pulumi components turn each step into one `remote.Command`; the tier-3 tests run the very same
steps over SSH.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from layout import LOCK_DIR, LOCK_OWNER_FILE, LOCKED_EXIT
from rendering.shell import ShellValue, with_prologue

# The host deploy lock (layout.LOCK_DIR): a baseline step and a deploy never overlap.
BASELINE_LEASE_SECONDS = 900  # a step (e.g. apt) may take long; a dead one goes stale after
HOST_KEY_FILE = "/etc/ssh/ssh_host_ed25519_key.pub"

# A fresh Ubuntu guest runs apt-daily and apt-daily-upgrade (unattended-upgrades) at first boot,
# holding apt's locks for minutes. Every apt step first waits for those jobs (a transient unit
# ordered after them starts only once they are done), then lets apt wait for any other holder
# of its locks instead of failing at once.
APT_LOCK_TIMEOUT_SECONDS = 600
APT_GET = f"apt-get -o DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_SECONDS}"
APT_PROLOGUE = (
    "export DEBIAN_FRONTEND=noninteractive",
    "if [ -d /run/systemd/system ]; then",
    f"  timeout {APT_LOCK_TIMEOUT_SECONDS} systemd-run --quiet --wait --collect "
    "--property=After=apt-daily.service --property=After=apt-daily-upgrade.service /bin/true "
    "|| true",
    "fi",
)


def host_key_of(stdout: str) -> str:
    """`type base64` of the ed25519 host key printed on the last line of `stdout`."""
    lines = (stdout or "").strip().splitlines()
    if not lines or not lines[-1].startswith("ssh-ed25519 "):
        raise ValueError(f"no ed25519 host key was printed: {stdout!r}")
    return " ".join(lines[-1].split()[:2])


@dataclass(frozen=True)
class Step:
    name: str
    script: str
    stdin: str | None = None
    secret: bool = False  # stdin carries a secret: keep it and all output out of logs
    files: dict[str, str] = field(default_factory=dict)  # what it installs, for synth (no secrets)
    locked: bool = False  # runs under the host deploy lock

    def command(self, user: str) -> str:
        """The command line for an SSH session as `user` (root directly, others through sudo)."""
        body = under_lock(self.script, f"baseline {self.name}") if self.locked else self.script
        if user == "root":
            return body
        return f"sudo -n sh -c {shlex.quote(body)}"


def under_lock(body: str, what: str, lock_dir: str = LOCK_DIR) -> str:
    """`body` run while holding the host deploy lock; fails at once naming a holder
    (`under_lock.sh`; the owner record it writes is the one `deploy.lock.Owner` reads)."""
    values: dict[str, ShellValue] = {
        "LOCK": lock_dir,
        "OWNER_FILE": LOCK_OWNER_FILE,
        "WHAT": what,
        "LEASE": BASELINE_LEASE_SECONDS,
        "LOCKED_EXIT": LOCKED_EXIT,
        "BODY": body,
    }
    return with_prologue("under_lock.sh", "", values)


def script(*lines: str) -> str:
    return "\n".join(["set -eu", *lines]) + "\n"


def install_file(
    path: str,
    mode: str = "0644",
    owner: str = "root",
    group: str = "root",
    validate: str | None = None,
    on_change: str | None = None,
    always: str | None = None,
) -> str:
    """Shell that installs stdin at `path` only when content or ownership differ.

    `validate` runs against the candidate as "$new" before it replaces anything (a failing check
    leaves the old file in place); `on_change` runs after a replacement; `always` runs either way.
    """
    q = shlex.quote
    lines = [
        f"target={q(path)}",
        '[ -d "$(dirname "$target")" ] || install -d -m 0755 "$(dirname "$target")"',
        'new=$(mktemp "$(dirname "$target")/.smoker-new.XXXXXX")',
        "trap 'rm -f \"$new\"' EXIT",
        'cat > "$new"',
        f'chown {q(owner)}:{q(group)} "$new"',
        f'chmod {mode} "$new"',
        f'if [ -f "$target" ] && cmp -s "$new" "$target" && [ "$(stat -c %a:%U:%G "$target")" = '
        f"{q(f'{int(mode, 8):o}:{owner}:{group}')} ]; then",
        '  echo "unchanged $target"',
        "else",
    ]
    if validate:
        lines += [
            f"  if ! {{ {validate}; }}; then",  # grouped: `! a && b` would negate only `a`
            '    echo "refused $target: check failed, the old file stays" >&2',
            "    exit 1",
            "  fi",
        ]
    lines += ['  mv -f "$new" "$target"', '  echo "changed $target"']
    if on_change:
        lines += [f"  {on_change}"]
    lines += ["fi"]
    if always:
        lines += [always]
    return script(*lines)


def file_step(name: str, path: str, content: str, secret: bool = False, **kwargs: str) -> Step:
    """Install `content` at `path`; a secret file's content is never shown (synth lists its path)."""
    shown = SECRET_FILE_NOTE if secret else content
    return Step(
        name, install_file(path, **kwargs), stdin=content, secret=secret, files={path: shown}
    )


SECRET_FILE_NOTE = (
    "# secret: written from stdin at apply time (mode 0600); content never rendered\n"
)


def verified_download(what: str, url: str, sha256: str, into: str = "download") -> list[str]:
    """Shell lines: download `url` into a new temp file named by $`into` and refuse it (exit 1,
    the file removed, nothing installed) unless its sha256 is `sha256` (hex digits, or a shell
    variable such as `$want`). The caller removes it."""
    q = shlex.quote
    expected = f'"{sha256}"' if sha256.startswith("$") else q(sha256)
    return [
        f"{into}=$(mktemp)",
        f'curl -fsSL --retry 3 -o "${into}" {q(url)} || {{ rm -f "${into}"; exit 1; }}',
        f'got=$(sha256sum "${into}" | cut -d" " -f1)',
        f'if [ "$got" != {expected} ]; then',
        f'  rm -f "${into}"',
        f'  echo "{what} checksum mismatch: got $got, want {sha256}; nothing was installed" >&2',
        "  exit 1",
        "fi",
    ]
