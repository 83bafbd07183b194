"""Session fixtures: the real Kafka broker every integration test talks to.

The broker is the project's own (``devtools.kafka``), started once per session with
SASL and TLS listeners besides PLAINTEXT, or an external one named by
``KAFKA_BOOTSTRAP_SERVERS``. If it cannot start, every test that needs it errors: broker tests
are never skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from devtools.kafka import LocalKafka

# The machine is shared and often busy: property tests must not fail because drawing inputs or
# running one example took long. They still fail on any counterexample.
settings.register_profile(
    "busy-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("busy-machine")


@dataclass(frozen=True)
class Broker:
    """How tests reach the session broker (``local`` is None for an external broker)."""

    bootstrap_servers: str
    local: LocalKafka | None


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield Broker(external, None)
        return
    state_dir = Path(tmp_path_factory.mktemp("kafka"))
    broker = LocalKafka(state_dir, sasl=True, tls=True, heap="768m")
    broker.start(timeout=180)  # a fresh machine resolves the jars with Maven first
    try:
        yield Broker(broker.bootstrap_servers, broker)
    finally:
        broker.stop()
