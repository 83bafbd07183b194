"""The bulk changelog restore: what it writes, the offsets it keeps, when it says it is done.

No broker: a real app (not started) with its real RocksDB store in a temporary directory, fed
the batch events the transport would deliver. ``tests/integration/test_restore.py`` checks the
same against a broker, with real workers.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.stores import rocksdb
from faust.types import TP

from tradestats.service.app import Service, build_app
from tradestats.service.restore import BulkRecovery, records_after
from tradestats.service.transport import RecordBatch
from tradestats.settings import Settings

PARTITIONS = 2


def record(offset: int, key: bytes, value: bytes | None) -> Any:
    """What aiokafka hands over for one changelog record (the fields the restore reads)."""
    return SimpleNamespace(offset=offset, key=key, value=value)


def changelog(seed: int, count: int, keys: int = 50) -> list[Any]:
    """Puts, overwrites and tombstones, at offsets with compaction gaps."""
    rng = random.Random(seed)
    offset, records = 0, []
    for _ in range(count):
        offset += rng.choice((1, 1, 1, 3))
        value = None if rng.random() < 0.1 else rng.randbytes(rng.randrange(1, 200))
        records.append(record(offset, f"T{rng.randrange(keys):04d}".encode(), value))
    return records


def split(records: Sequence[Any], seed: int) -> Iterator[list[Any]]:
    """The records in batches of random sizes, as fetches would cut them."""
    rng = random.Random(seed)
    start = 0
    while start < len(records):
        end = start + rng.randrange(1, 300)
        yield list(records[start:end])
        start = end


def batch_event(tp: TP, records: Sequence[Any]) -> Any:
    """A batch event as the transport delivers it: the batch is the value, its last offset
    the message's."""
    message = SimpleNamespace(tp=tp, partition=tp.partition, offset=records[-1].offset)
    return SimpleNamespace(message=message, value=RecordBatch(records))


def record_event(tp: TP, r: Any) -> Any:
    """One changelog record as faust's own recovery gets it: an event per record."""
    message = SimpleNamespace(
        tp=tp, partition=tp.partition, offset=r.offset, key=r.key, value=r.value
    )
    return SimpleNamespace(message=message)


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Any]:
    made: list[Service] = []

    def make() -> Service:
        data_dir = tmp_path / f"worker-{len(made)}"
        service = build_app(Settings(data_dir=data_dir, topic_partitions=PARTITIONS))
        made.append(service)
        return service

    yield make
    for service in made:
        service.table.store._dbs.clear()  # close the databases


def contents(service: Service, partition: int) -> dict[bytes, bytes]:
    return dict(service.table.store.partition_items(partition))


def changelog_tp(service: Service, partition: int = 0) -> TP:
    return TP(service.table.changelog_topic_name, partition)


def recovery_of(service: Service) -> BulkRecovery:
    recovery = service.app.tables.recovery
    assert isinstance(recovery, BulkRecovery)
    return recovery


def assign(recovery: BulkRecovery, service: Service, tp: TP, *, standby: bool = False) -> None:
    """What faust's rebalance does before a restore: the partition, its table, its offsets."""
    (recovery.add_standby if standby else recovery.add_active)(service.table, tp)


def test_records_after_skips_what_the_store_holds() -> None:
    records = [record(offset, b"k", b"v") for offset in (3, 4, 7, 8)]
    assert records_after(records, None) == records
    assert records_after(records, -1) == records
    assert [r.offset for r in records_after(records, 4)] == [7, 8]
    assert [r.offset for r in records_after(records, 5)] == [7, 8]
    assert records_after(records, 8) == []
    assert records_after([], 2) == []


