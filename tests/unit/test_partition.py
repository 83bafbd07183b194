"""The partition state against the brute-force oracle, with and without crashes and replays."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from unittest import mock

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.oracle import (
    Expected,
    Record,
    assert_window_values_match,
    expected_windows,
    window_value,
)
from tradestats.core.codec import (
    PARTITION_META_KEY,
    WindowResult,
    WindowStats,
    decode_windowed_key,
)
from tradestats.core.partition import EmitMode, PartitionState
from tradestats.core.trades import Reason
from tradestats.core.windows import WindowSpec

TICKERS = ["MMM", "ABT", "ABBV"]
ROUTES = 3


def route(key: bytes) -> int:
    """Where a ticker's results go, in these tests: by its key's first byte."""
    return key[0] % ROUTES


BAD_VALUES = [
    None,
    b"\xff",
    b"{",
    b"[]",
    b'{"type":"ASK"}',
    b'{"type":"ASK","ticker":"MMM","price":-1,"size":1}',
    b'{"type":"ASK","ticker":"NOT A TICKER","price":1,"size":1}',  # decodes; pattern fails
]


def trade_value(ticker: str, price: float, size: int, kind: str) -> bytes:
    return json.dumps({"type": kind, "ticker": ticker, "price": price, "size": size}).encode()


DENSE_STEPS = (0, 0, 1, 100, 250, 999, 1000, 1001, 3000)
#: Steps of a thin stream: a ticker's panes often share no window (see ``_results``).
THIN_STEPS = (0, 999, 1000, 2500, 4000, 5001, 9000, 11_000)


@st.composite
def record_streams(draw: st.DrawFn, steps: tuple[int, ...] = DENSE_STEPS) -> list[Record]:
    """One partition's records: mostly increasing time, some out of order, some bad."""
    count = draw(st.integers(1, 120))
    records = []
    clock = draw(st.integers(0, 20_000))
    for offset in range(count):
        clock += draw(st.sampled_from(steps))
        # out-of-order: up to ~8 s behind the clock, so some trades are partly or fully late
        lag = draw(st.sampled_from([0, 0, 0, 0, 1, 500, 1000, 2999, 4000, 5000, 8000]))
        timestamp = max(clock - lag, 0)
        if draw(st.integers(0, 9)) == 0:
            value = draw(st.sampled_from(BAD_VALUES))
            key = draw(st.sampled_from([b"MMM", None]))
        else:
            ticker = draw(st.sampled_from(TICKERS))
            price = draw(st.floats(0.5, 10_000, allow_nan=False))
            size = draw(st.integers(0, 99))
            kind = draw(st.sampled_from(["ASK", "ASK", "BID"]))
            value = trade_value(ticker, price, size, kind)
            key = ticker.encode() if draw(st.integers(0, 30)) else b"WRONG"
        records.append(Record(0, offset, timestamp, key, value))
    return records


specs = st.sampled_from(
    [
        WindowSpec(5000, 1000),
        WindowSpec(5000, 1000, 2000),
        WindowSpec(5000, 3000),
        WindowSpec(3000, 3000),
    ]
)


def split(records: list[Record], rng: random.Random) -> list[list[Record]]:
    batches, i = [], 0
    while i < len(records):
        n = rng.randint(1, 15)
        batches.append(records[i : i + n])
        i += n
    return batches


def check_emitted(emitted: list[WindowStats], expected: Expected, spec: WindowSpec) -> None:
    """Every expected window present with the right value; duplicates only if identical."""
    seen: dict[tuple[str, int], WindowStats] = {}
    for stats in emitted:
        key = (stats.ticker, stats.window_start)
        if key in seen:
            assert seen[key] == stats, f"window {key} emitted twice with different values"
        seen[key] = stats
    assert seen.keys() == expected.windows.keys()
    for (ticker, start), trades in expected.windows.items():
        actual = msgspec.to_builtins(seen[(ticker, start)])
        assert_window_values_match(actual, window_value(ticker, start, spec.size_ms, trades))


def decoded(results: Iterable[WindowResult]) -> list[WindowStats]:
    """The values of results as sent, each checked against its key, timestamp, route and
    average price."""
    values = []
    for key, value, timestamp, headers, routed, ticker, avg_price in results:
        stats = msgspec.json.decode(value, type=WindowStats)
        assert decode_windowed_key(key) == (ticker, stats.window_start)
        assert (stats.ticker, stats.avg_price) == (ticker, avg_price)
        assert (timestamp, headers) == (stats.window_end - 1, None)
        assert routed == route(ticker.encode())
        values.append(stats)
    return values


