"""Hopping-window and pane arithmetic with Kafka Streams' semantics.

Windows are ``[start, start + size)`` with ``start`` a multiple of the advance (aligned to the
epoch). A window closes once stream time reaches ``start + size + grace``.

State is kept per *pane*: a slice of ``pane_ms = gcd(size, advance)`` milliseconds. Every window
is a union of whole panes, so one aggregate per pane replaces one aggregate per window (five
with the default 5 s / 1 s), and a window's value is the combination of its panes.

A trade that arrives out of order may find some of its windows already closed. Kafka Streams
adds it to the open ones only. To keep that exact when windows are computed from panes, each
trade is tagged with its *eligibility*: the index, among the windows that contain its pane
(oldest first), of the first window that was still open when the trade arrived. A window then
includes only the pane contributions whose eligibility is at most the window's own index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd

__all__ = ["NO_TIME", "WindowSpec"]

#: Stream time of a partition that has seen no trade yet; below any real timestamp.
NO_TIME = -(2**63)


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Size, advance and grace of the hopping windows, all in milliseconds."""

    size_ms: int
    advance_ms: int
    grace_ms: int = 0
    pane_ms: int = field(init=False)

    def __post_init__(self) -> None:
        if self.size_ms <= 0:
            raise ValueError(f"window size must be > 0 ms, got {self.size_ms}")
        if not 0 < self.advance_ms <= self.size_ms:
            raise ValueError(
                f"window advance must be in (0, size={self.size_ms}] ms, got {self.advance_ms}"
            )
        if self.grace_ms < 0:
            raise ValueError(f"window grace must be >= 0 ms, got {self.grace_ms}")
        object.__setattr__(self, "pane_ms", gcd(self.size_ms, self.advance_ms))

    def pane_start(self, timestamp: int) -> int:
        """Start of the pane that holds ``timestamp``."""
        return timestamp - timestamp % self.pane_ms

    def first_window_of_pane(self, pane: int) -> int:
        """Start of the oldest window that contains the whole pane."""
        lowest = pane + self.pane_ms - self.size_ms
        return -(-lowest // self.advance_ms) * self.advance_ms

    def last_window_of_pane(self, pane: int) -> int:
        """Start of the newest window that contains the pane."""
        return pane - pane % self.advance_ms

    def windows_of_pane(self, pane: int) -> range:
        """Starts of every window that contains the pane, oldest first."""
        return range(
            self.first_window_of_pane(pane), self.last_window_of_pane(pane) + 1, self.advance_ms
        )

    def panes_of_window(self, start: int) -> range:
        """Starts of the panes that make up the window starting at ``start``."""
        return range(start, start + self.size_ms, self.pane_ms)

    def window_index(self, pane: int, window_start: int) -> int:
        """Position of a window among the windows of ``pane`` (0 = oldest)."""
        return (window_start - self.first_window_of_pane(pane)) // self.advance_ms

    def close_time(self, window_start: int) -> int:
        """Stream time at which the window closes (no longer accepts trades)."""
        return window_start + self.size_ms + self.grace_ms

    def first_open_window(self, stream_time: int) -> int:
        """Start of the oldest window still open at ``stream_time``."""
        horizon = stream_time - self.size_ms - self.grace_ms
        return horizon - horizon % self.advance_ms + self.advance_ms

    def eligibility(self, pane: int, stream_time: int) -> int | None:
        """Index of the first still-open window of ``pane``, or None if all of them are closed."""
        first_open = self.first_open_window(stream_time)
        if first_open > self.last_window_of_pane(pane):
            return None
        first = self.first_window_of_pane(pane)
        return 0 if first_open <= first else (first_open - first) // self.advance_ms

    def last_close_of_pane(self, pane: int) -> int:
        """Stream time at which the newest window containing the pane closes."""
        return self.close_time(self.last_window_of_pane(pane))
