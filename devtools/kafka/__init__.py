"""The project's local Kafka: a real single-node KRaft broker for tests, benchmarks and demos.

See :class:`LocalKafka` and ``python -m devtools.kafka --help``.
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

__all__ = [
    "DEFAULT_PASSWORD",
    "DEFAULT_USER",
    "KAFKA_VERSION",
    "BrokerError",
    "BrokerStartError",
    "LocalKafka",
    "default_cache_dir",
    "resolve_classpath",
]
