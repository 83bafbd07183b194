"""The state of one input partition: stream time, per-ticker panes, and what to emit and store.

This is the whole aggregation logic, with no I/O: the faust layer feeds it batches of source
records, sends what it returns (window results, dead letters) and stores its checkpoints.

Exactness under at-least-once delivery rests on three rules:

* Each ticker record stores the highest source offset folded into it, and the partition record
  stores the last offset processed with the stream clock. A replayed record at or below either
  is not applied twice.
* A window's value is a pure function of the stored panes (see :mod:`.windows` on eligibility),
  so a window emitted again after a crash has the identical value.
* The caller writes a checkpoint only once the results sent before it are acknowledged, so a
  stored ``emitted_time`` never claims a window that was not durably emitted.
* A changelog may end anywhere inside the last checkpoint, so a restore can see a ticker record
  of checkpoint *k+1* with the partition record of checkpoint *k*. Panes are therefore dropped
  only once their windows closed before the *previous* checkpoint's ``emitted_time``: replay
  from checkpoint *k*'s clock never reaches those windows again, so they are never emitted
  again without the panes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from math import inf
from typing import Protocol

import msgspec

from tradestats.core.aggregate import TYPE_BITS, TYPE_LABELS, Aggregate
from tradestats.core.codec import (
    PARTITION_META_KEY,
    PartitionMeta,
    WindowResult,
    WindowStats,
    decode_pane_parts,
    decode_partition_meta,
    encode_bounds,
    encode_pane_parts,
    encode_partition_meta,
    encode_result,
    encode_value,
    encode_value_head,
    encode_window_start,
    result_timestamp,
)
from tradestats.core.trades import (
    Reason,
    Rejected,
    Trade,
    checked_trade,
    decode_trade,
    decode_value,
)
from tradestats.core.windows import NO_TIME, WindowSpec

__all__ = [
    "BatchOutcome",
    "Checkpoint",
    "DeadLetter",
    "EmitMode",
    "PartitionState",
    "SourceRecord",
]


class EmitMode(StrEnum):
    FINAL = "final"
    """Each window once, when it closes (Kafka Streams' ``suppress(untilWindowCloses)``)."""
    UPDATE = "update"
    """Changed windows at every checkpoint, coalesced like Kafka Streams' record cache."""


class SourceRecord(Protocol):
    """What the state needs of a consumed record (an aiokafka ``ConsumerRecord`` fits)."""

    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that cannot be aggregated, and why."""

    record: SourceRecord
    reason: Reason
    detail: str


@dataclass(slots=True)
class BatchOutcome:
    """What one batch did: counts for metrics, and the records for the dead-letter topic."""

    aggregated: int = 0
    late: int = 0
    replayed: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """State records to store, in order, and (update mode) the window values to emit."""

    writes: list[tuple[bytes, bytes | None]]
    updates: list[WindowResult]


class _Ticker(msgspec.Struct, gc=False):
    """One ticker's live panes: pane start -> eligibility -> aggregate.

    Untracked by the cyclic garbage collector (it holds no reference cycles), so the indexes
    of tickers by name and by pane are untracked too.
    """

    applied_offset: int = -1
    panes: dict[int, dict[int, Aggregate]] = msgspec.field(default_factory=dict)
    # pane start -> lowest eligibility changed since the last checkpoint (update mode)
    changed: dict[int, int] = msgspec.field(default_factory=dict)
    # The ticker's record key (its name in UTF-8), which every trade of it must have, and
    # the route of its results (-1 until its first result).
    key: bytes = b""
    route: int = -1
    # A thin ticker's pane makes five windows of the same value, closing a second apart.
    # For a pane that holds one eligible-everywhere part and shares no window with another
    # pane of the ticker: the ticker's applied offset when that value was encoded (any trade
    # folded in moves it), the pane, the value's head (see codec.encode_value_head) and
    # average price. Fields, not a tuple: with 100,000 tickers, every object a result reads
    # is a cache miss.
    encoded_at: int | None = None
    encoded_pane: int = 0
    value_head: bytes = b""
    avg_price: float = 0.0


def _sole_part(ticker: _Ticker, start: int, end: int, pane_ms: int) -> tuple[int, Aggregate] | None:
    """The ticker's only pane in the window ``[start, end)`` and its part, if that pane holds
    one eligible-everywhere part: it holds every trade of the window.

    Looks up the window's panes rather than going through the ticker's: a dense ticker keeps
    three windows' worth of panes (open, closing, retained for queries), and going through
    them oldest first took 2.4 us a window at 10 trades/ticker/s; two lookups settle it."""
    panes = ticker.panes
    found: tuple[int, dict[int, Aggregate]] | None = None
    for pane in range(start, end, pane_ms):
        parts = panes.get(pane)
        if parts is not None:
            if found is not None:
                return None
            found = pane, parts
    if found is None or len(found[1]) != 1:
        return None
    part = found[1].get(0)
    return None if part is None else (found[0], part)


def _stats_of_part(name: str, part: Aggregate, start: int, end: int) -> WindowStats:
    """The value of a window whose trades are all in ``part``."""
    return WindowStats(
        name,
        TYPE_LABELS[part.types],
        part.count,
        part.sum_price,
        part.min_price,
        part.max_price,
        part.sum_price / part.count,
        part.volume,
        part.notional / part.volume if part.volume else None,
        start,
        end,
    )


def _one_route(key: bytes) -> int:
    """Every ticker's results to one place (a state not wired to an output)."""
    return 0


class PartitionState:
    """Aggregates one partition's trades into hopping windows (see module docstring).

    ``route`` maps a ticker's key bytes to where its results go (the worker: the output
    partition). It is called once per ticker, and every result carries it.
    """

    def __init__(
        self,
        spec: WindowSpec,
        emit_mode: EmitMode = EmitMode.FINAL,
        retention_ms: int = 0,
        route: Callable[[bytes], int] = _one_route,
    ) -> None:
        self.spec = spec
        self.route = route
        self.emit_mode = emit_mode
        self.retention_ms = retention_ms
        self.stream_time = NO_TIME
        self.emitted_time = NO_TIME
        self.applied_offset = -1
        self._checkpointed_emitted_time = NO_TIME
        self._tickers: dict[str, _Ticker] = {}
        self._pane_tickers: dict[int, dict[str, _Ticker]] = {}  # pane -> its tickers
        self._dirty: dict[str, _Ticker] = {}  # tickers changed since the last checkpoint
        self._meta_dirty = False
        self._fresh_pane = NO_TIME
        self._next_boundary = NO_TIME
        self._advance_clock()

    # --- processing ----------------------------------------------------------------------

    def process(self, records: Sequence[SourceRecord]) -> BatchOutcome:
        """Fold a batch of source records (in offset order) into the panes."""
        outcome = BatchOutcome()
        applied = self.applied_offset
        if not records or records[-1].offset <= applied:
            outcome.replayed = len(records)
            return outcome
        skip = 0
        while records[skip].offset <= applied:  # replayed: only a batch's head can be
            skip += 1
        if skip:
            records = records[skip:]
        dead_letters = outcome.dead_letters
        spec = self.spec
        pane_ms = spec.pane_ms
        tickers = self._tickers
        dirty = self._dirty
        track_changes = self.emit_mode is EmitMode.UPDATE
        stream_time = self.stream_time
        fresh_pane = self._fresh_pane
        decode = decode_value
        type_bits = TYPE_BITS
        replayed = 0
        for record in records:
            offset = record.offset
            key = record.key
            value = record.value
            # The hot path of decode_trade (see trades.decode_value): a trade of a ticker
            # in the state whose record key is the ticker's is valid; anything else (a new
            # ticker, a tombstone, a bad value or key) gets decode_trade's verdict.
            try:
                trade: Trade = decode(value)  # type: ignore[arg-type]  # None raises
                ticker = tickers.get(trade.ticker)
            except Exception:
                trade = ticker = None  # type: ignore[assignment]  # until decode_trade's verdict
            if ticker is None or ticker.key != key:
                try:
                    trade = decode_trade(key, value) if trade is None else checked_trade(key, trade)
                except Rejected as rejected:
                    dead_letters.append(DeadLetter(record, rejected.reason, rejected.detail))
                    continue
            timestamp = record.timestamp
            if timestamp < 0:
                dead_letters.append(
                    DeadLetter(record, Reason.BAD_TIMESTAMP, f"record timestamp {timestamp}")
                )
                continue
            if timestamp > stream_time:
                stream_time = self.stream_time = timestamp
                if stream_time >= self._next_boundary:
                    self._advance_clock()
                    fresh_pane = self._fresh_pane
            pane = timestamp - timestamp % pane_ms
            if pane >= fresh_pane:
                eligibility = 0
            else:
                found = spec.eligibility(pane, stream_time)
                if found is None:
                    outcome.late += 1
                    dead_letters.append(
                        DeadLetter(
                            record,
                            Reason.LATE,
                            f"every window of timestamp {timestamp} closed "
                            f"(stream time {stream_time})",
                        )
                    )
                    continue
                eligibility = found
            name = trade.ticker
            if ticker is None:
                ticker = tickers[name] = _Ticker(key=name.encode())
            elif offset <= ticker.applied_offset:
                replayed += 1
                continue
            panes = ticker.panes
            by_eligibility = panes.get(pane)
            if by_eligibility is None:
                by_eligibility = panes[pane] = {}
                self._pane_tickers.setdefault(pane, {})[name] = ticker
            # The fold of a trade into its part: inlined, since a method call per trade was
            # 4% of a dense trade's instructions; a new part is made with the trade in it.
            price = trade.price
            size = trade.size
            agg = by_eligibility.get(eligibility)
            if agg is None:
                by_eligibility[eligibility] = Aggregate(
                    1, price, price, price, size, price * size, type_bits[trade.type]
                )
            else:
                agg.count += 1
                agg.sum_price += price
                if price < agg.min_price:
                    agg.min_price = price
                if price > agg.max_price:
                    agg.max_price = price
                agg.volume += size
                agg.notional += price * size
                agg.types |= type_bits[trade.type]
            ticker.applied_offset = offset
            if track_changes:
                changed = ticker.changed.get(pane)
                if changed is None or eligibility < changed:
                    ticker.changed[pane] = eligibility
            dirty[name] = ticker
        outcome.aggregated = len(records) - replayed - len(dead_letters)
        outcome.replayed = skip + replayed
        self.applied_offset = records[-1].offset
        self._meta_dirty = True
        return outcome

    def close_idle(self) -> bool:
        """Move stream time past every open window, as if time went on without trades.

        Returns whether the clock moved (there were open windows holding data).
        """
        if not self._pane_tickers:
            return False
        newest_close = self.spec.last_close_of_pane(max(self._pane_tickers))
        if newest_close <= self.stream_time:
            return False
        self.stream_time = newest_close
        self._meta_dirty = True
        self._advance_clock()
        return True

    def close_windows(self) -> Iterator[WindowResult]:
        """Results of the windows closed since the last call (final mode), oldest window
        first (tickers within a window in no particular order).

        Computed as they are iterated: a second of stream time closes a window of every ticker
        that traded in the five before it (50,000 of them with 100,000 thin tickers), and the
        caller hands them on in slices with the event loop running in between. Iterate them
        all before the state changes again.
        """
        if self.emitted_time == self.stream_time:
            return iter(())
        spec = self.spec
        closed: list[tuple[int, dict[str, _Ticker]]] = []
        if self.emit_mode is EmitMode.FINAL:
            low = spec.first_open_window(self.emitted_time)
            high = spec.first_open_window(self.stream_time)
            for start in sorted(self._window_starts(low, high)):
                closed.append((start, self._tickers_of_window(start)))
        self.emitted_time = self.stream_time
        self._meta_dirty = True
        return self._results(closed)

    # --- checkpoints and restore ---------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """Changed state records since the last checkpoint, and update-mode emissions.

        Panes whose windows all closed more than the retention before the previous
        checkpoint's ``emitted_time`` are dropped here (see the module docstring); a ticker
        left without panes gets a tombstone.
        """
        updates = self._changed_windows() if self.emit_mode is EmitMode.UPDATE else []
        self._expire()
        writes: list[tuple[bytes, bytes | None]] = []
        for name, ticker in self._dirty.items():
            if ticker.panes:
                writes.append(
                    (name.encode(), encode_pane_parts(ticker.applied_offset, ticker.panes))
                )
            else:
                del self._tickers[name]
                writes.append((name.encode(), None))
        self._dirty.clear()
        if writes or self._meta_dirty:
            writes.append((PARTITION_META_KEY, encode_partition_meta(self.meta)))
            self._meta_dirty = False
            self._checkpointed_emitted_time = self.emitted_time
        return Checkpoint(writes, updates)

    @property
    def meta(self) -> PartitionMeta:
        return PartitionMeta(self.stream_time, self.emitted_time, self.applied_offset)

    @property
    def has_pending_changes(self) -> bool:
        return bool(self._dirty) or self._meta_dirty

    @classmethod
    def restore(
        cls,
        records: Iterable[tuple[bytes, bytes]],
        spec: WindowSpec,
        emit_mode: EmitMode = EmitMode.FINAL,
        retention_ms: int = 0,
        route: Callable[[bytes], int] = _one_route,
    ) -> PartitionState:
        """Rebuild from stored records (as written by :meth:`checkpoint`)."""
        state = cls(spec, emit_mode, retention_ms, route)
        for key, value in records:
            if key == PARTITION_META_KEY:
                meta = decode_partition_meta(value)
                state.stream_time = meta.stream_time
                state.emitted_time = state._checkpointed_emitted_time = meta.emitted_time
                state.applied_offset = meta.applied_offset
                continue
            name = key.decode()
            applied_offset, parts = decode_pane_parts(value)
            ticker = state._tickers[name] = _Ticker(applied_offset, key=key)
            for pane, eligibility, agg in parts:
                ticker.panes.setdefault(pane, {})[eligibility] = agg
                state._pane_tickers.setdefault(pane, {})[name] = ticker
        state._advance_clock()
        return state

    # --- queries -------------------------------------------------------------------------

    def windows(self, name: str) -> list[tuple[WindowStats, bool]]:
        """A ticker's open and still-retained closed windows, newest first, with ``closed``."""
        ticker = self._tickers.get(name)
        if ticker is None:
            return []
        spec = self.spec
        starts = sorted(
            {start for pane in ticker.panes for start in spec.windows_of_pane(pane)}, reverse=True
        )
        results = []
        for start in starts:
            close = spec.close_time(start)
            closed = close <= self.stream_time
            if closed and close + self.retention_ms <= self.emitted_time:
                continue  # some of its panes may be gone already
            stats = self._window(name, ticker, start)
            if stats is not None:
                results.append((stats, closed))
        return results

    def open_window_count(self) -> int:
        """Windows, summed over tickers, that hold trades and are still open (for metrics).

        Counted per open window, from the tickers of its panes: a scrape costs a few set
        unions, not a walk over every ticker (seconds of event-loop time with 100,000)."""
        first_open = self.spec.first_open_window(self.stream_time)
        return sum(
            len(self._tickers_of_window(start)) for start in self._window_starts(first_open, inf)
        )

    def __contains__(self, name: object) -> bool:
        return name in self._tickers

    # --- internals -----------------------------------------------------------------------

    def _window_starts(self, low: float, high: float) -> set[int]:
        """Starts in ``[low, high)`` of the windows that hold panes."""
        spec = self.spec
        return {
            start
            for pane in self._pane_tickers
            for start in spec.windows_of_pane(pane)
            if low <= start < high
        }

    def _tickers_of_window(self, start: int) -> dict[str, _Ticker]:
        """The tickers holding a pane of the window that starts at ``start``."""
        panes = self._pane_tickers
        tickers: dict[str, _Ticker] = {}
        for pane in self.spec.panes_of_window(start):
            tickers.update(panes.get(pane, ()))
        return tickers

    def _advance_clock(self) -> None:
        """Recompute the hot-path thresholds after stream time crossed a window close."""
        spec = self.spec
        first_open = spec.first_open_window(self.stream_time)
        self._next_boundary = spec.close_time(first_open)
        # The oldest pane whose every window is still open: first_window_of_pane >= first_open.
        threshold = first_open - spec.advance_ms + spec.size_ms - spec.pane_ms
        self._fresh_pane = threshold - threshold % spec.pane_ms + spec.pane_ms

    def _window(self, name: str, ticker: _Ticker, start: int) -> WindowStats | None:
        """The window's value, or None if it holds no trades."""
        end = start + self.spec.size_ms
        sole = _sole_part(ticker, start, end, self.spec.pane_ms)
        if sole is not None:
            return _stats_of_part(name, sole[1], start, end)
        return self._merged_window(name, ticker, start, end)

    def _merged_window(
        self, name: str, ticker: _Ticker, start: int, end: int
    ) -> WindowStats | None:
        """The window's value from its panes, oldest pane first, each pane's parts by
        eligibility (that order fixes the float rounding, so a window computed again after a
        restore is identical). Merged inline, without intermediate aggregates; a pane with one
        eligible-everywhere part skips the index arithmetic."""
        spec = self.spec
        panes = ticker.panes
        count = volume = types = 0
        sum_price = notional = 0.0
        min_price, max_price = inf, -inf
        for pane in range(start, end, spec.pane_ms):
            by_eligibility = panes.get(pane)
            if not by_eligibility:
                continue
            if len(by_eligibility) == 1 and 0 in by_eligibility:
                parts: Iterable[Aggregate] = by_eligibility.values()
            else:
                index = spec.window_index(pane, start)
                parts = [by_eligibility[e] for e in sorted(by_eligibility) if e <= index]
            for agg in parts:
                count += agg.count
                sum_price += agg.sum_price
                if agg.min_price < min_price:
                    min_price = agg.min_price
                if agg.max_price > max_price:
                    max_price = agg.max_price
                volume += agg.volume
                notional += agg.notional
                types |= agg.types
        if not count:
            return None
        return WindowStats(
            name,
            TYPE_LABELS[types],
            count,
            sum_price,
            min_price,
            max_price,
            sum_price / count,
            volume,
            notional / volume if volume else None,
            start,
            end,
        )

    def _results(self, closed: Iterable[tuple[int, dict[str, _Ticker]]]) -> Iterator[WindowResult]:
        """The results of windows (start, tickers) that hold trades: the hot path of emission.

        A window whose only pane of a ticker holds one eligible-everywhere part has that
        part's values (adding one part to the empty sums gives them exactly). Where that pane
        shares no window with another pane of the ticker (most, when tickers are thin), its
        windows all have that value: it is encoded once for them and kept on the ticker while
        no trade is folded in.
        """
        size = self.spec.size_ms
        pane_ms = self.spec.pane_ms
        for start, tickers in closed:
            end = start + size
            stamp = result_timestamp(end)
            key_end = encode_window_start(start)
            value_end = encode_bounds(start, end)
            for name, ticker in tickers.items():
                if ticker.encoded_at != ticker.applied_offset or not (
                    start <= ticker.encoded_pane < end
                ):
                    if ticker.route < 0:
                        self._set_route(ticker)
                    sole = _sole_part(ticker, start, end, pane_ms)
                    if sole is None:
                        stats = self._merged_window(name, ticker, start, end)
                        if stats is not None:
                            value = encode_value(stats)
                            yield (
                                ticker.key + key_end,
                                value,
                                stamp,
                                None,
                                ticker.route,
                                name,
                                stats.avg_price,
                            )
                        continue
                    pane, part = sole
                    stats = _stats_of_part(name, part, 0, 0)
                    ticker.value_head = encode_value_head(stats)
                    ticker.avg_price = stats.avg_price
                    ticker.encoded_pane = pane
                    ticker.encoded_at = ticker.applied_offset if self._alone(ticker, pane) else None
                yield (
                    ticker.key + key_end,
                    ticker.value_head + value_end,
                    stamp,
                    None,
                    ticker.route,
                    name,
                    ticker.avg_price,
                )

    def _set_route(self, ticker: _Ticker) -> None:
        """Give a ticker the route of its results, at its first result."""
        ticker.route = self.route(ticker.key)

    def _alone(self, ticker: _Ticker, pane: int) -> bool:
        """Whether no other pane of the ticker shares a window with ``pane``."""
        spec = self.spec
        for other in ticker.panes:
            if other != pane:
                low, high = (pane, other) if pane < other else (other, pane)
                if spec.first_window_of_pane(high) <= spec.last_window_of_pane(low):
                    return False
        return True

    def _changed_windows(self) -> list[WindowResult]:
        spec = self.spec
        results = []
        for name, ticker in self._dirty.items():
            starts = {
                start
                for pane, lowest in ticker.changed.items()
                for start in spec.windows_of_pane(pane)[lowest:]
            }
            ticker.changed.clear()
            if ticker.route < 0:
                self._set_route(ticker)
            for start in sorted(starts):
                stats = self._window(name, ticker, start)
                if stats is not None:
                    results.append(encode_result(stats, ticker.route))
        return results

    def _expire(self) -> None:
        spec = self.spec
        horizon = self._checkpointed_emitted_time - self.retention_ms
        for pane in [p for p in self._pane_tickers if spec.last_close_of_pane(p) <= horizon]:
            for name, ticker in self._pane_tickers.pop(pane).items():
                del ticker.panes[pane]
                ticker.changed.pop(pane, None)
                self._dirty[name] = ticker
