"""Fixtures of the scenarios: a local StatefulSet per test, its pods' logs shown on failure."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.scenarios.statefulset import StatefulSet


@pytest.fixture
def statefulset(tmp_path: Path) -> Iterator[Callable[[dict[str, str], int], StatefulSet]]:
    """``statefulset(env, partitions)``: a StatefulSet under the test's tmp dir.

    Every pod is SIGKILLed at teardown; the tails of their logs are printed (pytest shows
    them when the test failed).
    """
    made: list[StatefulSet] = []

    def make(env: dict[str, str], partitions: int) -> StatefulSet:
        sts = StatefulSet(tmp_path / f"sts{len(made)}", env, partitions)
        sts.root.mkdir(parents=True)
        made.append(sts)
        return sts

    yield make
    for sts in made:
        sts.close()
        print(sts.log_tails(60))


@pytest.fixture
def quiet_clients() -> Iterator[None]:
    """The test's own clients log an error per reconnect attempt while a broker is away."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)
