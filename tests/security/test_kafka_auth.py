"""Kafka security end to end: SASL (SCRAM-SHA-256/512, PLAIN) over plaintext and TLS, TLS alone.

The session broker has SASL_PLAINTEXT, SSL and SASL_SSL listeners besides PLAINTEXT. Each
worker here is told only the secured listener's address (the test itself creates topics and
reads the output on PLAINTEXT, so the checks do not depend on the code under test). These tests
need that local broker: with an external one (``KAFKA_BOOTSTRAP_SERVERS``) they fail, they are
never skipped.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.helpers import create_ssl_context

from devtools.kafka import DEFAULT_PASSWORD, DEFAULT_USER, LocalKafka
from tests.conftest import Broker
from tests.integration.harness import (
    Topics,
    Worker,
    consume,
    create_topics,
    free_port,
    worker_env,
)
from tests.oracle import parse_trade
from tests.scenarios.load import SteadyLoad, expect_exact_windows

pytestmark = [pytest.mark.broker]

PARTITIONS = 2
WRONG_PASSWORD = "Not-The-Password-7f3a9c"
#: A worker that cannot authenticate must be gone long before this (no retry storm).
FAIL_FAST_SECONDS = 30
#: Connection attempts a failing worker may log before it gives up.
MAX_CONNECTION_ERRORS = 10
#: Deadlines for a worker that works: generous, a loaded machine is several times slower.
READY_SECONDS = 300.0
RESULTS_SECONDS = 300.0
SHUTDOWN_SECONDS = 120.0


@pytest.fixture
def broker(kafka: Broker) -> LocalKafka:
    if kafka.local is None:
        pytest.fail(
            "the security tests need the project's local broker (SASL and TLS listeners): "
            "run them without KAFKA_BOOTSTRAP_SERVERS so the session starts it"
        )
    return kafka.local


def security_env(
    broker: LocalKafka, protocol: str, mechanism: str | None, password: str = DEFAULT_PASSWORD
) -> dict[str, str]:
    """The worker's connection settings for one listener of the local broker."""
    address = {
        "SASL_PLAINTEXT": broker.sasl_bootstrap_servers,
        "SSL": broker.ssl_bootstrap_servers,
        "SASL_SSL": broker.sasl_ssl_bootstrap_servers,
    }[protocol]
    env = {"KAFKA_BOOTSTRAP_SERVERS": address, "KAFKA_SECURITY_PROTOCOL": protocol}
    if mechanism is not None:
        env |= {
            "KAFKA_SASL_MECHANISM": mechanism,
            "KAFKA_SASL_USERNAME": DEFAULT_USER,
            "KAFKA_SASL_PASSWORD": password,
        }
    if protocol.endswith("SSL"):
        env["KAFKA_SSL_CAFILE"] = str(broker.ca_file)
    return env


def client_config(broker: LocalKafka, protocol: str, mechanism: str | None) -> dict[str, Any]:
    """The same connection for the test's own aiokafka producer."""
    env = security_env(broker, protocol, mechanism)
    config: dict[str, Any] = {"security_protocol": protocol}
    if mechanism is not None:
        config |= {
            "sasl_mechanism": mechanism,
            "sasl_plain_username": DEFAULT_USER,
            "sasl_plain_password": DEFAULT_PASSWORD,
        }
    if protocol.endswith("SSL"):
        config["ssl_context"] = create_ssl_context(cafile=env["KAFKA_SSL_CAFILE"])
    return config


def app_env(broker: LocalKafka, topics: Topics, security: dict[str, str]) -> dict[str, str]:
    return {**worker_env(broker.bootstrap_servers, topics, PARTITIONS), **security}


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, "a SASL password appears in the output"


SECURED = [
    ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
    ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
    ("SASL_PLAINTEXT", "PLAIN"),
    ("SASL_SSL", "SCRAM-SHA-512"),
    ("SSL", None),
]


