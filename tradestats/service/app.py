"""The faust wiring: app, topics, state table, the agent, and the pipeline service."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import faust
from faust.app.base import BootStrategy
from mode import ServiceT

from tradestats.service.kafka import DEAD_LETTER_MAX_BYTES, faust_broker, faust_credentials
from tradestats.service.metrics import Metrics
from tradestats.service.pipeline import Pipeline
from tradestats.service.store import PromptTableManager, StateTable
from tradestats.service.topics import TopicSetup, TopicSpec
from tradestats.service.transport import BatchingTransport, BatchSchema
from tradestats.service.web import install_views
from tradestats.settings import Settings

__all__ = ["Service", "build_app"]

STATE_TABLE = "trade-state"
#: Batch events buffered for the agent: a poll of up to ``_MAX_POLL_RECORDS`` records yields
#: one batch per partition.
_STREAM_BUFFER_BATCHES = 32
_MAX_POLL_RECORDS = 20000
#: Bytes fetched per partition and request (faust's default is 1 MiB): a dense input moved
#: through in half as many fetch round trips, each of which the agent otherwise waited for.
_MAX_FETCH_BYTES_PER_PARTITION = 4 * 1024 * 1024


class _StartOrder(BootStrategy):
    """faust's start order with tradestats' services in it: the web server first (so /health
    and /ready answer while Kafka is awaited), then the topic setup, then the pipeline's
    producer, and only then faust's producer, consumer, agent and tables."""

    def __init__(self, app: faust.App, *, before_kafka: Iterable[ServiceT]) -> None:
        super().__init__(app)
        self.before_kafka = list(before_kafka)

    def server(self) -> Iterable[ServiceT]:
        return self._chain(
            self.sensors(),
            self.web_server(),
            self.before_kafka,
            self.kafka_producer(),
            self.kafka_consumer(),
            self.agents(),
            self.kafka_conductor(),
            self.tables(),
        )


@dataclass(frozen=True)
class Service:
    """What the worker is made of, for the CLI, the web views and tests."""

    app: faust.App
    settings: Settings
    topics: TopicSetup
    pipeline: Pipeline
    table: StateTable
    metrics: Metrics


def build_app(settings: Settings) -> Service:
    """A faust app that runs tradestats with these settings (nothing starts until it runs)."""
    app = faust.App(
        settings.app_id,
        env={},  # settings come from our Settings object only
        broker=faust_broker(settings),
        broker_credentials=faust_credentials(settings),
        store="rocksdb://",
        TableManager=PromptTableManager,
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        topic_disable_leader=True,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=settings.group_instance_id,
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000.0,
        broker_commit_interval=settings.commit_interval_ms / 1000.0,
        broker_max_poll_records=_MAX_POLL_RECORDS,
        consumer_max_fetch_size=_MAX_FETCH_BYTES_PER_PARTITION,
        stream_buffer_maxsize=_STREAM_BUFFER_BATCHES,
        web_enabled=True,
        web_bind=settings.web_bind,
        web_port=settings.web_port,
        web_host=settings.web_host,
        canonical_url=settings.web_url,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_router_enabled=False,
        web_tables_enabled=False,
        web_metrics_enabled=False,
    )
    metrics = Metrics()

    trades = app.topic(
        settings.trades_topic,
        partitions=settings.topic_partitions,
        replicas=settings.topic_replication_factor,
        schema=BatchSchema(),
    )
    # A dead letter is its input record plus headers: room for the largest input record.
    dlq_config = {"max.message.bytes": DEAD_LETTER_MAX_BYTES}
    changelog_config = {
        "segment.bytes": settings.changelog_segment_bytes,
        "segment.ms": 600_000,
        "min.cleanable.dirty.ratio": 0.1,
    }

    table = StateTable(
        app,
        name=STATE_TABLE,
        beacon=app.tables.beacon,
        partitions=settings.topic_partitions,
        key_type=bytes,  # raw bytes: keys hash like the input topic's (routing)
        value_type=bytes,
        help="Per-ticker pane aggregates and per-partition stream clocks.",
        extra_topic_configs=changelog_config,
        options={
            "driver": "rocksdict",
            "block_cache_size": settings.rocksdb_block_cache_bytes,
            "write_buffer_size": settings.rocksdb_write_buffer_bytes,
            "max_write_buffer_number": 2,
            "max_open_files": 256,
        },
    )
    app.tables.add(table)
    changelog = table.changelog_topic_name
    app.transport = BatchingTransport(
        app.conf.broker_consumer, app, [settings.trades_topic, changelog]
    )

    def spec(name: str, config: dict[str, Any], *, copartitioned: bool = False) -> TopicSpec:
        return TopicSpec(
            name,
            settings.topic_partitions,
            settings.topic_replication_factor,
            {key: str(value) for key, value in config.items()},
            copartitioned=copartitioned,
        )

    topic_setup = TopicSetup(
        settings,
        [
            spec(settings.trades_topic, {}, copartitioned=True),
            spec(settings.stats_topic, {}),
            spec(settings.dlq_topic, dlq_config),
            spec(changelog, {"cleanup.policy": "compact", **changelog_config}, copartitioned=True),
        ],
    )
    pipeline = Pipeline(app, settings, table, metrics)
    table.on_recovered = pipeline.on_recovered
    table.on_changelog_applied = lambda count, standby: metrics.changelog_records_restored.labels(
        "standby" if standby else "active"
    ).inc(count)
    app.boot_strategy = _StartOrder(app, before_kafka=[topic_setup, pipeline])

    @app.agent(trades, name="aggregate-trades")
    async def aggregate_trades(stream: faust.StreamT) -> None:
        assert isinstance(stream, faust.Stream)
        try:
            async for event in stream.noack().events():
                await pipeline.handle(event)
        except Exception as exc:
            # A batch may be half sent: restarting only the agent (faust's default) would let
            # a later checkpoint claim results that never arrived. Stop the worker instead; it
            # restarts from its last checkpoint and replays.
            await app.crash(exc)
            raise

    service = Service(app, settings, topic_setup, pipeline, table, metrics)
    install_views(service)
    return service
