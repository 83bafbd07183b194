"""A Pipeline without app, table or broker behind it, for the tests of its decisions."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from tradestats.service.metrics import Metrics
from tradestats.service.pipeline import Pipeline
from tradestats.service.transport import BatchingConsumer
from tradestats.settings import Settings


def bare_pipeline(consumer: BatchingConsumer, settings: Settings) -> Pipeline:
    """The pipeline of generation 1 over ``consumer``, whose partition 0 has processed up to
    offset 5; its state has no ``process()``, so folding a batch in fails the test."""
    app: Any = SimpleNamespace(consumer=consumer, consumer_generation_id=1)
    table: Any = SimpleNamespace(changelog_topic_name="changelog")
    pipeline = Pipeline(app, settings, table=table, metrics=Metrics())
    pipeline._states[0] = SimpleNamespace(applied_offset=5)
    return pipeline