def closed_in_order(state: PartitionState) -> list[WindowStats]:
    """The windows ``close_windows`` returns, checked to come oldest window first (the emit
    path groups its latency samples by window)."""
    closed = decoded(state.close_windows())
    starts = [stats.window_start for stats in closed]
    assert starts == sorted(starts), starts
    return closed


@settings(max_examples=300)
@given(
    st.one_of(record_streams(), record_streams(THIN_STEPS)),
    specs,
    st.randoms(use_true_random=False),
)
def test_final_mode_matches_the_oracle_exactly_once(
    records: list[Record], spec: WindowSpec, rng: random.Random
) -> None:
    state = PartitionState(spec, route=route)
    emitted: list[WindowStats] = []
    dead = []
    for batch in split(records, rng):
        outcome = state.process(batch)
        dead.extend(outcome.dead_letters)
        emitted.extend(closed_in_order(state))
        if rng.random() < 0.3:
            state.checkpoint()
    state.close_idle()
    emitted.extend(closed_in_order(state))

    expected = expected_windows(records, spec.size_ms, spec.advance_ms, spec.grace_ms)
    check_emitted(emitted, expected, spec)
    assert len(emitted) == len(expected.windows)  # exactly once without faults
    assert sorted(d.record.offset for d in dead if d.reason is not Reason.LATE) == [
        r.offset for r in expected.invalid
    ]
    assert sorted(d.record.offset for d in dead if d.reason is Reason.LATE) == [
        r.offset for r in expected.late
    ]


@settings(max_examples=200)
@given(record_streams(), specs, st.randoms(use_true_random=False))
def test_open_window_count_is_the_oracles_windows_not_closed_yet(
    records: list[Record], spec: WindowSpec, rng: random.Random
) -> None:
    state = PartitionState(spec, route=route)
    seen: list[Record] = []
    for batch in split(records, rng):
        state.process(batch)
        seen.extend(batch)
        list(state.close_windows())
        if rng.random() < 0.3:
            state.checkpoint()
        expected = expected_windows(seen, spec.size_ms, spec.advance_ms, spec.grace_ms)
        valid = [r for r in seen if r not in expected.invalid]
        stream_time = max((r.timestamp for r in valid), default=None)
        still_open = [
            window
            for window in expected.windows
            if stream_time is None or window[1] + spec.size_ms + spec.grace_ms > stream_time
        ]
        assert state.open_window_count() == len(still_open), (stream_time, sorted(still_open))
    state.close_idle()
    assert state.open_window_count() == 0


def replay_table(changelog: list[tuple[bytes, bytes | None]]) -> dict[bytes, bytes]:
    """What a restore sees: the changelog (a compacted prefix of it) applied in order."""
    table: dict[bytes, bytes] = {}
    for key, value in changelog:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return table


@settings(max_examples=300)
@given(
    st.one_of(record_streams(), record_streams(THIN_STEPS)),
    specs,
    st.randoms(use_true_random=False),
    st.integers(1, 3),
)
def test_crashes_and_replays_keep_windows_exact(
    records: list[Record], spec: WindowSpec, rng: random.Random, crashes: int
) -> None:
    """Crash at random points; restore from what the changelog holds; replay from the commit.

    Models the worker's protocol: a checkpoint's records are sent only after the results
    emitted before it are acknowledged, and only after the previous checkpoint's records were
    acknowledged (the local store applies them then, so a warm restart sees the same prefix as
    a cold one); offsets are committed only up to the last acknowledged checkpoint; a crash
    loses any unacknowledged results and may cut the in-flight checkpoint anywhere.
    """
    changelog: list[tuple[bytes, bytes | None]] = []
    acknowledged: list[WindowStats] = []
    in_flight: list[WindowStats] = []
    crash_points = sorted(rng.sample(range(len(records) + 1), min(crashes, len(records) + 1)))
    state = PartitionState(spec, route=route)
    durable_length = 0  # changelog records acknowledged
    durable_offset = 0  # first source offset not covered by an acknowledged checkpoint
    committed = 0
    position = 0

    def checkpoint() -> None:
        nonlocal durable_length, durable_offset
        acknowledged.extend(in_flight)
        in_flight.clear()
        durable_length = len(changelog)  # the previous checkpoint is acknowledged first
        changelog.extend(state.checkpoint().writes)
        if rng.random() < 0.6:
            durable_length = len(changelog)
            durable_offset = state.applied_offset + 1

    while True:
        crash_at = crash_points.pop(0) if crash_points else None
        stop = len(records) if crash_at is None else crash_at
        for batch in split(records[position:stop], rng):
            state.process(batch)
            in_flight.extend(decoded(state.close_windows()))
            if rng.random() < 0.4:
                checkpoint()
            if rng.random() < 0.3:
                committed = durable_offset
        position = stop
        if crash_at is None:
            break
        acknowledged.extend(r for r in in_flight if rng.random() < 0.5)
        in_flight.clear()
        del changelog[rng.randint(durable_length, len(changelog)) :]
        durable_length = len(changelog)
        state = PartitionState.restore(replay_table(changelog).items(), spec, route=route)
        in_flight.extend(decoded(state.close_windows()))  # closed, maybe never emitted
        position = committed
    state.close_idle()
    in_flight.extend(decoded(state.close_windows()))
    acknowledged.extend(in_flight)

    expected = expected_windows(records, spec.size_ms, spec.advance_ms, spec.grace_ms)
    check_emitted(acknowledged, expected, spec)


