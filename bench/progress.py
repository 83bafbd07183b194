"""Progress on stderr: a run takes minutes, and a silent one looks hung.

Lines are stamped with the elapsed time; statuses (e.g. "restoring: 41000 records to go")
rewrite one line on a terminal and are rate-limited in logs and CI output.
"""

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
        self.started = time.monotonic()
        self._last_status = 0.0
        self._open = False

    def _stamp(self) -> str:
        elapsed = int(time.monotonic() - self.started)
        return f"[{elapsed // 60:3d}:{elapsed % 60:02d}]"

    def say(self, text: str) -> None:
        """A permanent line."""
        self._close_status()
        self.stream.write(f"{self._stamp()} {text}\n")
        self.stream.flush()

    def status(self, text: str) -> None:
        """A transient line: rewritten on a terminal, else printed every ``every`` seconds."""
        now = time.monotonic()
        line = f"{self._stamp()}   {text}"
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns - 1
            self.stream.write("\r" + line[:width].ljust(width))
            self._open = True
        elif now - self._last_status >= self.every:
            self.stream.write(line + "\n")
        else:
            return
        self._last_status = now
        self.stream.flush()

    def _close_status(self) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False
