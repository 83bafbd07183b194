"""``docker compose up``, for real (issue 10): the stack users run, checked against the oracle.

One scenario on the package's stack (``compose_stack``: built and started from nothing):

1. every service healthy, the three workers ready (within the fixture's bound);
2. trades the test produces through Kafka's host listener, with explicit timestamps, bad and
   late records among them, beside the stack's own load generator: every window of every
   record on ``trades`` exact on ``trade-stats``, the dead-letter topic exact;
3. every ``tradestats_*`` metric of the README's table in the stack's Prometheus, and every
   query of the Grafana dashboard returning data there;
4. ``kill worker-1``, ``up -d worker-1``: back warm from its volume (0 changelog records
   restored, per its metric), results still exact;
5. ``down`` (volumes kept) with every container stopped by SIGTERM, then ``up``: state kept
   (0 records restored anywhere), results exact;
and, throughout, Prometheus scraping every worker that is meant to be up with ``up == 1``.
Step 6 (nothing left behind) is the fixture's teardown.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition

from tests.compose.conftest import UP_WITHIN_S
from tests.compose.stack import REPO, WORKERS, Stack, UpSampler
from tests.integration.harness import Produced, Topics, consume, consume_quiet, produce
from tests.oracle import Record
from tests.scenarios.load import expect_exact_windows
from tests.unit.test_trades import CASES
from tradestats.core.trades import Reason

pytestmark = [pytest.mark.docker, pytest.mark.timeout(2400)]

#: The topics and application id docker-compose.yml configures.
TOPICS = Topics("tradestats", "trades", "trade-stats", "trades-dlq")
OUR_TICKERS = [f"E2E{i}" for i in range(8)]
RESTORED_ACTIVE = 'tradestats_changelog_records_restored_total{role="active"}'
DASHBOARD = REPO / "k8s" / "monitoring" / "grafana" / "dashboards" / "tradestats.json"
#: What Grafana would put in for the dashboard's variables: every worker, a one-minute rate.
DASHBOARD_VARIABLES = {"$pod": ".*", "$__rate_interval": "1m"}


@pytest.mark.asyncio
async def test_the_stack_is_exact_through_a_killed_worker_and_a_down_up(
    compose_stack: Stack, up_sampler: UpSampler
) -> None:
    stack = compose_stack
    windows: dict[str, int] = {}

    # 1. from nothing: every service healthy, every worker ready
    wait_healthy(stack)

    # 2. the test's own trades, bad and late records among them; 3. metrics and dashboard
    await produce_batch(stack, seed=1)
    check_metrics_table(stack)
    check_dashboard(stack)
    windows["step 2"] = await check_exact(stack)

    # 4. a killed worker comes back warm from its volume
    up_sampler.away("worker-1")
    stack.timed("kill worker-1", "kill", "worker-1")
    started = time.monotonic()
    stack.compose("up", "--detach", "worker-1")
    stack.wait_ready(["worker-1"], within=180)
    stack.timings["killed worker-1 back ready"] = time.monotonic() - started
    up_sampler.back("worker-1")
    assert stack.metric("worker-1", RESTORED_ACTIVE) == 0, stack.logs("worker-1")
    await produce_batch(stack, seed=2)
    windows["step 4"] = await check_exact(stack)

    # 5. down (volumes kept) by SIGTERM alone, then up: the state is kept
    up_sampler.away(*WORKERS)
    since = time.time()
    stack.timed("down", "down")
    assert_stopped_by_sigterm(stack, since, time.time())
    stack.timed("up again", "up", "--detach")
    waiting_since = time.time()
    ready = stack.wait_ready(WORKERS, within=UP_WITHIN_S)
    stack.timings["up again to all ready"] = stack.timings["up again"] + max(ready.values())
    for worker in WORKERS:
        up_sampler.back(worker, since=waiting_since + ready[worker])
        assert stack.metric(worker, RESTORED_ACTIVE) == 0, stack.logs(worker)
    await produce_batch(stack, seed=3)
    windows["step 5"] = await check_exact(stack)

    # 3. Prometheus saw every worker up whenever it was meant to be
    faults = up_sampler.faults()
    assert not faults, f"up == 0 while meant to be up: {faults[:20]}\n{stack.logs(*WORKERS)}"
    for worker in WORKERS:
        assert up_sampler.scrapes(worker) >= 10, (worker, up_sampler.scrapes(worker))
    print(f"windows checked (cumulative): {windows}")
    print(f"scrapes sampled: { {w: up_sampler.scrapes(w) for w in WORKERS} }")


# -- step 1 ------------------------------------------------------------------------------------


def wait_healthy(stack: Stack, within: float = 180.0) -> None:
    """Kafka and the workers healthy (their healthchecks), the topic job done, the rest up."""
    deadline = time.monotonic() + within
    while True:
        services = stack.services()
        states = {
            name: (row["State"], row.get("Health", ""), row["ExitCode"])
            for name, row in services.items()
        }
        healthy = all(states.get(name, ("", "", 0))[1] == "healthy" for name in ("kafka", *WORKERS))
        done = states.get("kafka-init") == ("exited", "", 0)
        running = all(states.get(name, ("",))[0] == "running" for name in ("loadgen", "prometheus"))
        if healthy and done and running:
            return
        assert time.monotonic() < deadline, f"not healthy after {within:g} s: {states}"
        time.sleep(1)


# -- step 2: the test's input, and the check of everything on the topics -----------------------


def trade(ticker: str, kind: str, price: float, size: int, timestamp: int) -> Produced:
    value = {"type": kind, "ticker": ticker, "price": price, "size": size}
    return Produced(ticker.encode(), json.dumps(value).encode(), timestamp)


async def produce_batch(stack: Stack, seed: int) -> list[Record]:
    """Valid trades on the test's tickers, every kind of bad record, and late trades."""
    now = int(time.time() * 1000)
    tickers = [OUR_TICKERS[i % len(OUR_TICKERS)] for i in range(400)]
    batch = [
        trade(
            ticker,
            "BID" if i % 3 else "ASK",
            100 + seed + (i % 17) / 4,
            i % 50,
            now - 3000 + i * 10,
        )
        for i, ticker in enumerate(tickers)
    ]
    batch += [Produced(key, value, now) for key, value, _ in CASES]
    # after the trades above: their partitions' stream time is two minutes ahead of these
    batch += [trade(ticker, "BID", 1.5, 1, now - 120_000) for ticker in OUR_TICKERS]
    return await produce(stack.bootstrap, TOPICS.trades, batch)


