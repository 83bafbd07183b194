"""Delete a worker pod, with and without its volume, at two state sizes: seconds to Ready.

The talk's claim on a real StatefulSet: a pod that comes back on its PersistentVolume is Ready
in seconds whatever its state size (it replays nothing), one that lost its volume restores
its partitions from the changelog first. Run on demand (``-m soak``); the numbers go into
docs/deploy.md:

    .venv/bin/pytest tests/kube/test_recovery_times.py -m soak -s

State is built as in bench/recovery: every ticker gets one trade per 1 s pane, ten panes, so
``tickers x 10`` aggregates stay live (``WINDOW_IDLE_CLOSE_MS`` is an hour: nothing is closed
away while the pods are deleted). The second size continues with the next ten panes: stream
time moves on, the first size's windows close and its panes expire, so the live state is the
second size's alone (the changelog still holds the first's history until it is compacted).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.recovery.kafka import TradeWriter
from tests.kube.stack import Restart, Stack, base_topics

pytestmark = [pytest.mark.kube, pytest.mark.soak, pytest.mark.timeout(3600)]

SETTINGS = {"WINDOW_IDLE_CLOSE_MS": "3600000"}
PARTITIONS = 6
REPLICAS = 3
PANES = 10
SIZES = (10_000, 100_000)  # live aggregates
POD = "tradestats-1"


async def build_state(stack: Stack, aggregates: int, first_pane: int) -> None:
    """Write ten panes from ``first_pane`` on and wait until the workers processed every trade
    and checkpointed."""
    tickers = aggregates // PANES
    before = stack.metric("tradestats_trades_processed_total")
    async with TradeWriter(stack.kafka, base_topics().trades, PARTITIONS, tickers) as writer:
        for pane in range(first_pane, first_pane + PANES):
            await writer.write_pane(pane)
    wanted = before + tickers * PANES
    await asyncio.to_thread(
        stack.wait,
        f"{wanted:.0f} trades processed",
        lambda: stack.metric("tradestats_trades_processed_total") >= wanted,
        900,
    )
    await asyncio.sleep(5)  # a few checkpoints (COMMIT_INTERVAL_MS = 1 s)


@pytest.mark.asyncio
async def test_pod_delete_to_ready_with_and_without_its_volume(stack: Stack) -> None:
    rows = []
    stack.wait_settled(REPLICAS, PARTITIONS, 600)
    for round_, aggregates in enumerate(SIZES):
        await build_state(stack, aggregates, first_pane=round_ * PANES)
        results: dict[str, Restart] = {}
        for kind, claim_too in (("warm", False), ("cold", True)):
            results[kind] = await asyncio.to_thread(
                stack.replace_pod, POD, claim_too=claim_too, timeout=900
            )
            await asyncio.to_thread(stack.wait_settled, REPLICAS, PARTITIONS, 900)
        warm, cold = results["warm"], results["cold"]
        assert warm.claim_kept
        assert not cold.claim_kept
        assert warm.restored == 0, f"warm restart restored {warm.restored} records"
        assert cold.restored > 0
        rows.append(
            f"| {aggregates:,} | {warm.seconds:.1f} s ({warm.restored:.0f} restored) "
            f"| {cold.seconds:.1f} s ({cold.restored:,.0f} restored) |"
        )
    print(f"\n{time.ctime()}\n| live aggregates | with its volume | without |")
    print("| --- | --- | --- |\n" + "\n".join(rows))