@settings(max_examples=200)
@given(record_streams(), specs, st.randoms(use_true_random=False))
def test_update_mode_emits_each_change_once_per_checkpoint_and_ends_at_the_final_value(
    records: list[Record], spec: WindowSpec, rng: random.Random
) -> None:
    state = PartitionState(spec, EmitMode.UPDATE, route=route)
    latest: dict[tuple[str, int], WindowStats] = {}
    for batch in split(records, rng):
        state.process(batch)
        assert list(state.close_windows()) == []
        if rng.random() < 0.5:
            updates = decoded(state.checkpoint().updates)
            keys = [(u.ticker, u.window_start) for u in updates]
            assert len(keys) == len(set(keys)), "a window emitted twice in one checkpoint"
            latest.update(zip(keys, updates, strict=True))
    latest.update(((u.ticker, u.window_start), u) for u in decoded(state.checkpoint().updates))
    expected = expected_windows(records, spec.size_ms, spec.advance_ms, spec.grace_ms)
    check_emitted(list(latest.values()), expected, spec)


def test_a_worked_example_of_late_and_partly_late_trades() -> None:
    """Default 5 s / 1 s windows, no grace: a trade 4.5 s behind lands only in open windows."""
    spec = WindowSpec(5000, 1000)
    state = PartitionState(spec, route=route)
    mmm = [
        Record(0, 0, 10_000, b"MMM", trade_value("MMM", 10.0, 1, "ASK")),
        Record(0, 1, 14_000, b"MMM", trade_value("MMM", 20.0, 2, "BID")),
        # stream time 14 000: windows starting <= 9 000 are closed. 9 500 belongs to windows
        # 5 000..9 000, all closed: late. 10 500 belongs to 6 000..10 000; only 10 000 is open.
        Record(0, 2, 9_500, b"MMM", trade_value("MMM", 99.0, 3, "ASK")),
        Record(0, 3, 10_500, b"MMM", trade_value("MMM", 30.0, 4, "ASK")),
    ]
    outcome = state.process(mmm)
    assert outcome.aggregated == 3
    assert outcome.late == 1
    assert [d.record.offset for d in outcome.dead_letters] == [2]
    closed = decoded(state.close_windows())
    assert [(w.window_start, w.count_trades) for w in closed] == [
        (6000, 1),
        (7000, 1),
        (8000, 1),
        (9000, 1),
    ]
    state.close_idle()
    rest = {w.window_start: w for w in decoded(state.close_windows())}
    assert rest[10_000].count_trades == 3  # 10 000, 10 500 (partly late) and 14 000
    assert rest[10_000].type == "MIXED"
    assert rest[10_000].min_price == 10.0
    assert rest[10_000].max_price == 30.0
    assert rest[10_000].volume == 7
    assert rest[10_000].vwap == (10.0 * 1 + 20.0 * 2 + 30.0 * 4) / 7
    assert rest[11_000].count_trades == 1
    assert rest[11_000].type == "BID"


def test_checkpoint_writes_changed_tickers_then_the_partition_record_and_tombstones() -> None:
    spec = WindowSpec(5000, 1000)
    state = PartitionState(spec, route=route)
    state.process([Record(0, 0, 1000, b"MMM", trade_value("MMM", 1.0, 1, "ASK"))])
    writes = state.checkpoint().writes
    assert [key for key, _ in writes] == [b"MMM", PARTITION_META_KEY]
    assert state.checkpoint().writes == []  # nothing changed
    # one trade 20 s later closes every window MMM had; its panes go one checkpoint later,
    # once a stored partition record says those windows were emitted
    state.process([Record(0, 1, 21_000, b"ABT", trade_value("ABT", 1.0, 1, "ASK"))])
    state.close_windows()
    assert [key for key, _ in state.checkpoint().writes] == [b"ABT", PARTITION_META_KEY]
    assert state.checkpoint().writes == [(b"MMM", None), (PARTITION_META_KEY, mock.ANY)]
    assert "MMM" not in state


