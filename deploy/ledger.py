"""The deployment ledger: one JSON line per attempt, append-only, readable by root only."""

from __future__ import annotations

import json
import shlex
from typing import Any

from deploy.transport import Transport
from errors import SmokerError
from layout import LEDGER_PATH


class LedgerError(SmokerError):
    """The ledger could not be written."""


class Ledger:
    def __init__(self, transport: Transport, path: str = LEDGER_PATH) -> None:
        self.transport, self.path = transport, path

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
        p = shlex.quote(self.path)
        result = self.transport.run(
            f"umask 077 && mkdir -p $(dirname {p}) && cat >> {p} && chmod 0600 {p}",
            stdin=line.encode(),
        )
        if not result.ok:
            why = " | ".join(result.stderr.strip().splitlines()[-2:]) or f"exit {result.exit_code}"
            raise LedgerError(
                f"could not append to the ledger {self.path} ({why}); see on the guest "
                f"`ls -ld {p} $(dirname {p}); df -h $(dirname {p})`"
            )

    def records(self) -> list[dict[str, Any]]:
        result = self.transport.run(f"cat {shlex.quote(self.path)} 2>/dev/null || true")
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
