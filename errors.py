"""The program's exception root.

Every error a user or an operator can meet on purpose (a bad stack file, a held lock, a lost
connection, a failed deploy) is a `SmokerError` whose message is complete on one line: what
happened, what is live, and the exact command that fixes it. Entry points print the message
alone; anything else escaping is a bug and keeps its traceback. This module imports nothing, so
every layer may raise and catch it.
"""

from __future__ import annotations


class SmokerError(Exception):
    """An expected failure; `str(error)` is the whole message for the user."""
