"""A progress bar on stderr (stdout stays clean for ``--json``)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``[#####.....] 5/10 fold 6/10 (12 s)``: redrawn in place on a terminal, one line per
    update otherwise (a CI log should not fill with carriage returns)."""

    def __init__(self, label: str, *, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.began = time.monotonic()
        self.interactive = self.stream.isatty()

    def __call__(self, done: int, total: int, what: str) -> None:
        filled = int(self.width * done / total) if total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        line = f"{self.label} [{bar}] {done}/{total} {what} ({time.monotonic() - self.began:.0f} s)"
        if self.interactive:
            end = "\n" if done >= total else ""
            self.stream.write(f"\r{line}\033[K{end}")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