def test_bulk_batches_write_what_fausts_per_record_path_writes(make_service: Any) -> None:
    """The same changelog, record by record through faust's RocksDB store and in bulk
    batches of random sizes: the same keys, values and stored offset."""
    per_record, bulk = make_service(), make_service()
    records = changelog(seed=1, count=2000)
    tp = changelog_tp(per_record)
    events = [record_event(tp, r) for r in records]
    for start in range(0, len(events), 1000):  # faust's recovery buffer
        rocksdb.Store.apply_changelog_batch(
            per_record.table.store, events[start : start + 1000], lambda k: k, lambda v: v
        )
    recovery = recovery_of(bulk)
    assign(recovery, bulk, tp)
    for batch in split(records, seed=2):
        recovery._apply(batch_event(tp, batch))
    expected = contents(per_record, 0)
    assert expected, "the changelog left live keys"
    assert contents(bulk, 0) == expected
    assert bulk.table.persisted_offset(tp) == per_record.table.persisted_offset(tp)
    assert bulk.table.persisted_offset(tp) == records[-1].offset


def test_offsets_and_remaining_follow_what_rocksdb_holds(make_service: Any) -> None:
    service = make_service()
    applied: list[tuple[int, bool]] = []
    service.table.on_changelog_applied = lambda count, standby: applied.append((count, standby))
    recovery = recovery_of(service)
    tp = changelog_tp(service)
    records = changelog(seed=3, count=900)
    assign(recovery, service, tp)
    assert recovery.active_offsets[tp] is None  # nothing local: a cold restore
    recovery.active_highwaters[tp] = records[-1].offset
    recovery._set_recovery_started()
    for batch in split(records, seed=4):
        assert not recovery.signal_recovery_end.is_set()
        recovery._apply(batch_event(tp, batch))
        stored = service.table.persisted_offset(tp)
        assert stored == batch[-1].offset
        assert recovery.active_offsets[tp] == stored
        assert recovery.active_remaining_total() == records[-1].offset - stored
        recovery._signal_if_restored()
    assert recovery.signal_recovery_end.is_set()
    assert not recovery.in_recovery
    assert sum(count for count, _ in applied) == len(records)
    assert {standby for _, standby in applied} == {False}


def test_a_batch_fetched_again_changes_nothing(make_service: Any) -> None:
    service = make_service()
    recovery = recovery_of(service)
    tp = changelog_tp(service)
    records = changelog(seed=5, count=100)
    assign(recovery, service, tp)
    recovery._apply(batch_event(tp, records))
    before = contents(service, 0)
    counted: list[int] = []
    service.table.on_changelog_applied = lambda count, _: counted.append(count)
    recovery._apply(batch_event(tp, records[40:]))  # a seek back, a fetch again
    assert contents(service, 0) == before
    assert counted == []
    # A warm store: faust seeks to the stored offset itself, so its record comes again.
    assign(recovery, service, tp)
    assert recovery.active_offsets[tp] == records[-1].offset
    recovery._apply(batch_event(tp, records[-1:]))
    assert counted == []


def test_a_partition_no_longer_assigned_is_not_written(make_service: Any) -> None:
    service = make_service()
    recovery = recovery_of(service)
    recovery._apply(batch_event(changelog_tp(service, 1), changelog(seed=6, count=10)))
    assert 1 not in service.table.store._dbs  # never even opened


def test_standby_batches_keep_the_standby_offsets(make_service: Any) -> None:
    service = make_service()
    roles: list[bool] = []
    service.table.on_changelog_applied = lambda _, standby: roles.append(standby)
    recovery = recovery_of(service)
    tp = changelog_tp(service, 1)
    assign(recovery, service, tp, standby=True)
    records = changelog(seed=7, count=300)
    for batch in split(records, seed=8):
        assert recovery._apply(batch_event(tp, batch)) is True
    assert recovery.standby_offsets[tp] == records[-1].offset
    assert service.table.persisted_offset(tp) == records[-1].offset
    assert tp not in recovery.active_offsets
    assert set(roles) == {True}


