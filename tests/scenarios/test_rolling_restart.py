"""Scenario 5: a rolling restart of every pod with SIGTERM, one at a time, under load.

Each pod must exit 0 well within Kubernetes' default grace period (30 s) - otherwise the
kubelet SIGKILLs it - and come back on its volume; the windows stay exact throughout.
"""

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
GRACE_PERIOD_SECONDS = 30


async def rolling_restart(
    kafka: Broker,
    statefulset: Callable[[dict[str, str], int], StatefulSet],
    *,
    replicas: int,
    rounds: int,
    rate: float,
    hold: float,
) -> None:
    topics = Topics.unique("roll")
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    sts = statefulset(pod_env(kafka.bootstrap_servers, topics, PARTITIONS), PARTITIONS)
    await asyncio.to_thread(sts.scale_to, replicas)
    await asyncio.to_thread(sts.wait_settled)
    load = await SteadyLoad(kafka.bootstrap_servers, topics.trades, rate=rate, seed=5).start()
    exits: list[tuple[str, int, float, float]] = []
    try:
        await load.run_for(hold)
        for _ in range(rounds):
            for i in reversed(range(replicas)):  # the StatefulSet controller's order
                code, seconds = await asyncio.to_thread(sts.stop, i, 60.0)
                sts.start(i)
                ready = (await asyncio.to_thread(sts.wait_ready, [i]))[i]
                await asyncio.to_thread(sts.wait_settled)
                exits.append((sts.pod(i).name, code, seconds, ready))
                await load.run_for(hold)
        inputs = await load.stop()
        for name, code, seconds, ready in exits:
            print(f"{name}: exit {code} after SIGTERM in {seconds:.1f} s, ready in {ready:.1f} s")
        for name, code, seconds, _ in exits:
            assert code == 0, f"{name} exited with {code} on SIGTERM"
            assert seconds < GRACE_PERIOD_SECONDS, f"{name} needed {seconds:.1f} s to stop"
        await expect_exact_windows(kafka.bootstrap_servers, topics, inputs, explain=sts.diagnosis)
    finally:
        await load.close()


async def test_rolling_restart_under_load(
    kafka: Broker, statefulset: Callable[[dict[str, str], int], StatefulSet]
) -> None:
    await rolling_restart(kafka, statefulset, replicas=3, rounds=1, rate=1500, hold=2)


@pytest.mark.soak
@pytest.mark.timeout(1800)
async def test_rolling_restart_soak(
    kafka: Broker, statefulset: Callable[[dict[str, str], int], StatefulSet]
) -> None:
    await rolling_restart(kafka, statefulset, replicas=3, rounds=5, rate=3000, hold=10)
