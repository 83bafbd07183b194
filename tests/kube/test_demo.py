"""The talk's demo on a real Kubernetes cluster: k8s/overlays/single-node, applied and abused.

Steps (issue 14), one test each, in order, on one deployment:

1. ``kubectl apply -k``: the namespace's ``restricted`` Pod Security level is enforced by the
   API server and admits every pod; everything Ready and every claim Bound within
   ``READY_WITHIN``; and the workers got there without restarting.
2. A known trade set (realistic trades, invalid records, late ones) produced into the in-cluster
   Kafka: every window exact against the brute-force oracle, the dead-letter topic exact,
   ``/stats/{ticker}`` the same through the Service whichever pod answers, and on every pod.
3. ``kubectl delete pod tradestats-1``: back on the same claim, warm (0 changelog records
   restored), results exact; time from delete to Ready measured.
4. The same after deleting its claim too: a cold restore from the changelog; measured.
5. Scale 3 -> 2 -> 3 and ``kubectl rollout restart``, all under load: results exact.
6. The in-cluster Prometheus scraped every worker with ``up == 1`` throughout.

Times are printed (``pytest -s`` or the report of a failed test), never asserted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.integration.harness import consume
from tests.kube.conftest import READY_WITHIN
from tests.kube.stack import Restart, Stack, base_topics, is_ready
from tests.oracle import Record, expected_windows
from tests.scenarios.load import WORKER_DECISIONS, SteadyLoad, expect_exact_windows
from tests.scenarios.test_bad_input import check_conservation, known_bad, mixed_source

pytestmark = [pytest.mark.kube, pytest.mark.timeout(3600)]

TOPICS = base_topics()
PARTITIONS = 6
REPLICAS = 3
RATE = 200  # trades/s: a laptop's cluster runs Kafka, three workers and Prometheus on 2 cores
SETTLE_WITHIN = 600.0


@dataclass
class Demo:
    """What the steps share: every record produced so far, and the measurements."""

    stack: Stack
    records: list[Record] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)
    seed: int = 0

    def load(self, bad_every: int | None = None) -> SteadyLoad:
        """A load that continues the source where the previous one stopped (new seed)."""
        self.seed += 1
        source = mixed_source(known_bad(), bad_every, self.seed) if bad_every else None
        return SteadyLoad(self.stack.kafka, TOPICS.trades, rate=RATE, source=source, seed=self.seed)

    async def produce_for(self, seconds: float, bad_every: int | None = None) -> list[Record]:
        load = await self.load(bad_every).start()
        try:
            await load.run_for(seconds)
            written = await load.stop()
        finally:
            await load.close()
        self.records += written
        return written

    async def expect_exact(self) -> None:
        """Every window of everything produced so far, exact (duplicates only identical)."""
        verdict = await expect_exact_windows(
            self.stack.kafka,
            TOPICS,
            self.records,
            within=SETTLE_WITHIN,
            explain=self._worker_decisions,
        )
        print(
            f"{len(self.records)} trades: {verdict.windows} windows exact, "
            f"{verdict.duplicates} identical duplicates"
        )

    def _worker_decisions(self) -> str:
        """What the workers logged about closing windows, dead letters and partitions."""
        return "\n".join(
            f"{name}: {line}"
            for name in (pod["metadata"]["name"] for pod in self.stack.workers())
            for line in self.stack.log_tail(name, lines=2000).splitlines()
            if WORKER_DECISIONS.search(line)
        )[-20_000:]

    def settle(self, replicas: int = REPLICAS) -> float:
        return self.stack.wait_settled(replicas, PARTITIONS, SETTLE_WITHIN)


@dataclass(frozen=True)
class Scrape:
    """The last scrape of one worker as Prometheus reports it."""

    pod: str
    up: bool
    error: str

    @property
    def refused(self) -> bool:
        """Nothing listened: a pod whose web server has not started yet, or has stopped."""
        return "connection refused" in self.error


class PrometheusWatch:
    """Samples Prometheus' view of every worker target every 5 s in a thread; step 6 judges
    it. The targets API says why a scrape failed, which ``up`` alone does not."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.samples: list[tuple[float, list[Scrape]]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prometheus-watch", daemon=True)

    def start(self) -> PrometheusWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(5.0):
            try:
                targets = self.stack.prometheus("targets", state="active")["activeTargets"]
            except (AssertionError, OSError, KeyError) as exc:
                self.errors.append(f"{time.ctime()}: {exc!r}")
                continue
            scrapes = [
                Scrape(t["labels"]["pod"], t["health"] == "up", t.get("lastError", ""))
                for t in targets
                if t["labels"].get("job") == "kubernetes-pods" and t["health"] != "unknown"
            ]
            self.samples.append((time.monotonic(), scrapes))


