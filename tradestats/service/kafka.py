"""Kafka client settings (addresses, TLS, SASL) for faust and for the worker's own producer."""

from __future__ import annotations

import ssl
from typing import Any

import faust
from aiokafka.partitioner import murmur2
from faust.types.auth import CredentialsT

from tradestats.settings import Settings

__all__ = [
    "DEAD_LETTER_MAX_BYTES",
    "client_config",
    "faust_broker",
    "faust_credentials",
    "partition_for_key",
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


def partition_for_key(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as the Java producer places keyed records."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions
