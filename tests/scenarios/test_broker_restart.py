"""Scenario 6: the broker restarts mid-stream; the pods reconnect and go on by themselves.

Uses a broker of its own (module scope), never the session broker other tests share. The
load keeps going: like a real producer it keeps stamping trades while the broker is away and
its client buffers them (acks=all, idempotent) until it is back. Nothing is done to the pods:
they must ride it out, be ready again, and the windows must stay exact - an outage is not
idle input, so no window may close early.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from devtools.kafka import LocalKafka
from tests.integration.harness import Topics, create_topics
from tests.scenarios.load import SteadyLoad, expect_exact_windows
from tests.scenarios.statefulset import StatefulSet, pod_env

pytestmark = [pytest.mark.broker, pytest.mark.asyncio, pytest.mark.usefixtures("quiet_clients")]

PARTITIONS = 4
PROCESSED = "tradestats_trades_processed_total"
#: Seconds the last windows may take after the load stops. If an outage closed windows early,
#: windows made only of late trades never come; on a slow machine the last ones take a while
#: after an unclean broker restart.
LAST_WINDOWS_WITHIN = 90


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
    # The outages here (5-10 s) outlast the pods' idle close (2 s): windows must stay open
    # through them all the same, the input did not stop.
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
                f"assignment {assignment}, slowest ack {load.slowest_ack:.1f} s"
            )
            await load.run_for(hold)
        inputs = await load.stop()
        await expect_exact_windows(
            bootstrap, topics, inputs, within=LAST_WINDOWS_WITHIN, explain=sts.diagnosis
        )
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


async def test_windows_stay_open_while_the_broker_is_away(
    dedicated_broker: LocalKafka, statefulset: Callable[[dict[str, str], int], StatefulSet]
) -> None:
    """A one-second lull, then the broker dies for longer than WINDOW_IDLE_CLOSE_MS while
    producers keep producing into their buffers: the partitions were never idle - their input
    was unreachable - so no window may close before that input is read.

    The lull (shorter than the idle-close time) lets the pod checkpoint everything, so its
    timer is not stuck in a checkpoint when the broker goes: this makes the outcome
    deterministic instead of a race with the first fetch after the broker is back.
    """
    bootstrap = dedicated_broker.bootstrap_servers
    topics = Topics.unique("outage")
    await create_topics(bootstrap, [topics.trades], PARTITIONS)
    sts = statefulset(pod_env(bootstrap, topics, PARTITIONS), PARTITIONS)
    await asyncio.to_thread(sts.scale_to, 1)
    await asyncio.to_thread(sts.wait_settled)
    idle_close = int(sts.env["WINDOW_IDLE_CLOSE_MS"]) / 1000
    load = await SteadyLoad(bootstrap, topics.trades, rate=1000, seed=12).start()
    try:
        await load.run_for(3)
        load.pause()
        await asyncio.sleep(idle_close / 2)
        await asyncio.to_thread(dedicated_broker.kill)
        load.resume()
        await asyncio.sleep(idle_close * 2)
        await asyncio.to_thread(dedicated_broker.start, timeout=120)
        await load.run_for(3)
        inputs = await load.stop()
        await expect_exact_windows(
            bootstrap, topics, inputs, within=LAST_WINDOWS_WITHIN, explain=sts.diagnosis
        )
        sts.check_alive()
    finally:
        await load.close()