@pytest.fixture(scope="module")
def demo(stack: Stack) -> Demo:
    return Demo(stack)


@pytest.fixture(scope="module")
def watch(stack: Stack) -> Iterator[PrometheusWatch]:
    stack.wait("Prometheus ready", lambda: _ready(stack, "app.kubernetes.io/name=prometheus"), 300)
    watch = PrometheusWatch(stack).start()
    yield watch
    watch.stop()


def _ready(stack: Stack, selector: str) -> bool:
    pods = stack.get("pods", "--selector", selector)["items"]
    return bool(pods) and all(is_ready(pod) for pod in pods)


# --- 1: apply ---------------------------------------------------------------------------------


def test_applied_admitted_and_ready(demo: Demo) -> None:
    stack = demo.stack

    def everything_up() -> bool:
        pods = stack.get("pods")["items"]
        claims = stack.get("pvc")["items"]
        job = stack.get("job", "kafka-topics")
        running = [pod for pod in pods if pod["status"].get("phase") != "Succeeded"]
        return (
            len([pod for pod in running if is_ready(pod)]) == REPLICAS + 2  # + Kafka, Prometheus
            and len(running) == REPLICAS + 2
            and len(claims) == REPLICAS + 1
            and all(claim["status"].get("phase") == "Bound" for claim in claims)
            and job["status"].get("succeeded") == 1
        )

    stack.wait(f"all Ready and Bound within {READY_WITHIN:.0f} s", everything_up, READY_WITHIN)
    demo.times["apply -> all Ready"] = time.monotonic() - stack.applied_at
    print(f"apply -> everything Ready: {demo.times['apply -> all Ready']:.0f} s")

    # The API server enforces "restricted" itself: an unhardened pod is refused...
    namespace = stack.cluster.kubectl("get", "namespace", "tradestats", "-o", "json")
    assert '"pod-security.kubernetes.io/enforce": "restricted"' in namespace
    refused = stack.kubectl(
        "run", "psa-probe", "--image=tradestats:0.1.0", "--dry-run=server",
        '--overrides={"spec":{"containers":[{"name":"psa-probe","image":"tradestats:0.1.0",'
        '"securityContext":{"privileged":true}}]}}',
        check=False,
    )  # fmt: skip
    assert "psa-probe" not in refused, f"a privileged pod was admitted: {refused}"
    # ...and every pod of the overlay was admitted (no controller failed to create one).
    events = stack.get("events")["items"]
    failed = [e["message"] for e in events if e.get("reason") == "FailedCreate"]
    assert not failed, failed


def test_first_deployment_starts_without_restarts(demo: Demo) -> None:
    """A worker that starts before Kafka answers should wait, not exit (issue 14)."""
    restarts = {
        pod["metadata"]["name"]: status["restartCount"]
        for pod in demo.stack.workers()
        for status in pod["status"]["containerStatuses"]
    }
    errors = {
        name: [
            line
            for line in demo.stack.log_tail(name, lines=400, previous=True).splitlines()
            if '"level": "error"' in line or "Traceback" in line
        ][:3]
        for name, count in restarts.items()
        if count
    }
    assert not any(restarts.values()), f"workers restarted {restarts}; errors before: {errors}"


# --- 2: known trades --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_known_trades_exact_dead_letters_exact_and_stats_anywhere(
    demo: Demo, watch: PrometheusWatch
) -> None:
    demo.settle()
    written = await demo.produce_for(20, bad_every=40)
    await demo.expect_exact()
    expected = expected_windows(written, 5000, 1000)
    rejected = len(expected.invalid) + len(expected.late)
    assert expected.invalid, "the load carried no invalid records"
    dead = await consume(
        demo.stack.kafka, TOPICS.dlq, done=lambda r: len(r) >= rejected, within=SETTLE_WITHIN
    )
    # produced = aggregated + dead-lettered, and each rejected record dead-lettered once
    check_conservation(demo.stack, written, expected.invalid, expected.late, dead, TOPICS.trades)
    tickers = sorted({ticker for ticker, _ in expected.windows})
    for ticker in tickers[:4]:
        answers = [demo.stack.through_service(f"/stats/{ticker}") for _ in range(12)]
        answers += [demo.stack.worker(pod, f"/stats/{ticker}") for pod in _worker_names(demo)]
        assert all(answer == answers[0] for answer in answers), (ticker, answers)
        assert answers[0][0] == 200, answers[0]


