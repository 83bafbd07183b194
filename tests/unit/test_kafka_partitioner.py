"""The worker places window results where Kafka's Java producer would: the default partitioner.

Checked against the Java client's own test vectors (``UtilsTest.testMurmur2``) and against
aiokafka's pure-Python murmur2 for keys of every length the hash distinguishes.
"""

from __future__ import annotations

import pytest
from aiokafka.partitioner import murmur2
from hypothesis import given
from hypothesis import strategies as st

from tradestats.service.kafka import partition_for_key

#: Kafka's Utils.murmur2 results (signed 32-bit), from its UtilsTest.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def java_partition(hashed: int, partitions: int) -> int:
    """Kafka's ``toPositive(murmur2(key)) % partitions`` from a signed hash."""
    return (hashed & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize("key", sorted(JAVA_MURMUR2))
@pytest.mark.parametrize("partitions", [1, 3, 6, 7, 12, 100])
def test_matches_the_java_client(key: bytes, partitions: int) -> None:
    assert partition_for_key(key, partitions) == java_partition(JAVA_MURMUR2[key], partitions)


@given(st.binary(max_size=80), st.integers(min_value=1, max_value=1000))
def test_matches_aiokafka_for_any_key(key: bytes, partitions: int) -> None:
    assert partition_for_key(key, partitions) == java_partition(murmur2(key), partitions)


def test_every_tail_length() -> None:
    """murmur2 folds the key four bytes at a time and the last one to three apart."""
    for length in range(0, 40):
        key = bytes(range(200, 200 - length, -1))
        assert partition_for_key(key, 1 << 20) == java_partition(murmur2(key), 1 << 20), length