async def end_to_end(
    broker: LocalKafka,
    tmp_path: Path,
    protocol: str,
    mechanism: str | None,
    env: dict[str, str] | None = None,
) -> str:
    """A worker on the secured listener aggregates a few seconds of trades exactly (the test
    produces on the same listener); returns the worker's whole log."""
    topics = Topics.unique(f"sec-{protocol.lower()}")
    await create_topics(broker.bootstrap_servers, [topics.trades], PARTITIONS)
    security = security_env(broker, protocol, mechanism)
    worker = Worker(
        "tradestats-0",
        app_env(broker, topics, security) | (env or {}),
        tmp_path / "data",
        tmp_path / "worker.log",
    ).start()
    load = SteadyLoad(
        security["KAFKA_BOOTSTRAP_SERVERS"],
        topics.trades,
        rate=800,
        seed=8,
        client=client_config(broker, protocol, mechanism),
    )
    try:
        await asyncio.to_thread(worker.wait_ready, READY_SECONDS)
        await load.start()
        await load.run_for(3)
        inputs = await load.stop()
        await expect_exact_windows(broker.bootstrap_servers, topics, inputs, within=RESULTS_SECONDS)
        assert worker.metrics()["tradestats_trades_processed_total"] > 0
        for page in ("/metrics", "/ready", "/health", "/stats/MMM"):
            assert_no_secret(str(worker.get(page)[1]), DEFAULT_PASSWORD)
        code = await asyncio.to_thread(shut_down, worker)
        assert code == 0, f"exit code {code} after SIGTERM:\n{worker.log_tail()}"
    finally:
        await load.close()
        worker.stop_quietly()
    log = worker.log_path.read_text(errors="replace")
    assert_no_secret(log, DEFAULT_PASSWORD)
    return log


def shut_down(worker: Worker) -> int:
    """SIGTERM, and the exit code once it exited; what it logged if it did not in time."""
    try:
        code, _ = worker.terminate(SHUTDOWN_SECONDS)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"{worker.name} still running {SHUTDOWN_SECONDS:g} s after SIGTERM:\n"
            + worker.log_tail()
        ) from None
    return code


@pytest.mark.timeout(900)  # the deadlines above, with room
@pytest.mark.asyncio
@pytest.mark.parametrize(("protocol", "mechanism"), SECURED)
async def test_worker_end_to_end_over_a_secured_listener(
    broker: LocalKafka, tmp_path: Path, protocol: str, mechanism: str | None
) -> None:
    """Right credentials (and the CA for TLS): exact windows, and the password never logged."""
    await end_to_end(broker, tmp_path, protocol, mechanism)


@pytest.mark.timeout(900)  # the deadlines above, with room
@pytest.mark.asyncio
async def test_debug_json_logs_never_contain_the_password(
    broker: LocalKafka, tmp_path: Path
) -> None:
    """The chattiest logging (debug, JSON with every extra field) over SASL_SSL."""
    env = {"LOG_LEVEL": "debug", "LOG_FORMAT": "json"}
    log = await end_to_end(broker, tmp_path, "SASL_SSL", "SCRAM-SHA-256", env)
    assert '"level": "debug"' in log, "debug logging was not on"


@pytest.mark.timeout(900)  # the deadlines above, with room
@pytest.mark.asyncio
async def test_worker_reads_sasl_credentials_from_mounted_secret_files(
    broker: LocalKafka, tmp_path: Path
) -> None:
    """KAFKA_SASL_USERNAME_FILE / _PASSWORD_FILE, as a Kubernetes Secret volume provides them
    (here with a trailing newline, as editors and ``echo`` write files)."""
    secrets = tmp_path / "secret"
    secrets.mkdir()
    (secrets / "username").write_text(DEFAULT_USER + "\n")
    (secrets / "password").write_text(DEFAULT_PASSWORD + "\n")
    env = {
        "KAFKA_SASL_USERNAME": "",
        "KAFKA_SASL_PASSWORD": "",
        "KAFKA_SASL_USERNAME_FILE": str(secrets / "username"),
        "KAFKA_SASL_PASSWORD_FILE": str(secrets / "password"),
    }
    await end_to_end(broker, tmp_path, "SASL_SSL", "SCRAM-SHA-512", env)