async def check_exact(stack: Stack) -> int:
    """Stop the load generator, then check every window and dead letter; returns the windows.

    All of ``trades`` (the load generator's records and the test's) is the oracle's input;
    the load generator is started again afterwards.
    """
    stack.timed("stop loadgen", "stop", "loadgen")
    loadgen = stack.services()["loadgen"]
    assert loadgen["ExitCode"] == 0, stack.logs("loadgen")
    assert re.search(r"sent \d+ trades", stack.logs("loadgen", tail=5)), stack.logs("loadgen")
    inputs = [
        Record(r.partition, r.offset, r.timestamp, r.key, r.value)
        for r in await consume_quiet(stack.bootstrap, TOPICS.trades)
    ]
    try:
        verdict = await expect_exact_windows(stack.bootstrap, TOPICS, inputs, within=180)
    except AssertionError as wrong:
        raise AssertionError(f"{wrong}\n{stack.logs(*WORKERS, tail=300)}") from None
    rejected = [*verdict.expected.invalid, *verdict.expected.late]
    assert verdict.expected.late, "the late trades were not late"
    await consume(stack.bootstrap, TOPICS.dlq, done=lambda r: len(r) >= len(rejected), within=60)
    check_dead_letters(
        await consume_quiet(stack.bootstrap, TOPICS.dlq), rejected, verdict.expected.late
    )
    stack.compose("start", "loadgen")
    await wait_producing(stack, beyond=len(inputs))
    return verdict.windows


async def wait_producing(stack: Stack, beyond: int, within: float = 60.0) -> None:
    """Until ``trades`` holds more than ``beyond`` records: the load generator is producing."""
    consumer = AIOKafkaConsumer(TOPICS.trades, bootstrap_servers=stack.bootstrap)
    await consumer.start()  # subscribed: the topic's metadata is known from here on
    try:
        numbers = consumer.partitions_for_topic(TOPICS.trades) or set()
        partitions = [TopicPartition(TOPICS.trades, number) for number in numbers]
        deadline = time.monotonic() + within
        while sum((await consumer.end_offsets(partitions)).values()) <= beyond:
            assert time.monotonic() < deadline, f"loadgen sends nothing:\n{stack.logs('loadgen')}"
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


