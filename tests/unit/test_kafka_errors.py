"""Which Kafka errors stop the worker, and which topics it refuses to work with."""

from __future__ import annotations

import ssl

import pytest
from aiokafka import errors

from tradestats.service.kafka import incurable_reason
from tradestats.service.topics import TopicSpec, check_existing


@pytest.mark.parametrize(
    "error",
    [
        errors.NotLeaderForPartitionError(),
        errors.KafkaTimeoutError(),
        errors.KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]"),
        errors.RequestTimedOutError(),
        errors.NotEnoughReplicasError(),
        errors.OutOfOrderSequenceNumber(),  # a new producer cures it
        errors.UnknownTopicOrPartitionError(),  # checked by asking for the topic again
        errors.InvalidReplicationFactorError(),  # brokers still registering
        TimeoutError(),
    ],
)
def test_errors_retrying_cures(error: Exception) -> None:
    assert incurable_reason(error) is None


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (errors.TopicAuthorizationFailedError(), "not authorised for the topic"),
        (errors.SaslAuthenticationFailed("bad password"), "authentication failed"),
        (errors.RecordTooLargeError(), "larger than the broker accepts"),
        (errors.GroupAuthorizationFailedError(), "not authorised for the consumer group"),
    ],
)
def test_errors_that_stop_the_worker(error: Exception, reason: str) -> None:
    found = incurable_reason(error)
    assert found is not None
    assert reason in found


def test_a_certificate_failure_is_found_under_the_connection_error() -> None:
    error = errors.KafkaConnectionError("Unable to bootstrap")
    error.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert "TLS certificate verification failed" in str(incurable_reason(error))


def test_copartitioned_topics_must_match_the_partition_count() -> None:
    specs = [
        TopicSpec("trades", 6, 1, copartitioned=True),
        TopicSpec("trade-stats", 6, 1),
        TopicSpec("app-trade-state-changelog", 6, 1, copartitioned=True),
    ]
    assert check_existing(specs, {"trades": 6, "trade-stats": 3}) == []
    (problem,) = check_existing(specs, {"trades": 12, "trade-stats": 6})
    assert "trades has 12 partitions, TOPIC_PARTITIONS is 6" in problem
