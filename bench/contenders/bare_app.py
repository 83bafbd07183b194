"""The bare consume loop (contender e): the most a Python consumer does here per second.

aiokafka in a consumer group, records fetched in large batches, each value decoded by
msgspec into a typed struct (the fastest JSON decoder in the project's environment; orjson is
not installed there), offsets auto-committed every second like the other contenders commit.
Nothing else: no state, no output. uvloop runs the event loop when available, as it does for
faust workers.
"""

from __future__ import annotations

import asyncio
import os
import signal

import msgspec
from aiokafka import AIOKafkaConsumer

from bench.contenders.events import FirstRecord


class Trade(msgspec.Struct):
    type: str
    ticker: str
    price: float
    size: int


async def consume() -> None:
    decode = msgspec.json.Decoder(Trade).decode
    first_record = FirstRecord()
    consumer = AIOKafkaConsumer(
        os.environ["BENCH_INPUT"],
        bootstrap_servers=os.environ["BENCH_BOOTSTRAP"],
        group_id=os.environ["BENCH_GROUP"],
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        auto_commit_interval_ms=1000,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await consumer.start()
    decoded = 0
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=20_000)
            for records in batches.values():
                first_record()
                for record in records:
                    decode(record.value)
                decoded += len(records)
    finally:
        await consumer.stop()  # commits the final position
    print(f"decoded {decoded} records", flush=True)


def main() -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(consume())
    else:
        uvloop.run(consume())


if __name__ == "__main__":
    main()