def test_restore_round_trips_the_state() -> None:
    spec = WindowSpec(5000, 1000)
    rng = random.Random(7)
    records = [
        Record(
            0,
            i,
            1000 * i + rng.randint(-3000, 0),
            t.encode(),
            trade_value(t, rng.uniform(1, 9), i, "ASK"),
        )
        for i, t in enumerate(TICKERS * 5)
    ]
    state = PartitionState(spec, retention_ms=5000)
    state.process(records)
    state.close_windows()
    stored = dict(state.checkpoint().writes)
    restored = PartitionState.restore(stored.items(), spec, retention_ms=5000)
    assert restored.meta == state.meta
    for ticker in TICKERS:
        assert restored.windows(ticker) == state.windows(ticker)
        assert state.windows(ticker)
    # the replayed records are recognised and skipped
    assert restored.process(records).replayed == len(records)


def test_windows_query_lists_open_and_retained_closed_windows_newest_first() -> None:
    spec = WindowSpec(5000, 1000)
    state = PartitionState(spec, retention_ms=2000)
    state.process([Record(0, 0, 10_000, b"MMM", trade_value("MMM", 5.0, 1, "ASK"))])
    state.process([Record(0, 1, 16_500, b"ABT", trade_value("ABT", 5.0, 1, "ASK"))])
    state.close_windows()
    # MMM's windows 6 000..10 000 close at 11 000..15 000; stream time 16 500, retention 2 s:
    # windows closing after 14 500 are still listed (only 10 000), and closed.
    listed = [(w.window_start, closed) for w, closed in state.windows("MMM")]
    assert listed == [(10_000, True)]
    assert state.windows("NOPE") == []


def test_dead_letters_keep_the_original_record() -> None:
    state = PartitionState(WindowSpec(5000, 1000))
    bad = Record(0, 5, 1000, b"MMM", b"\x00garbage")
    outcome = state.process([bad])
    assert outcome.dead_letters[0].record is bad
    assert outcome.dead_letters[0].reason is Reason.NOT_JSON
    assert state.applied_offset == 5
    assert state.stream_time < 0  # invalid records do not advance stream time


def test_replayed_records_at_or_below_the_applied_offset_are_skipped() -> None:
    state = PartitionState(WindowSpec(5000, 1000))
    records = [Record(0, i, 1000 + i, b"MMM", trade_value("MMM", 1.0, 1, "ASK")) for i in range(8)]
    assert state.process(records[:5]).aggregated == 5
    again = state.process(records[2:5])
    assert (again.aggregated, again.replayed) == (0, 3)
    # a batch that starts with replayed records (a fetch from the last commit)
    overlap = state.process(records[3:])
    assert (overlap.aggregated, overlap.replayed) == (3, 2)
    assert state.applied_offset == 7
    (stats,) = [stats for stats, _ in state.windows("MMM") if stats.window_start == 0]
    assert stats.count_trades == 8


def test_records_of_a_known_ticker_are_still_checked_against_their_key() -> None:
    """Once a ticker was seen valid, its trades take a faster check: one that still rejects
    a missing or different key, and invalid values."""
    state = PartitionState(WindowSpec(5000, 1000))
    value = trade_value("MMM", 1.0, 1, "ASK")
    records = [
        Record(0, 0, 1000, b"MMM", value),
        Record(0, 1, 1001, None, value),
        Record(0, 2, 1002, b"ABT", value),
        Record(0, 3, 1003, b"mmm", value),
        Record(0, 4, 1004, b"MMM", b'{"type":"ASK","ticker":"MMM","price":0,"size":1}'),
        Record(0, 5, 1005, b"MMM", None),
        Record(0, 6, 1006, b"MMM", value),
    ]
    outcome = state.process(records)
    assert outcome.aggregated == 2
    assert [(d.record.offset, d.reason) for d in outcome.dead_letters] == [
        (1, Reason.KEY_MISSING),
        (2, Reason.KEY_MISMATCH),
        (3, Reason.KEY_MISMATCH),
        (4, Reason.BAD_PRICE),
        (5, Reason.TOMBSTONE),
    ]
