"""Scenario 6: the broker restarts mid-stream; the pods reconnect and go on by themselves.

Uses a broker of its own (module scope), never the session broker other tests share. The
load keeps going: its sends wait (acks=all, idempotent) while the broker is away. Nothing is
done to the pods: they must ride it out, be ready again, and the windows must stay exact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from tests.integration.harness import Topics, create_topics
from tests.scenarios.load import SteadyLoad, expect_exact_windows
from tests.scenarios.statefulset import StatefulSet, pod_env
from tradestats.devbroker import LocalKafka

pytestmark = [pytest.mark.broker, pytest.mark.asyncio]

PARTITIONS = 4
PROCESSED = "tradestats_trades_processed_total"


@pytest.fixture(scope="module")
def dedicated_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker only this module uses, so restarting it disturbs no other test."""
    broker = LocalKafka(tmp_path_factory.mktemp("dedicated-kafka"), heap="512m")
    broker.start(timeout=180)
    try:
        yield broker
    finally:
        broker.stop()


def bounce(broker: LocalKafka, how: str) -> float:
    """Restart the broker process; returns how long it was away (seconds)."""
    started = time.monotonic()
    if how == "sigterm":
        broker.restart(timeout=120)
    else:
        broker.kill()
        broker.start(timeout=120)
    return time.monotonic() - started


async def broker_restarts(
    broker: LocalKafka,
    statefulset: Callable[[dict[str, str], int], StatefulSet],
    *,
    how: str,
    restarts: int,
    rate: float,
    hold: float,
) -> None:
    bootstrap = broker.bootstrap_servers
    topics = Topics.unique(f"bounce-{how}")
    await create_topics(bootstrap, [topics.trades], PARTITIONS)
    sts = statefulset(pod_env(bootstrap, topics, PARTITIONS), PARTITIONS)
    await asyncio.to_thread(sts.scale_to, 2)
    await asyncio.to_thread(sts.wait_settled)
    load = await SteadyLoad(bootstrap, topics.trades, rate=rate, seed=6).start()
    try:
        await load.run_for(hold)
        for _ in range(restarts):
            processed = await asyncio.to_thread(sts.metric, PROCESSED)
            away = await asyncio.to_thread(bounce, broker, how)
            back = time.monotonic()
            # No manual action: the same processes carry on once the broker is back.
            while await asyncio.to_thread(sts.metric, PROCESSED) <= processed + rate:
                sts.check_alive()
                assert time.monotonic() - back < 120, (
                    f"no progress since the broker came back:\n{sts.log_tails()}"
                )
                await load.run_for(0.5)
            resumed = time.monotonic() - back
            assignment = await asyncio.to_thread(sts.wait_settled)
            print(
                f"broker {how}: away {away:.1f} s, pods progressing {resumed:.1f} s after, "
                f"assignment {assignment}, load paused up to {load.paused_for:.1f} s"
            )
            await load.run_for(hold)
        inputs = await load.stop()
        await expect_exact_windows(bootstrap, topics, inputs)
        sts.check_alive()
        for i in sts.running:
            assert sts.pod(i).get("/health")[0] == 200, sts.pod(i).log_tail()
    finally:
        await load.close()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_broker_restart_mid_stream(
    dedicated_broker: LocalKafka,
    statefulset: Callable[[dict[str, str], int], StatefulSet],
    how: str,
) -> None:
    await broker_restarts(dedicated_broker, statefulset, how=how, restarts=1, rate=1000, hold=3)


@pytest.mark.soak
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_broker_restarts_soak(
    dedicated_broker: LocalKafka,
    statefulset: Callable[[dict[str, str], int], StatefulSet],
    how: str,
) -> None:
    await broker_restarts(dedicated_broker, statefulset, how=how, restarts=5, rate=3000, hold=15)
