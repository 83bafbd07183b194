"""Progress on stderr: one rewritten line on a terminal, a line every few seconds in logs."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, stream: TextIO | None = None, every: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self._last = 0.0
        self._open = False

    def say(self, text: str) -> None:
        """A permanent line."""
        self._end_status()
        self.stream.write(text + "\n")
        self.stream.flush()

    def status(self, text: str) -> None:
        """A transient status line (rate-limited when not on a terminal)."""
        now = time.monotonic()
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns - 1
            self.stream.write("\r" + text[:width].ljust(width))
            self._open = True
        elif now - self._last >= self.every:
            self.stream.write(text + "\n")
        else:
            return
        self._last = now
        self.stream.flush()

    def _end_status(self) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False
