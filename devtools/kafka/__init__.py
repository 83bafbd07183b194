"""The project's local Kafka: real KRaft brokers for tests, benchmarks and demos.

A single node (:class:`LocalKafka`) or a cluster of several (:class:`LocalKafkaCluster`); see
``python -m devtools.kafka --help``.
"""

from devtools.kafka.broker import (
    DEFAULT_PASSWORD,
    DEFAULT_USER,
    KAFKA_VERSION,
    BrokerError,
    BrokerStartError,
    LocalKafka,
    default_cache_dir,
    resolve_classpath,
)
from devtools.kafka.cluster import LocalKafkaCluster

__all__ = [
    "DEFAULT_PASSWORD",
    "DEFAULT_USER",
    "KAFKA_VERSION",
    "BrokerError",
    "BrokerStartError",
    "LocalKafka",
    "LocalKafkaCluster",
    "default_cache_dir",
    "resolve_classpath",
]
