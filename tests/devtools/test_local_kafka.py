"""The local dev broker against real clients: listeners, auth, TLS, reuse, restart, stop.

One broker (SASL + TLS) serves the whole module; the tests that restart and stop it run last.
No skips: if the broker cannot start, the fixture error fails these tests.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from aiokafka.helpers import create_ssl_context

from devtools.kafka import DEFAULT_PASSWORD, DEFAULT_USER, BrokerError, LocalKafka

pytestmark = pytest.mark.broker

OLD_TIMESTAMP_MS = 1_000_000_000_000  # 2001: would be deleted at once under 7-day retention


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), sasl=True, tls=True)
    broker.start(timeout=120)  # the first run may resolve jars with Maven
    yield broker
    broker.stop()


async def create_topic(kafka: LocalKafka) -> str:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    return topic


async def produce(topic: str, value: bytes, **client: Any) -> None:
    producer = AIOKafkaProducer(request_timeout_ms=10_000, **client)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"k", timestamp_ms=OLD_TIMESTAMP_MS)
    finally:
        await producer.stop()


async def consume_first(topic: str, **client: Any) -> tuple[bytes, int]:
    consumer = AIOKafkaConsumer(auto_offset_reset="earliest", **client)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        record = await asyncio.wait_for(consumer.getone(), 15)
    finally:
        await consumer.stop()
    return record.value, record.timestamp


async def roundtrip(kafka: LocalKafka, **client: Any) -> None:
    topic = await create_topic(kafka)
    value = uuid.uuid4().bytes
    await produce(topic, value, **client)
    assert await consume_first(topic, **client) == (value, OLD_TIMESTAMP_MS)


def sasl(mechanism: str, password: str = DEFAULT_PASSWORD) -> dict[str, Any]:
    return {
        "sasl_mechanism": mechanism,
        "sasl_plain_username": DEFAULT_USER,
        "sasl_plain_password": password,
    }


@pytest.mark.asyncio
async def test_plaintext_roundtrip_keeps_old_timestamps(kafka: LocalKafka) -> None:
    await roundtrip(kafka, bootstrap_servers=kafka.bootstrap_servers)


@pytest.mark.asyncio
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
async def test_sasl_plaintext_roundtrip(kafka: LocalKafka, mechanism: str) -> None:
    await roundtrip(
        kafka,
        bootstrap_servers=kafka.sasl_bootstrap_servers,
        security_protocol="SASL_PLAINTEXT",
        **sasl(mechanism),
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
async def test_wrong_password_fails_fast(kafka: LocalKafka, mechanism: str) -> None:
    host, port = kafka.sasl_bootstrap_servers.split(":")
    started = time.monotonic()
    # The connection surfaces the broker's error code; clients wrap it while bootstrapping.
    with pytest.raises(SaslAuthenticationFailed):
        await create_conn(
            host, int(port), security_protocol="SASL_PLAINTEXT", **sasl(mechanism, "wrong")
        )
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.sasl_bootstrap_servers,
        security_protocol="SASL_PLAINTEXT",
        **sasl(mechanism, "wrong"),
    )
    with pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()
    assert time.monotonic() - started < 5


@pytest.mark.asyncio
async def test_ssl_roundtrip_with_generated_ca(kafka: LocalKafka) -> None:
    await roundtrip(
        kafka,
        bootstrap_servers=kafka.ssl_bootstrap_servers,
        security_protocol="SSL",
        ssl_context=create_ssl_context(cafile=str(kafka.ca_file)),
    )


@pytest.mark.asyncio
async def test_sasl_ssl_roundtrip(kafka: LocalKafka) -> None:
    await roundtrip(
        kafka,
        bootstrap_servers=kafka.sasl_ssl_bootstrap_servers,
        security_protocol="SASL_SSL",
        ssl_context=create_ssl_context(cafile=str(kafka.ca_file)),
        **sasl("SCRAM-SHA-512"),
    )


def test_second_start_is_a_noop(kafka: LocalKafka) -> None:
    pid, ports = kafka.pid, kafka.ports
    assert kafka.start().pid == pid
    assert kafka.ports == ports
    # Another object on the same state directory adopts the running broker.
    other = LocalKafka(kafka.state_dir, sasl=True).start()
    assert (other.pid, other.ports) == (pid, ports)


def test_client_env(kafka: LocalKafka) -> None:
    env = kafka.client_env()
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == kafka.bootstrap_servers
    assert env["KAFKA_SASL_BOOTSTRAP_SERVERS"] == kafka.sasl_bootstrap_servers
    assert env["KAFKA_SSL_CAFILE"] == str(kafka.ca_file)
    assert kafka.log_file.stat().st_size > 0


def cli(kafka: LocalKafka, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "devtools.kafka",
            command,
            "--state-dir",
            str(kafka.state_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_status_and_env_while_running(kafka: LocalKafka) -> None:
    status = cli(kafka, "status")
    assert status.returncode == 0, status.stderr
    assert kafka.bootstrap_servers in status.stdout
    env = cli(kafka, "env")
    assert f"export KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers}" in env.stdout


@pytest.mark.asyncio
async def test_restart_keeps_data_and_ports(kafka: LocalKafka) -> None:
    topic = await create_topic(kafka)
    await produce(topic, b"before restart", bootstrap_servers=kafka.bootstrap_servers)
    pid, ports = kafka.pid, kafka.ports

    await asyncio.to_thread(kafka.restart)

    assert kafka.pid != pid
    assert kafka.ports == ports
    value, _ = await consume_first(topic, bootstrap_servers=kafka.bootstrap_servers)
    assert value == b"before restart"


def test_stop_then_status_reports_not_running(kafka: LocalKafka) -> None:
    kafka.stop()
    assert kafka.pid is None
    assert not kafka.is_running()
    status = cli(kafka, "status")
    assert status.returncode == 1
    assert "not running" in status.stdout
    kafka.stop()  # idempotent
    assert cli(kafka, "stop").returncode == 0


def test_missing_listener_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="no SASL_PLAINTEXT listener"):
        _ = LocalKafka(tmp_path).sasl_bootstrap_servers
