"""Scenario 1: scale out 1 -> 3 and back in 3 -> 1 under continuous load; windows stay exact."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.conftest import Broker
from tests.integration.harness import Topics, create_topics
from tests.scenarios.load import SteadyLoad, expect_exact_windows
from tests.scenarios.statefulset import StatefulSet, pod_env

pytestmark = [pytest.mark.broker, pytest.mark.asyncio]

PARTITIONS = 6
TICKERS = ("MMM", "ABT", "ABBV", "ACN", "ATVI", "AYI")


async def scale_out_and_in(
    kafka: Broker,
    statefulset: Callable[[dict[str, str], int], StatefulSet],
    *,
    rate: float,
    hold: float,
    cycles: int,
) -> None:
    topics = Topics.unique("scale")
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    sts = statefulset(pod_env(kafka.bootstrap_servers, topics, PARTITIONS), PARTITIONS)
    sts.scale_to(1)
    assert sts.wait_settled() == {0: list(range(PARTITIONS))}
    load = await SteadyLoad(kafka.bootstrap_servers, topics.trades, rate=rate, seed=1).start()
    try:
        await load.run_for(hold)
        for _ in range(cycles):
            await asyncio.to_thread(sts.scale_to, 3)
            assignment = await asyncio.to_thread(sts.wait_settled)
            assert sorted(assignment) == [0, 1, 2]
            assert all(assignment.values()), f"a pod got no partition: {assignment}"
            await load.run_for(hold)
            # Interactive queries: any pod answers for any ticker (routed to its owner).
            for ticker in TICKERS:
                answers = {i: await asyncio.to_thread(sts.stats, ticker, i) for i in range(3)}
                for i, (status, body) in answers.items():
                    assert status == 200, (i, ticker, body)
                    assert body["ticker"] == ticker
                assert len({body["partition"] for _, body in answers.values()}) == 1

            stopped = await asyncio.to_thread(sts.scale_to, 1)
            assert sorted(stopped) == [1, 2]
            for i, (code, seconds) in stopped.items():
                assert code == 0, f"tradestats-{i} exited with {code}"
                assert seconds < 30, f"tradestats-{i} took {seconds:.1f} s to stop"
            assert await asyncio.to_thread(sts.wait_settled) == {0: list(range(PARTITIONS))}
            await load.run_for(hold)
        inputs = await load.stop()
        verdict = await expect_exact_windows(
            kafka.bootstrap_servers, topics, inputs, explain=sts.diagnosis
        )
        print(f"{len(inputs)} trades, {verdict.windows} windows, {verdict.duplicates} duplicates")
    finally:
        await load.close()


async def test_scale_out_1_to_3_and_in_to_1_under_load(
    kafka: Broker, statefulset: Callable[[dict[str, str], int], StatefulSet]
) -> None:
    await scale_out_and_in(kafka, statefulset, rate=1500, hold=3, cycles=1)


@pytest.mark.soak
@pytest.mark.timeout(1800)
async def test_scale_out_and_in_soak(
    kafka: Broker, statefulset: Callable[[dict[str, str], int], StatefulSet]
) -> None:
    await scale_out_and_in(kafka, statefulset, rate=3000, hold=20, cycles=5)
