"""The running statistics of a set of trades, mergeable so panes combine into windows."""

from __future__ import annotations

from math import inf

import msgspec

__all__ = ["ASK", "BID", "TYPE_BITS", "TYPE_LABELS", "Aggregate"]

ASK = 1
BID = 2
TYPE_BITS = {"ASK": ASK, "BID": BID}
TYPE_LABELS = {ASK: "ASK", BID: "BID", ASK | BID: "MIXED"}


class Aggregate(msgspec.Struct, gc=False):
    """Count, price sum/min/max, volume and notional (price x size) of some trades.

    Updated once per trade on the hot path, and a partition holds one per ticker and pane: a
    struct that the cyclic garbage collector does not track (it holds numbers only), so the
    dicts holding these stay untracked too. With thin tickers, the collector otherwise walked
    the whole state again and again, more than the trades themselves cost.
    """

    count: int = 0
    sum_price: float = 0.0
    min_price: float = inf
    max_price: float = -inf
    volume: int = 0
    notional: float = 0.0
    types: int = 0

    @classmethod
    def of(
        cls,
        count: int,
        sum_price: float,
        min_price: float,
        max_price: float,
        volume: int,
        notional: float,
        types: int,
    ) -> Aggregate:
        """An aggregate with these values (restoring state), in the stored field order."""
        return cls(count, sum_price, min_price, max_price, volume, notional, types)

    def add(self, price: float, size: int, type_bit: int) -> None:
        """Fold one trade in."""
        self.count += 1
        self.sum_price += price
        if price < self.min_price:
            self.min_price = price
        if price > self.max_price:
            self.max_price = price
        self.volume += size
        self.notional += price * size
        self.types |= type_bit

    def merge(self, other: Aggregate) -> None:
        """Fold another aggregate in (associative; order fixes float rounding)."""
        self.count += other.count
        self.sum_price += other.sum_price
        if other.min_price < self.min_price:
            self.min_price = other.min_price
        if other.max_price > self.max_price:
            self.max_price = other.max_price
        self.volume += other.volume
        self.notional += other.notional
        self.types |= other.types

    @property
    def type_label(self) -> str:
        """The trade type shared by every trade, or "MIXED"."""
        return TYPE_LABELS[self.types]

    @property
    def avg_price(self) -> float:
        return self.sum_price / self.count

    @property
    def vwap(self) -> float | None:
        """Volume-weighted average price; None when every trade had size 0."""
        return self.notional / self.volume if self.volume else None
