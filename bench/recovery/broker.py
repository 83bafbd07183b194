"""The broker a run talks to, and waiting for its log cleaner.

By default the benchmark runs its own :class:`LocalKafka` under ``.local/bench-recovery-kafka``
(a broker of its own: other runs on a shared broker would compete for its log cleaner and
disk); with ``KAFKA_BOOTSTRAP_SERVERS`` set it uses that broker instead. The sweep
(``python -m bench``) opens its broker through :class:`BrokerHandle` too, under
``.local/bench-kafka``: either stops only a broker it started, and a broker it starts starts
empty (its state directory is wiped first).

Compaction matters for cold restores, and the cleaner runs asynchronously: it only touches
closed segments, and the dev broker wakes it every 2 s (``log.cleaner.backoff.ms``). When the
broker's log directory is on this machine, "done" is observed directly: the changelog's
on-disk size stops changing. Otherwise the run waits a fixed time.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.progress import Progress
from devtools.kafka import KAFKA_VERSION, LocalKafka

__all__ = ["BrokerHandle", "changelog_disk_bytes", "settle_cleaner"]

_POLL_SECONDS = 2.0
_FALLBACK_WAIT_SECONDS = 20.0
_MAX_WAIT_SECONDS = 300.0


@dataclass
class BrokerHandle:
    bootstrap: str
    log_dir: Path | None
    """The broker's ``log.dirs`` when on this machine (partition directories live there)."""
    description: str
    local: LocalKafka | None = None
    started_here: bool = False

    @classmethod
    def open(
        cls,
        *,
        external: str | None,
        state_dir: Path,
        log_dir: Path | None,
        progress: Progress,
    ) -> BrokerHandle:
        if external:
            return cls(external, log_dir, f"external broker at {external}")
        local = LocalKafka(state_dir, heap="1g")
        started_here = not local.is_running()
        if started_here and local.pid is None:  # no broker process of this directory
            # A broker started here starts empty. The topics earlier runs deleted are removed
            # from disk only a minute after a broker starts, that is during the next run's
            # measurements (gigabytes at the thin points), and left-over topics load it too.
            shutil.rmtree(state_dir, ignore_errors=True)
            local = LocalKafka(state_dir, heap="1g")
        progress.say(
            f"starting Kafka {KAFKA_VERSION} in {state_dir}"
            if started_here
            else f"reusing the running broker of {state_dir}"
        )
        local.start(timeout=180)
        return cls(
            local.bootstrap_servers,
            log_dir or local.data_dir,
            f"local Kafka {KAFKA_VERSION} (devtools.kafka, one node, heap 1g)",
            local,
            started_here,
        )

    def close(self, keep: bool) -> None:
        if self.local is not None and self.started_here and not keep:
            self.local.stop()


def changelog_disk_bytes(log_dir: Path | None, topic: str, partitions: int) -> int | None:
    """Bytes of the topic's segment files (``*.log``), or None if the log dir is unknown."""
    if log_dir is None:
        return None
    total = 0
    for p in range(partitions):
        for segment in (log_dir / f"{topic}-{p}").glob("*.log"):
            try:
                total += segment.stat().st_size
            except FileNotFoundError:  # the cleaner swapped it while we looked
                continue
    return total


async def settle_cleaner(
    log_dir: Path | None, topic: str, partitions: int, stable_polls: int, progress: Progress
) -> float:
    """Wait until the log cleaner has compacted ``topic``; returns the seconds waited."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    if log_dir is None:
        progress.status(f"waiting {_FALLBACK_WAIT_SECONDS:.0f} s for the log cleaner")
        await asyncio.sleep(_FALLBACK_WAIT_SECONDS)
        return loop.time() - started
    last = changelog_disk_bytes(log_dir, topic, partitions)
    stable = 0
    while stable < stable_polls and loop.time() - started < _MAX_WAIT_SECONDS:
        await asyncio.sleep(_POLL_SECONDS)
        size = changelog_disk_bytes(log_dir, topic, partitions)
        stable = stable + 1 if size == last else 0
        progress.status(f"log cleaner: changelog {size or 0:,} bytes on disk (stable {stable})")
        last = size
    return loop.time() - started