@pytest.mark.asyncio
async def test_a_standby_batch_queued_when_flow_resumes_is_applied(make_service: Any) -> None:
    """faust resumes the standby partitions, seeks the stream partitions, then resumes flow
    once more; a standby batch fetched in between must not be emptied out of the queue, or
    the standby copy has a hole (the consumer is past it) and skips those records."""
    service, reference = make_service(), make_service()
    records = changelog(seed=11, count=600, keys=10**6)  # few keys written twice
    tp = changelog_tp(service, 1)
    assign(recovery_of(reference), reference, tp, standby=True)
    recovery_of(reference)._apply(batch_event(tp, records))
    recovery = recovery_of(service)
    assign(recovery, service, tp, standby=True)
    first, *rest = split(records, seed=12)
    queue = service.app.tables.changelog_queue
    service.app.flow_control.resume()  # the standby partitions resumed
    await queue.put(batch_event(tp, first))  # fetched while the stream partitions are sought
    service.app.flow_control.resume()  # the end of the recovery
    applier = asyncio.create_task(BulkRecovery._slurp_changelogs.fun(recovery))
    try:
        for batch in rest:
            await queue.put(batch_event(tp, batch))
        for _ in range(1000):
            if recovery.standby_offsets[tp] == records[-1].offset:
                break
            await asyncio.sleep(0.01)
    finally:
        applier.cancel()
    assert contents(service, 1) == contents(reference, 1), (
        f"{len(first)} records of the first batch, offsets {first[0].offset}..{first[-1].offset}"
    )


def test_standby_remaining_counts_an_empty_copy_and_never_goes_negative(
    make_service: Any,
) -> None:
    service = make_service()
    recovery = recovery_of(service)
    empty, ahead, behind = (TP("changelog", p) for p in range(3))
    seen = {empty: 101, ahead: 51, behind: 300}  # next offsets per the consumer's last fetch
    consumer = SimpleNamespace(assignment=lambda: set(seen), highwater=seen.__getitem__)
    recovery.app = SimpleNamespace(consumer=consumer)  # type: ignore[assignment]
    recovery.standby_highwaters.update({empty: 100, ahead: 40, behind: 199})
    recovery.standby_offsets.update({empty: -1, ahead: 70, behind: 99})
    assert recovery.standby_remaining() == {empty: 101, ahead: 0, behind: 200}
    assert recovery.standby_remaining_total() == 301


@pytest.mark.asyncio
async def test_the_applier_ends_the_restore_and_stops_the_worker_on_a_failed_write(
    make_service: Any,
) -> None:
    service = make_service()
    recovery = recovery_of(service)
    tp = changelog_tp(service)
    records = changelog(seed=9, count=500)
    assign(recovery, service, tp)
    recovery.active_highwaters[tp] = records[-1].offset
    recovery._set_recovery_started()
    crashed: list[BaseException] = []

    async def crash(exc: BaseException) -> None:
        crashed.append(exc)

    service.app.crash = crash  # type: ignore[method-assign]
    queue = service.app.tables.changelog_queue
    service.app.flow_control.resume()  # as faust does before it fetches
    applier = asyncio.create_task(BulkRecovery._slurp_changelogs.fun(recovery))
    try:
        for batch in split(records, seed=10):
            await queue.put(batch_event(tp, batch))
        await asyncio.wait_for(recovery.signal_recovery_end.wait(), timeout=10)
        assert service.table.persisted_offset(tp) == records[-1].offset

        def broken(*args: object, **kwargs: object) -> None:
            raise OSError("disk full")

        service.table.store.apply_changelog_records = broken  # type: ignore[method-assign]
        await queue.put(batch_event(tp, [record(records[-1].offset + 1, b"T0001", b"x")]))
        await asyncio.wait_for(applier, timeout=10)  # it stops rather than skip the batch
    finally:
        applier.cancel()
    assert [type(exc) for exc in crashed] == [OSError]
    assert service.table.persisted_offset(tp) == records[-1].offset