def run_cli(args: list[str], env: dict[str, str], timeout: float) -> tuple[int, float, str]:
    """Run ``python -m tradestats ARGS``; returns (exit code, seconds, stdout+stderr)."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tradestats", *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        output = (expired.output or b"").decode(errors="replace")
        raise AssertionError(
            f"tradestats {args[0]} still running after {timeout} s (retrying?):\n{output[-3000:]}"
        ) from None
    return done.returncode, time.monotonic() - started, done.stdout.decode(errors="replace")


WRONG = [
    ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
    ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
    ("SASL_PLAINTEXT", "PLAIN"),
    ("SASL_SSL", "SCRAM-SHA-512"),
]


@pytest.mark.parametrize(("protocol", "mechanism"), WRONG)
def test_worker_with_a_wrong_password_fails_fast_and_clearly(
    broker: LocalKafka, tmp_path: Path, protocol: str, mechanism: str
) -> None:
    topics = Topics.unique("sec-wrong")
    env = app_env(broker, topics, security_env(broker, protocol, mechanism, WRONG_PASSWORD))
    env |= {
        "DATA_DIR": str(tmp_path / "data"),
        "WEB_HOST": "127.0.0.1",
        "WEB_PORT": str(free_port()),
    }
    code, seconds, output = run_cli(["worker"], env, timeout=90)
    print(f"{protocol} {mechanism}: exit {code} after {seconds:.1f} s")
    assert code != 0, output[-3000:]
    assert seconds < FAIL_FAST_SECONDS, f"took {seconds:.1f} s to give up"
    assert "Authentication failed" in output, output[-3000:]
    assert output.count("Unable connect") <= MAX_CONNECTION_ERRORS, "retry storm"
    assert_no_secret(output, WRONG_PASSWORD, DEFAULT_PASSWORD)


def test_worker_that_does_not_trust_the_broker_certificate_fails_fast(
    broker: LocalKafka, tmp_path: Path
) -> None:
    """TLS without the broker's CA: the system CAs do not vouch for it."""
    topics = Topics.unique("sec-noca")
    security = security_env(broker, "SSL", None)
    del security["KAFKA_SSL_CAFILE"]
    env = app_env(broker, topics, security)
    env |= {
        "DATA_DIR": str(tmp_path / "data"),
        "WEB_HOST": "127.0.0.1",
        "WEB_PORT": str(free_port()),
    }
    code, seconds, output = run_cli(["worker"], env, timeout=90)
    print(f"SSL without CA: exit {code} after {seconds:.1f} s")
    assert code != 0, output[-3000:]
    assert seconds < FAIL_FAST_SECONDS, f"took {seconds:.1f} s to give up"
    assert "CERTIFICATE_VERIFY_FAILED" in output, output[-3000:]


def test_sasl_without_credentials_is_a_configuration_error(tmp_path: Path) -> None:
    """Caught before any connection: exit 2 naming the missing variables."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_USERNAME": "",
        "KAFKA_SASL_PASSWORD": "",
        "DATA_DIR": str(tmp_path / "data"),
    }
    code, _, output = run_cli(["worker"], env, timeout=60)
    assert code == 2, output
    assert "KAFKA_SASL_USERNAME" in output
    assert "KAFKA_SASL_PASSWORD" in output
    assert "required" in output


@pytest.mark.asyncio
@pytest.mark.parametrize(("protocol", "mechanism"), SECURED)
async def test_loadgen_over_a_secured_listener(
    broker: LocalKafka, protocol: str, mechanism: str | None
) -> None:
    topics = Topics.unique("sec-loadgen")
    await create_topics(broker.bootstrap_servers, [topics.trades], PARTITIONS)
    env = app_env(broker, topics, security_env(broker, protocol, mechanism))
    count = 500
    args = ["loadgen", "--count", str(count), "--rate", "0", "--seed", "3", "--no-progress"]
    code, _, output = await asyncio.to_thread(run_cli, args, env, 120)
    assert code == 0, output[-3000:]
    assert f"sent {count} trades" in output
    assert_no_secret(output, DEFAULT_PASSWORD)
    records = await consume(
        broker.bootstrap_servers,
        topics.trades,
        done=lambda r: len(r) >= count,
        within=RESULTS_SECONDS,
    )
    assert len(records) == count, f"{len(records)} of {count} trades read back"
    assert all(parse_trade(r.key, r.value) is not None for r in records)


@pytest.mark.parametrize(("protocol", "mechanism"), WRONG)
def test_loadgen_with_a_wrong_password_fails_fast_and_clearly(
    broker: LocalKafka, protocol: str, mechanism: str
) -> None:
    topics = Topics.unique("sec-loadgen-wrong")
    env = app_env(broker, topics, security_env(broker, protocol, mechanism, WRONG_PASSWORD))
    args = ["loadgen", "--count", "10", "--no-progress"]
    code, seconds, output = run_cli(args, env, timeout=90)
    print(f"loadgen {protocol} {mechanism}: exit {code} after {seconds:.1f} s")
    assert code != 0, output[-3000:]
    assert seconds < FAIL_FAST_SECONDS, f"took {seconds:.1f} s to give up"
    assert "Authentication failed" in output, output[-3000:]
    assert_no_secret(output, WRONG_PASSWORD, DEFAULT_PASSWORD)