def check_dead_letters(
    dead: list[ConsumerRecord], rejected: list[Record], late: list[Record]
) -> None:
    """Each rejected record exactly once, byte for byte, with its reason; nothing else."""
    expected = {(r.partition, r.offset): r for r in rejected}
    reasons = {(key, value): reason.value for key, value, reason in CASES}
    seen: set[tuple[int, int]] = set()
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        origin = (
            int(headers["tradestats.source.partition"]),
            int(headers["tradestats.source.offset"]),
        )
        assert origin not in seen, f"{origin} dead-lettered twice"
        seen.add(origin)
        assert origin in expected, f"{origin} dead-lettered but valid: {record}"
        source = expected[origin]
        assert headers["tradestats.source.topic"] == TOPICS.trades
        assert (record.key, record.value, record.timestamp) == (
            source.key,
            source.value,
            source.timestamp,
        )
        if source in late:
            assert headers["tradestats.reason"] == Reason.LATE.value
        elif (source.key, source.value) in reasons:
            assert headers["tradestats.reason"] == reasons[(source.key, source.value)], headers
    assert seen == expected.keys(), (
        f"{len(expected.keys() - seen)} rejected records not dead-lettered"
    )


# -- step 3: metrics and dashboard against the real Prometheus -----------------------------------


def readme_metrics() -> dict[str, str]:
    """The README's metrics table: name -> type."""
    rows = re.findall(
        r"^\| `(tradestats_\w+)(?:\{[^}]*\})?` \| (\w+) \|", (REPO / "README.md").read_text(), re.M
    )
    assert len(rows) >= 10, "the README's metrics table was not found"
    return dict(rows)


def check_metrics_table(stack: Stack, within: float = 120.0) -> None:
    """Every metric in the table has series in Prometheus (histograms: bucket, sum, count)."""
    wanted = set()
    for name, kind in readme_metrics().items():
        wanted |= (
            {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
        )
    deadline = time.monotonic() + within
    while True:  # the window price gauge appears with the first windows
        found = {
            row["metric"]["__name__"]
            for row in stack.query('group by (__name__) ({__name__=~"tradestats_.+"})')
        }
        if wanted <= found:
            return
        assert time.monotonic() < deadline, f"not in Prometheus: {sorted(wanted - found)}"
        time.sleep(2)


def dashboard_queries(path: Path = DASHBOARD) -> list[str]:
    """Every target expression of every panel (rows included)."""

    def panels(node: dict[str, Any]) -> list[dict[str, Any]]:
        found = []
        for panel in node.get("panels", []):
            found += [panel, *panels(panel)]
        return found

    dashboard = json.loads(path.read_text())
    return [target["expr"] for panel in panels(dashboard) for target in panel.get("targets", [])]


def check_dashboard(stack: Stack, within: float = 120.0) -> None:
    """Each dashboard query, with Grafana's variables filled in, returns data."""
    queries = dashboard_queries()
    assert len(queries) >= 10
    for expression in queries:
        for variable, value in DASHBOARD_VARIABLES.items():
            expression = expression.replace(variable, value)
        assert "$" not in expression, expression
        deadline = time.monotonic() + within
        while not stack.query(expression):
            assert time.monotonic() < deadline, f"no data for {expression}"
            time.sleep(2)
    dashboard = json.loads(DASHBOARD.read_text())
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(METRIC, LABEL)
            parsed = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"])
            assert parsed, variable["definition"]
            metric, label = parsed.groups()
            values = stack.prometheus(f"/api/v1/label/{label}/values", **{"match[]": metric})
            assert sorted(values) == sorted(WORKERS), (variable["name"], values)


# -- step 5 -----------------------------------------------------------------------------------


def assert_stopped_by_sigterm(stack: Stack, since: float, until: float) -> None:
    """Every container that `down` stopped got SIGTERM and never SIGKILL (engine events)."""
    lines = stack.engine.docker(
        "events", "--since", f"{since:.3f}", "--until", f"{until + 1:.3f}",
        "--filter", f"label=com.docker.compose.project={stack.project}",
        "--filter", "event=kill", "--filter", "event=die", "--format", "{{json .}}",
    ).stdout.splitlines()  # fmt: skip
    events = [json.loads(line) for line in lines]
    signals: dict[str, list[str]] = {
        e["Actor"]["Attributes"]["name"]: [] for e in events if e["Action"] == "kill"
    }
    exits: dict[str, str] = {}
    for event in events:
        attributes = event["Actor"]["Attributes"]
        if event["Action"] == "kill":
            signals[attributes["name"]].append(attributes["signal"])
        else:
            exits[attributes["name"]] = attributes["exitCode"]
    assert len(signals) >= 6, f"down stopped too few containers: {signals}"
    assert all(sent == ["15"] for sent in signals.values()), f"not SIGTERM alone: {signals}"
    # Exit codes after a clean shutdown: 0, and Java's 143 (128 + SIGTERM) for the broker.
    for name, code in exits.items():
        assert code == ("143" if name.endswith("-kafka-1") else "0"), (name, code, exits)
    print(f"down: signals {signals}, exit codes {exits}")
