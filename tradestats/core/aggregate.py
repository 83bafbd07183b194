"""The running statistics of a set of trades, mergeable so panes combine into windows."""

from __future__ import annotations

from math import inf

__all__ = ["ASK", "BID", "TYPE_BITS", "Aggregate"]

ASK = 1
BID = 2
TYPE_BITS = {"ASK": ASK, "BID": BID}
_TYPE_LABELS = {ASK: "ASK", BID: "BID", ASK | BID: "MIXED"}


class Aggregate:
    """Count, price sum/min/max, volume and notional (price x size) of some trades.

    A plain mutable object with slots: it is updated once per trade on the hot path.
    """

    __slots__ = ("count", "max_price", "min_price", "notional", "sum_price", "types", "volume")

    def __init__(self) -> None:
        self.count = 0
        self.sum_price = 0.0
        self.min_price = inf
        self.max_price = -inf
        self.volume = 0
        self.notional = 0.0
        self.types = 0

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
        """An aggregate with these values (restoring state: skips the empty initialisation)."""
        agg = cls.__new__(cls)
        agg.count = count
        agg.sum_price = sum_price
        agg.min_price = min_price
        agg.max_price = max_price
        agg.volume = volume
        agg.notional = notional
        agg.types = types
        return agg

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
        return _TYPE_LABELS[self.types]

    @property
    def avg_price(self) -> float:
        return self.sum_price / self.count

    @property
    def vwap(self) -> float | None:
        """Volume-weighted average price; None when every trade had size 0."""
        return self.notional / self.volume if self.volume else None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Aggregate):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Aggregate({fields})"
