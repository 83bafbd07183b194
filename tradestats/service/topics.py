"""The topics, in place before anything subscribes: the first thing the worker does with Kafka.

faust creates missing topics when its agent and tables start, after the consumer has joined its
group: the assignor then ignores the input topic as missing, and the worker holds no input
partition until the consumer's next metadata refresh, five minutes later. Here every topic the
worker reads or writes is created (when missing) and checked (when someone else created it)
before faust's producer, consumer and tables start.

Kafka may also not be there yet (a pod scheduled before the brokers): then the worker waits,
answers ``/health``, says on ``/ready`` what it waits for, and tries again. Only what retrying
cannot cure - bad credentials, missing authorisation, topics whose partition counts do not match
- stops it, with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError
from mode import Service

from tradestats.service.kafka import client_config, incurable_reason, probe_connection
from tradestats.settings import Settings

__all__ = ["TopicError", "TopicSetup", "TopicSpec", "check_existing", "record_batch_limits"]

log = logging.getLogger(__name__)

_RETRY_S = 2.0
_LOG_EVERY_S = 15.0


class TopicError(Exception):
    """The topics (or the cluster) cannot be made to fit the settings; the worker stops."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic the worker needs. ``copartitioned`` topics must have exactly ``partitions``
    partitions (the input and the changelog: partition *p* of one is the state of the other)."""

    name: str
    partitions: int
    replicas: int
    config: Mapping[str, str] = field(default_factory=dict)
    copartitioned: bool = False


def check_existing(specs: Sequence[TopicSpec], existing: Mapping[str, int]) -> list[str]:
    """Problems with topics that already exist (name -> partition count), as messages."""
    return [
        f"topic {spec.name} has {existing[spec.name]} partitions, TOPIC_PARTITIONS is "
        f"{spec.partitions}: the input and the state changelog must have the same count"
        for spec in specs
        if spec.copartitioned and spec.name in existing and existing[spec.name] != spec.partitions
    ]


class TopicSetup(Service):
    """Wait for Kafka, create the missing topics, check the others; done when all have leaders."""

    def __init__(self, settings: Settings, specs: Sequence[TopicSpec]) -> None:
        super().__init__()
        self.settings = settings
        self.specs = list(specs)
        self.waiting_for: str | None = "Kafka"
        """What the worker waits for before it can start consuming (None once done)."""

    async def on_start(self) -> None:
        started = last_log = time.monotonic()
        while not self.should_stop:
            try:
                await self._ensure()
            except TopicError:
                raise
            except Exception as exc:
                cause: BaseException = exc
                if isinstance(exc, errors.KafkaConnectionError):
                    cause = await probe_connection(self.settings) or exc  # the real reason
                reason = incurable_reason(cause)
                if reason is not None:
                    raise TopicError(f"cannot use Kafka: {reason}") from cause
                self.waiting_for = (
                    f"Kafka at {self.settings.kafka_bootstrap_servers} ({type(cause).__name__}: "
                    f"{cause})"
                )
                now = time.monotonic()
                if now - last_log >= _LOG_EVERY_S or now == started:
                    log.warning("waiting for %s for %.0f s", self.waiting_for, now - started)
                    last_log = now
                await asyncio.sleep(_RETRY_S)
                continue
            self.waiting_for = None
            return

    async def _ensure(self) -> None:
        admin = AIOKafkaAdminClient(**client_config(self.settings), request_timeout_ms=10_000)
        await admin.start()
        try:
            existing = await _partition_counts(admin, [spec.name for spec in self.specs])
            problems = check_existing(self.specs, existing)
            if problems:
                raise TopicError("; ".join(problems))
            missing = [spec for spec in self.specs if spec.name not in existing]
            if missing:
                await _create(admin, missing)
            while True:  # created topics get their leaders a moment later
                leaderless = await _leaderless(admin, [spec.name for spec in self.specs])
                if not leaderless:
                    return
                self.waiting_for = f"leaders of {', '.join(leaderless)}"
                await asyncio.sleep(0.2)
        finally:
            await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, int]:
    described = await admin.describe_topics(list(names))
    return {
        topic["topic"]: len(topic["partitions"])
        for topic in described
        if topic["error_code"] == 0 and topic["partitions"]
    }


async def _create(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]) -> None:
    response = await admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replicas, topic_configs=dict(s.config)) for s in specs]
    )
    for name, code, message, *_ in response.topic_errors:
        if code == TopicAlreadyExistsError.errno:
            continue  # another worker was quicker; checked on the next round
        if code:
            raise errors.for_code(code)(f"creating topic {name}: {message}")
        log.info("created topic %s", name)


async def _leaderless(admin: AIOKafkaAdminClient, names: Sequence[str]) -> list[str]:
    described = await admin.describe_topics(list(names))
    return sorted(
        topic["topic"]
        for topic in described
        if topic["error_code"] != 0
        or not topic["partitions"]
        or any(partition["leader"] < 0 for partition in topic["partitions"])
    )


async def record_batch_limits(settings: Settings, names: Sequence[str]) -> dict[str, int]:
    """Each topic's ``max.message.bytes``: the largest record batch its brokers take.

    The effective value, the broker's default included. A topic the broker does not describe
    (no DescribeConfigs permission, say) is left out and logged; an unreachable broker raises.
    """
    admin = AIOKafkaAdminClient(**client_config(settings), request_timeout_ms=10_000)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, name, {"max.message.bytes": None})
                for name in names
            ]
        )
    finally:
        await admin.close()
    limits: dict[str, int] = {}
    for response in responses:
        for code, message, _, name, entries in response.resources:
            values = [value for key, value, *_ in entries if key == "max.message.bytes"]
            if code or not values:
                error = errors.for_code(code).__name__ if code else "no value"
                log.warning("cannot read max.message.bytes of %s (%s %s)", name, error, message)
                continue
            limits[name] = int(values[0])
    return limits
