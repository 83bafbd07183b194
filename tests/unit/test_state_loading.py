"""Loading state pauses the cyclic garbage collector and leaves it as it found it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tradestats.service.pipeline import _without_cyclic_gc


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()


def test_load_runs_without_the_collector_and_its_objects_are_frozen() -> None:
    gc.enable()
    frozen_before = gc.get_freeze_count()
    seen: list[bool] = []

    def load() -> object:
        seen.append(gc.isenabled())
        return [[index] for index in range(1000)]

    loaded = _without_cyclic_gc(load)
    assert seen == [False]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen_before + len(loaded)


@pytest.mark.parametrize("enabled", [True, False])
def test_collector_state_is_restored_when_the_load_fails(enabled: bool) -> None:
    (gc.enable if enabled else gc.disable)()

    def load() -> object:
        raise OSError("RocksDB unreadable")

    with pytest.raises(OSError, match="unreadable"):
        _without_cyclic_gc(load)
    assert gc.isenabled() is enabled
