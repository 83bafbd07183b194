"""Scenario 9: a loaded machine - the worker shares its cores with busy loops.

Production nodes are oversubscribed: noisy neighbours, CPU limits, a GC storm next door. Here
more busy-loop processes than the machine has cores (started and stopped by their pids) run
from before the worker starts until its last window is read back, so the worker, the broker
and the test's own clients all get a fraction of a core. Slower is allowed, wrong is not: the
worker must start, stay alive and healthy, and every window must be exact, every bad record
dead-lettered exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.integration.harness import Topics, consume, create_topics
from tests.oracle import expected_windows
from tests.scenarios.load import SteadyLoad, expect_exact_windows
from tests.scenarios.statefulset import StatefulSet, pod_env
from tests.scenarios.test_bad_input import (
    assert_no_stall,
    check_conservation,
    known_bad,
    mixed_source,
)

pytestmark = [pytest.mark.broker, pytest.mark.asyncio]

PARTITIONS = 4
#: Twice as many spinning processes as cores: each process gets a third of a core at best.
BUSY_LOOPS = 2 * (os.cpu_count() or 2)
#: The worker yields to the loops too: about a tenth of a loop's share of a core.
WORKER_NICENESS = 10
#: Generous: on a starved machine everything is several times slower than usual.
READY_SECONDS = 300.0
RESULTS_SECONDS = 300.0


@contextlib.contextmanager
def busy_loops(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` processes spinning on the CPU at normal priority until the block ends."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield spinners
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait(30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (from procfs)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def starved(
    kafka: Broker,
    statefulset: Callable[[dict[str, str], int], StatefulSet],
    *,
    rate: float,
    seconds: float,
) -> None:
    topics = Topics.unique("loaded")
    await create_topics(kafka.bootstrap_servers, [topics.trades], PARTITIONS)
    sts = statefulset(pod_env(kafka.bootstrap_servers, topics, PARTITIONS), PARTITIONS)
    source = mixed_source(known_bad(), every=20, seed=9)
    load = SteadyLoad(kafka.bootstrap_servers, topics.trades, rate=rate, source=source, seed=9)
    began = time.monotonic()
    with busy_loops(BUSY_LOOPS) as spinners:
        try:
            await asyncio.to_thread(sts.scale_to, 1)
            worker = sts.pod(0).process
            assert worker is not None
            os.setpriority(os.PRIO_PROCESS, worker.pid, WORKER_NICENESS)
            ready = await asyncio.to_thread(sts.wait_ready, [0], READY_SECONDS)
            await load.start()
            await load.run_for(seconds)
            inputs = await load.stop()
            verdict = await expect_exact_windows(
                kafka.bootstrap_servers,
                topics,
                inputs,
                within=RESULTS_SECONDS,
                explain=sts.diagnosis,
            )
            expected = expected_windows(inputs, 5000, 1000)
            rejected = len(expected.invalid) + len(expected.late)
            dead = await consume(
                kafka.bootstrap_servers,
                topics.dlq,
                done=lambda r: len(r) >= rejected,
                within=RESULTS_SECONDS,
            )
            worker_cpu = cpu_seconds(worker.pid)
            spinner_cpu = sum(cpu_seconds(spinner.pid) for spinner in spinners)
        finally:
            await load.close()
    wall = time.monotonic() - began
    await asyncio.to_thread(assert_no_stall, sts)
    check_conservation(sts, inputs, expected.invalid, expected.late, dead, topics.trades)
    assert sts.pod(0).process is worker, "the worker was restarted"
    assert "Crashed" not in sts.log_since_start(0), sts.pod(0).log_tail()
    print(
        f"{BUSY_LOOPS} busy loops on {os.cpu_count()} cores for {wall:.0f} s: worker ready "
        f"after {ready[0]:.1f} s, {worker_cpu:.1f} CPU s (the loops {spinner_cpu:.0f} CPU s); "
        f"{len(inputs)} records, slowest ack {load.slowest_ack:.1f} s, {verdict.windows} "
        f"windows exact, {rejected} dead-lettered once each"
    )


@pytest.mark.timeout(900)
async def test_exact_while_sharing_the_cores_with_busy_loops(
    kafka: Broker, statefulset: Callable[[dict[str, str], int], StatefulSet]
) -> None:
    await starved(kafka, statefulset, rate=400, seconds=15)


@pytest.mark.soak
@pytest.mark.timeout(1800)
async def test_exact_while_sharing_the_cores_with_busy_loops_soak(
    kafka: Broker, statefulset: Callable[[dict[str, str], int], StatefulSet]
) -> None:
    await starved(kafka, statefulset, rate=1500, seconds=300)
