"""Scenario 7: bad input at volume, mixed into normal load.

Every kind of invalid record the validator knows (the unit tests' ``CASES``: 40+ records,
every rejection reason) plus payloads fuzzed with hypothesis - raw bytes, arbitrary JSON,
near-miss trades (wrong types, non-finite or huge numbers, missing fields, truncated JSON,
mismatched keys) - are sprinkled among realistic trades. The pods must not crash or stall,
every window must be exact, and nothing may vanish: produced = aggregated + dead-lettered, on
the pods' counters and on the dead-letter topic, where each rejected record appears exactly
once, byte for byte, with its reason.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from tests.conftest import Broker
from tests.integration.harness import Topics, consume, create_topics
from tests.oracle import Record, expected_windows, parse_trade
from tests.scenarios.load import KeyValue, SteadyLoad, expect_exact_windows, trade_source
from tests.scenarios.statefulset import StatefulSet, pod_env
from tests.unit.test_trades import CASES
from tradestats.core.trades import Reason

PARTITIONS = 4
REASONS = {reason.value for reason in Reason}

# --- the fuzzed corpus -----------------------------------------------------------------------

_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),  # NaN and infinities too: json.dumps writes NaN / Infinity
        st.text(max_size=12),
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_tickers = st.sampled_from(["MMM", "ABT", "ABBV", "BRK.B", "", "M M", "X" * 33, "mmm\n"])
_near_trade = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.sampled_from(["ASK", "BID", "ask", "SELL", ""]), _json),
        "ticker": st.one_of(_tickers, st.text(max_size=40), _json),
        "price": st.one_of(
            st.floats(), st.integers(min_value=-(2**1100), max_value=2**1100), _json
        ),
        "size": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(), _json),
        "venue": _json,
    },
)


@st.composite
def fuzzed_record(draw: st.DrawFn) -> KeyValue:
    """A payload that is probably not a valid trade, and a key that may or may not match."""
    shape = draw(st.sampled_from(["bytes", "json", "trade", "truncated"]))
    ticker: object = None
    if shape == "bytes":
        value = draw(st.binary(max_size=160))
    elif shape == "json":
        value = json.dumps(draw(_json)).encode()
    else:
        obj = draw(_near_trade)
        ticker = obj.get("ticker")
        value = json.dumps(obj).encode()
        if shape == "truncated":
            value = value[: draw(st.integers(0, max(0, len(value) - 1)))]
    keys = [st.none(), st.binary(max_size=12)]
    if isinstance(ticker, str):
        keys.append(st.just(ticker.encode()))
    key = draw(st.one_of(*keys))
    return key, value


def fuzzed_corpus(count: int) -> list[KeyValue]:
    """``count`` invalid records drawn by hypothesis, the same ones on every run.

    The ``@given`` function below is only a collector: hypothesis' engine draws the examples
    (``derandomize``: a fixed seed, no example database), and records that happen to be valid
    trades are discarded with ``assume`` (the oracle decides what is valid).
    """
    drawn: list[KeyValue] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(fuzzed_record())
    def collect(record: KeyValue) -> None:
        assume(parse_trade(*record) is None)
        drawn.append(record)

    collect()
    assert len(drawn) >= count // 2, f"hypothesis drew only {len(drawn)} invalid records"
    return drawn


def known_bad() -> list[KeyValue]:
    """The unit tests' invalid records, one of every kind the validator tells apart."""
    return [(key, value) for key, value, _ in CASES]


def mixed_source(bad: list[KeyValue], every: int, seed: int) -> Iterator[KeyValue]:
    """Realistic trades with one bad record (cycling through ``bad``) every ``every`` records."""
    rng = random.Random(seed)
    shuffled = list(bad)
    rng.shuffle(shuffled)
    bad_cycle = itertools.cycle(shuffled)
    for n, good in enumerate(trade_source(seed=seed)):
        if n % every == 0:
            yield next(bad_cycle)
        yield good


# --- the scenario ------------------------------------------------------------------------------


def test_the_bad_corpus_covers_every_reason_and_enough_kinds() -> None:
    """Not a broker test: the corpus itself (at least 25 kinds, every reason but two)."""
    kinds = known_bad()
    assert len(kinds) >= 25
    assert len(set(kinds)) == len(kinds)
    # LATE depends on timing, BAD_TIMESTAMP cannot be produced (Kafka stamps negative times)
    assert {reason for _, _, reason in CASES} == set(Reason) - {Reason.LATE, Reason.BAD_TIMESTAMP}
    fuzzed = fuzzed_corpus(300)
    assert fuzzed == fuzzed_corpus(300), "the fuzzed corpus must be the same on every run"
    assert len(set(fuzzed)) > 100


