"""Log formatting and the filter that keeps outage noise readable."""

from __future__ import annotations

import json
import logging

import pytest

from tradestats.service.logs import JsonFormatter, RepeatFilter


def record(
    message: str, *args: object, level: int = logging.ERROR, **extra: object
) -> logging.LogRecord:
    made = logging.makeLogRecord(
        {"name": "aiokafka", "levelno": level, "levelname": logging.getLevelName(level)}
    )
    made.msg, made.args = message, args
    made.__dict__.update(extra)
    return made


def test_json_lines_carry_level_logger_message_and_extras() -> None:
    line = JsonFormatter().format(record("partition %d idle", 3, partition=3, offset=17))
    entry = json.loads(line)
    assert entry["level"] == "error"
    assert entry["logger"] == "aiokafka"
    assert entry["message"] == "partition 3 idle"
    assert (entry["partition"], entry["offset"]) == (3, 17)
    assert entry["time"].endswith("Z")


def test_repeats_are_held_back_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 1.0, 2.0, 3.0, 11.0, 12.0])
    monkeypatch.setattr("tradestats.service.logs.time.monotonic", lambda: next(clock))
    repeats = RepeatFilter(seconds=10)
    passed = [repeats.filter(record("Unable connect to node %s", 1)) for _ in range(4)]
    assert passed == [True, False, False, False]
    assert repeats.filter(last := record("Unable connect to node %s", 1))
    assert "and 3 more like it" in last.getMessage()
    assert repeats.filter(record("something else"))  # other messages are not held back


def test_informational_lines_and_different_details_are_never_held_back() -> None:
    """faust logs the active and the standby recovery tables with one format string."""
    repeats = RepeatFilter(seconds=10)
    tables = [
        record("Highwater for %s changelog partitions", kind, level=logging.INFO)
        for kind in ("active", "standby", "standby")
    ]
    assert all(repeats.filter(line) for line in tables)
    assert repeats.filter(record("Unable connect to node %s", 1))
    assert repeats.filter(record("Unable connect to node %s", 2))
