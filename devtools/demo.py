"""``python -m devtools.demo`` (``make demo``): a local broker, one worker and the load generator,
with results shown live.

Everything runs as it would in production (separate processes, configured by environment
variables); the demo only wires them together on this machine and prints the window
statistics as they arrive on the output topic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from devtools.kafka import LocalKafka
from tradestats.core.codec import decode_windowed_key
from tradestats.settings import Settings

__all__ = ["main", "run_demo"]


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tradestats", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_ready(url: str, worker: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited; see {log}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/ready", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.3)
    raise SystemExit(f"the worker was not ready after {timeout:.0f} s; see {log}")


def _line(value: dict[str, object]) -> str:
    start = datetime.fromtimestamp(int(value["windowStart"]) / 1000, UTC)  # type: ignore[call-overload]
    return (
        f"{value['ticker']:<6} {start:%H:%M:%S}+5s  {value['type']:<5} "
        f"n={value['countTrades']:<4} avg={value['avgPrice']:.2f}  "
        f"min={value['minPrice']:.2f}  max={value['maxPrice']:.2f}  vol={value['volume']}"
    )


async def _show(settings: Settings, duration: float | None, results: int | None) -> int:
    consumer = AIOKafkaConsumer(
        settings.stats_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        auto_offset_reset="latest",
    )
    await consumer.start()
    shown = 0
    deadline = time.monotonic() + duration if duration else None
    try:
        while (deadline is None or time.monotonic() < deadline) and (
            results is None or shown < results
        ):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    decode_windowed_key(record.key)  # the Kafka Streams windowed key
                    print(_line(json.loads(record.value)), flush=True)
                    shown += 1
    finally:
        await consumer.stop()
    return shown


def run_demo(
    state_dir: Path, rate: float, duration: float | None, results: int | None = None
) -> int:
    """Run until Ctrl-C (or ``duration`` seconds, or ``results`` results shown); returns the
    number of results shown."""
    state_dir.mkdir(parents=True, exist_ok=True)
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        local = LocalKafka(state_dir / "kafka")
        if not local.is_running():  # else reuse it, and leave it running afterwards
            print("starting the local Kafka broker (the first run fetches its jars)", flush=True)
            broker = local
        bootstrap = local.start(timeout=180).bootstrap_servers
    port = int(os.environ.get("WEB_PORT", "6066"))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATA_DIR": str(state_dir / "worker-0"),
        "WEB_HOST": "127.0.0.1",
        "WEB_PORT": str(port),
        "POD_NAME": "tradestats-0",
    }
    settings = Settings(**{k.lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    url = f"http://127.0.0.1:{port}"
    worker_log, loadgen_log = state_dir / "worker-0.log", state_dir / "loadgen.log"
    worker = _spawn(["worker"], env, worker_log)
    loadgen = None
    try:
        _wait_ready(url, worker, worker_log, timeout=300)
        loadgen = _spawn(["loadgen", "--rate", str(rate), "--no-progress"], env, loadgen_log)
        print(
            f"worker ready at {url} (logs: {worker_log}); {rate:g} trades/s from the load "
            f"generator.\n  try: curl {url}/stats/MMM   curl {url}/metrics\n"
            "window results as they close (Ctrl-C to stop):",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(_show(settings, duration, results))
        return 0
    finally:
        for process in (loadgen, worker):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (loadgen, worker):
            if process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(30)
        if broker is not None:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.demo",
        description="Local broker + worker + load generator, printing window results as they "
        "close. Uses the broker at KAFKA_BOOTSTRAP_SERVERS when set, else starts the "
        "project's own.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".local"),
        help="broker data (kafka/), worker state and logs (default: .local)",
    )
    parser.add_argument(
        "--rate", type=float, default=50.0, help="trades per second from the load generator"
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument(
        "--results", type=int, default=None, help="stop after this many window results"
    )
    args = parser.parse_args()
    shown = run_demo(args.state_dir, args.rate, args.duration, args.results)
    print(f"{shown} window results shown", file=sys.stderr)


if __name__ == "__main__":
    main()
