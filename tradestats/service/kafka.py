"""Kafka client settings (addresses, TLS, SASL) for faust and for the worker's own producer."""

from __future__ import annotations

import ssl
from typing import Any

import faust
from aiokafka import errors
from aiokafka.conn import collect_hosts, create_conn
from faust.types.auth import CredentialsT
from murmurhash2 import murmurhash2

from tradestats.settings import Settings

__all__ = [
    "DEAD_LETTER_MAX_BYTES",
    "client_config",
    "faust_broker",
    "faust_credentials",
    "incurable_reason",
    "partition_for_key",
    "probe_connection",
    "producer_config",
]


#: Twice Kafka's default record limit (about 1 MiB): a dead letter is an input record of up to
#: that limit plus headers, so the dead-letter topic and the producer allow more.
DEAD_LETTER_MAX_BYTES = 2 * 1024 * 1024


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )
    if settings.kafka_ssl_certfile and settings.kafka_ssl_keyfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    return context


def client_config(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments for the connection (secrets stay out of logs: not repr'd)."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
        "security_protocol": settings.kafka_security_protocol,
        "ssl_context": _ssl_context(settings),
    }
    if settings.kafka_security_protocol.startswith("SASL"):
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism
        config["sasl_plain_username"] = settings.sasl_username
        config["sasl_plain_password"] = settings.sasl_password
    return config


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The worker's producer: durable (acks=all, idempotent) and lightly batched."""
    return {
        **client_config(settings),
        "client_id": f"{settings.app_id}-{settings.group_instance_id or settings.web_host}",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        # How long a batch may wait for a leader before its delivery fails (and the worker
        # sends it again with a new producer, see tradestats.service.output).
        "request_timeout_ms": 30_000,
        **overrides,
    }


def faust_broker(settings: Settings) -> list[str]:
    return [f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")]


def faust_credentials(settings: Settings) -> CredentialsT | None:
    context = _ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


#: The seed of the murmur2 hash in Kafka's default partitioner.
_KAFKA_MURMUR2_SEED = 0x9747B28C


def partition_for_key(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as the Java producer places keyed records.

    Compiled murmur2 rather than aiokafka's pure-Python one: 0.2 against 3.7 us per key, and
    a worker hashes each ticker's key once, at its first window (100,000 tickers: 0.35 s).
    tests/unit/test_kafka_partitioner.py checks it against aiokafka's for every key length.
    """
    return (murmurhash2(key, _KAFKA_MURMUR2_SEED) & 0x7FFFFFFF) % partitions


#: Errors that no retry and no new connection can cure: the worker has to stop and say why.
_INCURABLE: dict[type[Exception], str] = {
    errors.AuthenticationFailedError: "authentication failed",
    errors.SaslAuthenticationFailed: "authentication failed",
    errors.AuthenticationMethodNotSupported: "authentication method not supported",
    errors.UnsupportedSaslMechanismError: "SASL mechanism not supported by the broker",
    errors.IllegalSaslStateError: "SASL handshake failed",
    errors.TopicAuthorizationFailedError: "not authorised for the topic",
    errors.GroupAuthorizationFailedError: "not authorised for the consumer group",
    errors.ClusterAuthorizationFailedError: "not authorised for the cluster operation",
    errors.TransactionalIdAuthorizationFailed: "not authorised for the transactional id",
    errors.RecordTooLargeError: "a record is larger than the broker accepts",
    errors.MessageSizeTooLargeError: "a record is larger than the broker accepts",
    errors.RecordListTooLargeError: "a batch is larger than the broker accepts",
    errors.InvalidTopicError: "invalid topic name",
}


def incurable_reason(error: BaseException) -> str | None:
    """Why ``error`` (or an error it was raised from) cannot be cured by retrying, else None.

    Everything else - connections lost, leaders moving, brokers restarting, timeouts, a
    producer whose idempotence state broke - is cured by trying again, on a new connection or
    with a new producer.
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed ({seen})"
        for kind, reason in _INCURABLE.items():
            if isinstance(seen, kind):
                return f"{reason}: {seen}"
        seen = seen.__cause__ or seen.__context__
    return None


async def probe_connection(settings: Settings) -> BaseException | None:
    """Connect to each bootstrap server in turn; None once one answers, else the last error.

    aiokafka's clients log why they could not connect and raise a bare "Unable to bootstrap":
    this is how the worker tells a broker that is not there yet (try again) from credentials
    or certificates that will never work (stop).
    """
    config = client_config(settings)
    sasl = {k: v for k, v in config.items() if k.startswith("sasl_")}
    error: BaseException | None = None
    for host, port, _ in collect_hosts(config["bootstrap_servers"]):
        try:
            connection = await create_conn(
                host,
                port,
                request_timeout_ms=10_000,
                ssl_context=config["ssl_context"],
                security_protocol=config["security_protocol"],
                **sasl,
            )
        except Exception as exc:
            error = exc
            continue
        connection.close()
        return None
    return error