def _worker_names(demo: Demo) -> list[str]:
    return [pod["metadata"]["name"] for pod in demo.stack.workers()]


# --- 3 and 4: a deleted pod, with and without its volume --------------------------------------


def delete_and_wait(demo: Demo, pod: str, *, claim_too: bool) -> Restart:
    restart = demo.stack.replace_pod(pod, claim_too=claim_too, timeout=SETTLE_WITHIN)
    kind = "cold (claim deleted)" if claim_too else "warm (same claim)"
    demo.times[f"delete {kind} -> Ready"] = restart.seconds
    print(
        f"{pod} {kind}: Ready {restart.seconds:.1f} s after the delete, "
        f"{restart.restored:.0f} changelog records restored"
    )
    return restart


@pytest.mark.asyncio
async def test_deleted_pod_comes_back_warm_on_its_volume(
    demo: Demo, watch: PrometheusWatch
) -> None:
    demo.settle()
    restart = await asyncio.to_thread(delete_and_wait, demo, "tradestats-1", claim_too=False)
    assert restart.claim_kept, "the StatefulSet gave the pod a different claim"
    assert restart.restored == 0, f"warm restart restored {restart.restored} changelog records"
    await asyncio.to_thread(demo.settle)
    await demo.produce_for(10)
    await demo.expect_exact()


@pytest.mark.asyncio
async def test_deleted_pod_and_claim_restore_cold_from_the_changelog(
    demo: Demo, watch: PrometheusWatch
) -> None:
    demo.settle()
    restart = await asyncio.to_thread(delete_and_wait, demo, "tradestats-1", claim_too=True)
    assert not restart.claim_kept, "the claim was not replaced"
    assert restart.restored > 0, "a pod on an empty volume restored nothing"
    await asyncio.to_thread(demo.settle)
    await demo.produce_for(10)
    await demo.expect_exact()


# --- 5: scaling and a rolling restart under load ------------------------------------------------


@pytest.mark.asyncio
async def test_scale_and_rollout_restart_under_load(demo: Demo, watch: PrometheusWatch) -> None:
    stack = demo.stack
    demo.settle()
    load = await demo.load().start()
    try:
        await load.run_for(5)
        for replicas in (2, 3):
            stack.kubectl("scale", "statefulset/tradestats", f"--replicas={replicas}")
            seconds = await asyncio.to_thread(demo.settle, replicas)
            demo.times[f"scale to {replicas} -> settled"] = seconds
            print(f"scaled to {replicas}: settled in {seconds:.0f} s")
            await load.run_for(5)
        started = time.monotonic()
        stack.kubectl("rollout", "restart", "statefulset/tradestats")
        await asyncio.to_thread(
            stack.kubectl,
            "rollout",
            "status",
            "statefulset/tradestats",
            f"--timeout={SETTLE_WITHIN:.0f}s",
        )
        await asyncio.to_thread(demo.settle)
        demo.times["rollout restart -> settled"] = time.monotonic() - started
        print(f"rollout restart: settled in {demo.times['rollout restart -> settled']:.0f} s")
        await load.run_for(5)
        demo.records += await load.stop()
    finally:
        await load.close()
    await demo.expect_exact()


# --- 6: Prometheus ----------------------------------------------------------------------------


def test_prometheus_scraped_every_worker_with_up_1_throughout(
    demo: Demo, watch: PrometheusWatch
) -> None:
    """Every scrape of a listening worker succeeded, through every step; scrapes of a pod
    that was not listening (starting, or stopped after SIGTERM) are only counted."""
    watch.stop()
    assert watch.samples, f"Prometheus gave no targets at all; errors: {watch.errors[-5:]}"
    first = watch.samples[0][0]
    failed = [
        (round(t - first), scrape)
        for t, scrapes in watch.samples
        for scrape in scrapes
        if not scrape.up and not scrape.refused
    ]
    refused = sorted(
        {scrape.pod for _, scrapes in watch.samples for scrape in scrapes if scrape.refused}
    )
    print(
        f"Prometheus: {len(watch.samples)} samples; not listening yet or any more: {refused}; "
        f"failed scrapes: {failed}; times {demo.times}"
    )
    assert not failed, f"{len(failed)} failed scrapes of listening workers, e.g. {failed[:5]}"
    last = {scrape.pod: scrape.up for scrape in watch.samples[-1][1]}
    assert last == dict.fromkeys(_worker_names(demo), True), f"last sample: {last}"
