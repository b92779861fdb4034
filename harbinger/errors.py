"""Typed errors. Callers branch on the type, never on message text (as kr8s does).

Every entry point (HTTP bodies, annotations, files, CLI flags) turns bad input into
an :class:`InvalidInput` that says *where* (``source``, ``line``) and *what*; the HTTP
layer maps it to 400 and the CLI to exit code 2, each in one place.
"""

from __future__ import annotations


class HarbingerError(Exception):
    """Base of every error Harbinger raises on purpose."""


class InvalidInput(HarbingerError, ValueError):
    """Input that Harbinger refuses, with where it came from."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.source = source
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        return f"{where}: {self.message}" if where else self.message