async def bad_input_at_volume(
    kafka: Broker,
    statefulset: Callable[[dict[str, str], int], StatefulSet],
    *,
    rate: float,
    seconds: float,
    fuzzed: int,
) -> None:
    topics = Topics.unique("bad")
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    sts = statefulset(pod_env(kafka.bootstrap_servers, topics, PARTITIONS), PARTITIONS)
    await asyncio.to_thread(sts.scale_to, 2)
    await asyncio.to_thread(sts.wait_settled)
    bad = known_bad() + fuzzed_corpus(fuzzed)
    source = mixed_source(bad, every=6, seed=7)
    load = SteadyLoad(kafka.bootstrap_servers, topics.trades, rate=rate, source=source)
    await load.start()
    try:
        await load.run_for(seconds)
        sts.check_alive()
        inputs = await load.stop()
        expected = expected_windows(inputs, 5000, 1000)
        rejected = [*expected.invalid, *expected.late]
        assert len(expected.invalid) >= len(inputs) // 8, "the load was not mixed as planned"

        await expect_exact_windows(kafka.bootstrap_servers, topics, inputs, explain=sts.diagnosis)
        dead = await consume(
            kafka.bootstrap_servers, topics.dlq, done=lambda r: len(r) >= len(rejected), within=60
        )
        await asyncio.to_thread(assert_no_stall, sts)
        check_conservation(sts, inputs, expected.invalid, expected.late, dead, topics.trades)
        reasons = Counter(
            v.decode() for r in dead for k, v in r.headers if k == "tradestats.reason"
        )
        print(
            f"{len(inputs)} records: {len(inputs) - len(rejected)} aggregated, "
            f"{len(expected.invalid)} invalid, {len(expected.late)} late; reasons {dict(reasons)}"
        )
    finally:
        await load.close()


def assert_no_stall(sts: StatefulSet) -> None:
    """Every pod alive, healthy, and caught up with its input."""
    sts.check_alive()
    for i in sts.running:
        assert sts.pod(i).get("/health")[0] == 200, sts.pod(i).log_tail()
        lag = {
            k: v for k, v in sts.pod(i).metrics().items() if k.startswith("tradestats_consumer_lag")
        }
        assert lag, f"tradestats-{i} reports no consumer lag"
        assert not any(lag.values()), f"tradestats-{i} lags: {lag}"


def check_conservation(
    sts: StatefulSet,
    inputs: list[Record],
    invalid: list[Record],
    late: list[Record],
    dead: list,
    source_topic: str,
) -> None:
    """produced = aggregated + dead-lettered, per the pods' counters and the DLQ topic."""
    aggregated = sts.metric("tradestats_trades_processed_total")
    by_reason = {
        reason: sts.metric(f'tradestats_trades_dead_lettered_total{{reason="{reason}"}}')
        for reason in REASONS
    }
    dead_lettered = sum(by_reason.values())
    assert aggregated + dead_lettered == len(inputs), (aggregated, by_reason, len(inputs))
    assert dead_lettered == len(invalid) + len(late), by_reason
    assert by_reason["late"] == len(late) == sts.metric("tradestats_trades_late_total")

    # The dead-letter topic: each rejected record once, byte for byte, with its origin.
    assert len(dead) == dead_lettered
    expected = {(r.partition, r.offset): r for r in [*invalid, *late]}
    reasons = {(key, value): reason.value for key, value, reason in CASES}
    counted: Counter[str] = Counter()
    seen = set()
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        origin = (
            int(headers["tradestats.source.partition"]),
            int(headers["tradestats.source.offset"]),
        )
        assert origin not in seen, f"{origin} dead-lettered twice"
        seen.add(origin)
        assert headers["tradestats.source.topic"] == source_topic
        source = expected[origin]
        assert (record.key, record.value, record.timestamp) == (
            source.key,
            source.value,
            source.timestamp,
        )
        reason = headers["tradestats.reason"]
        assert reason in REASONS
        assert headers["tradestats.error"]
        if source in late:
            assert reason == "late"
        elif (source.key, source.value) in reasons:
            assert reason == reasons[(source.key, source.value)], (source, headers)
        counted[reason] += 1
    assert seen == expected.keys()
    assert counted == {reason: n for reason, n in by_reason.items() if n}


@pytest.mark.broker
@pytest.mark.asyncio
async def test_bad_input_at_volume_is_dead_lettered_and_conserved(
    kafka: Broker, statefulset: Callable[[dict[str, str], int], StatefulSet]
) -> None:
    await bad_input_at_volume(kafka, statefulset, rate=2000, seconds=6, fuzzed=400)


@pytest.mark.broker
@pytest.mark.asyncio
@pytest.mark.soak
@pytest.mark.timeout(1800)
async def test_bad_input_at_volume_soak(
    kafka: Broker, statefulset: Callable[[dict[str, str], int], StatefulSet]
) -> None:
    await bad_input_at_volume(kafka, statefulset, rate=4000, seconds=120, fuzzed=5000)
