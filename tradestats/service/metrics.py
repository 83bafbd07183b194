"""Prometheus metrics of one worker, on a registry of its own.

A dedicated registry (not the process-global default) lets tests build several apps in one
process without duplicate-timeseries errors. Counters are updated once per batch or per
checkpoint, never per trade. Values that are cheap to read but costly to track (open windows,
consumer lag, recovery progress) are computed when Prometheus scrapes.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from tradestats.core.trades import Reason

__all__ = ["Metrics"]

PREFIX = "tradestats"
_T = TypeVar("_T")
log = logging.getLogger(__name__)

# `*_created` series double the exposition and no dashboard here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class _ScrapeTimeGauges(Collector):
    """Gauges whose values are read from the worker when Prometheus scrapes.

    A scrape must answer at every moment of the worker's life - starting, rebalancing,
    restoring, stopping - when some of these values cannot be read: such a value is left out
    of that scrape (and logged at debug level), the rest is served.
    """

    def __init__(
        self,
        open_windows: Callable[[], int],
        consumer_lag: Callable[[], Mapping[int, int]],
        recovery_remaining: Callable[[], int],
        standby_remaining: Callable[[], int],
        ready: Callable[[], bool],
    ) -> None:
        self._ready = ready
        self._standby_remaining = standby_remaining
        self._open_windows = open_windows
        self._consumer_lag = consumer_lag
        self._recovery_remaining = recovery_remaining

    def collect(self) -> Iterable[Metric]:
        open_windows = _read(self._open_windows)
        if open_windows is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_open_windows",
                "Windows (per ticker) that hold trades and have not closed yet.",
                value=open_windows,
            )
        lag = GaugeMetricFamily(
            f"{PREFIX}_consumer_lag",
            "Records in the input partition after the worker's position.",
            labels=["partition"],
        )
        for partition, records in sorted((_read(self._consumer_lag) or {}).items()):
            lag.add_metric([str(partition)], records)
        yield lag
        remaining = _read(self._recovery_remaining)
        if remaining is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_recovery_records_remaining",
                "Changelog records still to replay before the worker is ready.",
                value=remaining,
            )
        standby = _read(self._standby_remaining)
        if standby is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_standby_records_remaining",
                "Changelog records the standby copies on this worker are behind.",
                value=standby,
            )
        yield GaugeMetricFamily(
            f"{PREFIX}_recovering",
            "1 while the worker rebalances or restores state (not ready), else 0.",
            value=0 if _read(self._ready) else 1,
        )


def _read(value: Callable[[], _T]) -> _T | None:
    try:
        return value()
    except Exception as exc:
        log.debug("metric left out of this scrape: %r", exc)
        return None


class CountingHistogram(Collector):
    """A histogram that takes many equal observations at once.

    Window results come by the thousand per batch, most sharing one window end and so one
    latency: ``observe(latency, count)`` counts them with one bucket lookup, where
    prometheus_client's ``Histogram.observe`` took a lock per result. Updated and scraped on
    the event loop only (no lock).
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = [float(b) for b in buckets] + [math.inf]
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += count
        self._sum += value * count

    def collect(self) -> Iterable[Metric]:
        cumulative = list(itertools.accumulate(self._counts))
        yield HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=[
                (floatToGoString(bound), total)  # type: ignore[no-untyped-call]
                for bound, total in zip(self._bounds, cumulative, strict=True)
            ],
            sum_value=self._sum,
        )


class Metrics:
    """The worker's own metrics (faust's sensor metrics join the same registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.trades_processed = Counter(
            f"{PREFIX}_trades_processed", "Valid trades aggregated.", registry=r
        )
        self.trades_dead_lettered = Counter(
            f"{PREFIX}_trades_dead_lettered",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in Reason:
            self.trades_dead_lettered.labels(reason.value)
        self.trades_late = Counter(
            f"{PREFIX}_trades_late",
            "Valid trades whose windows had all closed (also dead-lettered as 'late').",
            registry=r,
        )
        self.records_replayed = Counter(
            f"{PREFIX}_records_replayed",
            "Records consumed again after a restart or rebalance and skipped (already applied).",
            registry=r,
        )
        self.windows_emitted = Counter(
            f"{PREFIX}_windows_emitted", "Window results sent to the output topic.", registry=r
        )
        self.window_avg_price = Gauge(
            f"{PREFIX}_window_avg_price",
            "Average price of the latest window emitted for a ticker (by its owner only).",
            ["ticker"],
            registry=r,
        )
        self.emit_latency = CountingHistogram(
            f"{PREFIX}_emit_latency_seconds",
            "Wall-clock time at emission minus the window end.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60, 300),
        )
        r.register(self.emit_latency)
        self.changelog_records = Counter(
            f"{PREFIX}_changelog_records",
            "State records written to the changelog (tombstones included).",
            registry=r,
        )
        self.checkpoint_seconds = Histogram(
            f"{PREFIX}_checkpoint_duration_seconds",
            "Time to make a checkpoint durable (results acknowledged, changelog written).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=r,
        )
        self.changelog_records_restored = Counter(
            f"{PREFIX}_changelog_records_restored",
            "Changelog records replayed into the local store: 'active' to restore a partition"
            " this worker owns, 'standby' to keep a warm copy of another's (faust applies"
            " standby records in buffers of up to 1000 per partition).",
            ["role"],
            registry=r,
        )
        for role in ("active", "standby"):
            self.changelog_records_restored.labels(role)
        self.rebalances = Counter(
            f"{PREFIX}_rebalances",
            "Rebalances this worker completed (partitions assigned and state restored).",
            registry=r,
        )
        self.restored_partitions = Counter(
            f"{PREFIX}_partitions_restored",
            "Partitions whose state was loaded from the local store after an assignment.",
            registry=r,
        )

    def watch(
        self,
        open_windows: Callable[[], int],
        consumer_lag: Callable[[], Mapping[int, int]],
        recovery_remaining: Callable[[], int],
        standby_remaining: Callable[[], int],
        ready: Callable[[], bool],
    ) -> None:
        """Register the scrape-time gauges, read from the running worker."""
        self.registry.register(
            _ScrapeTimeGauges(
                open_windows, consumer_lag, recovery_remaining, standby_remaining, ready
            )
        )
