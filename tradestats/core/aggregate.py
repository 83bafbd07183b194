"""The running statistics of a set of trades: one per ticker, pane and eligibility."""

from __future__ import annotations

__all__ = ["ASK", "BID", "TYPE_BITS", "TYPE_LABELS", "Aggregate"]

ASK = 1
BID = 2
TYPE_BITS = {"ASK": ASK, "BID": BID}
TYPE_LABELS = {ASK: "ASK", BID: "BID", ASK | BID: "MIXED"}


class Aggregate:
    """Count, price sum/min/max, volume and notional (price x size) of some trades.

    Updated in place once per trade by :meth:`PartitionState.process
    <tradestats.core.partition.PartitionState.process>`, the hot path of a dense stream: a
    plain class with slots, whose stores the interpreter specialises (a ``msgspec.Struct``'s go
    through its own ``__setattr__``, about a quarter more instructions per trade). Unlike a
    struct made with ``gc=False`` it is tracked by the cyclic garbage collector; the worker's
    collector thresholds (see :mod:`tradestats.service.worker`) keep full collections rare.
    """

    __slots__ = ("count", "max_price", "min_price", "notional", "sum_price", "types", "volume")

    def __init__(
        self,
        count: int,
        sum_price: float,
        min_price: float,
        max_price: float,
        volume: int,
        notional: float,
        types: int,
    ) -> None:
        """Fields in the stored order (see :func:`tradestats.core.codec.encode_pane_parts`)."""
        self.count = count
        self.sum_price = sum_price
        self.min_price = min_price
        self.max_price = max_price
        self.volume = volume
        self.notional = notional
        self.types = types
