"""MetadataWatch against aiokafka's own client and metadata task (no broker: the metadata
request is replaced, everything around it is aiokafka's)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka.client import AIOKafkaClient

from tradestats.service.transport import MetadataWatch

pytestmark = pytest.mark.asyncio

STUCK_AFTER = 0.2
#: Far longer than any wait here: a refresh resolved within the test was not resolved by age.
MAX_AGE_MS = 600_000


def client_with(update: Callable[[AIOKafkaClient, int], Awaitable[bool]]) -> AIOKafkaClient:
    """A client whose metadata task runs, with ``update(client, pass)`` as its request."""
    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:9", metadata_max_age_ms=MAX_AGE_MS)
    passes = 0

    async def metadata_update(cluster: Any, topics: Any) -> bool:
        nonlocal passes
        passes += 1
        return await update(client, passes)

    client._metadata_update = metadata_update  # type: ignore[method-assign]
    client._sync_task = asyncio.get_running_loop().create_task(client._md_synchronizer())
    return client


async def watched(client: AIOKafkaClient, refresh: Awaitable[Any], seconds: float) -> bool:
    """Whether ``refresh`` resolves within ``seconds`` with the watch checking every 50 ms."""
    watch = MetadataWatch(stuck_after=STUCK_AFTER)
    task = asyncio.ensure_future(refresh)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not task.done() and loop.time() < deadline:
        watch.check(client, loop.time())
        await asyncio.sleep(0.05)
    done = task.done()
    task.cancel()
    return done


async def stop(client: AIOKafkaClient) -> None:
    assert client._sync_task is not None
    client._sync_task.cancel()
    await asyncio.gather(client._sync_task, return_exceptions=True)


async def test_a_refresh_left_pending_by_a_topic_change_is_woken(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiokafka's lost wakeup: a pass no force woke (the periodic one, here the first) sees
    the topics change under it (``set_topics`` during the request) and sleeps again with the
    refresh pending; the forces after it wait for ``metadata_max_age_ms``."""

    async def update(client: AIOKafkaClient, passes: int) -> bool:
        if passes == 1:
            client._metadata_max_age_ms = MAX_AGE_MS  # the next periodic pass is far off
            client.set_topics(["another-topic"])
        return True

    client = client_with(update)
    client._metadata_max_age_ms = 50  # the first pass comes with the age, not with a force
    await asyncio.sleep(0.3)
    assert client._md_update_fut is not None
    assert not client._md_update_fut.done()
    unwatched = asyncio.ensure_future(client.force_metadata_update())
    await asyncio.sleep(3 * STUCK_AFTER)
    assert not unwatched.done(), "aiokafka resolved the refresh itself: is the watch needed?"
    with caplog.at_level(logging.WARNING, logger="tradestats.service.transport"):
        assert await watched(client, client.force_metadata_update(), 10.0)
    assert await asyncio.wait_for(unwatched, 1.0) is True
    assert "waking aiokafka's metadata task" in caplog.text
    await stop(client)


async def test_a_metadata_task_that_ended_is_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def update(client: AIOKafkaClient, passes: int) -> bool:
        if passes == 1:
            raise RuntimeError("the task ends here")
        return True

    client = client_with(update)
    first = asyncio.ensure_future(client.force_metadata_update())
    await asyncio.sleep(0.1)
    assert client._sync_task is not None
    assert client._sync_task.done()
    with caplog.at_level(logging.WARNING, logger="tradestats.service.transport"):
        assert await watched(client, client.force_metadata_update(), 10.0)
    assert await asyncio.wait_for(first, 1.0) is True
    assert "RuntimeError('the task ends here')" in caplog.text
    assert "starting it again" in caplog.text
    await stop(client)


async def test_a_refresh_waiting_on_a_broker_is_left_alone() -> None:
    """A pass in progress (its request bounded by the request timeout) is not interfered with."""
    release = asyncio.Event()

    async def update(client: AIOKafkaClient, passes: int) -> bool:
        await release.wait()
        return True

    client = client_with(update)
    refresh = asyncio.ensure_future(client.force_metadata_update())
    task = client._sync_task
    assert not await watched(client, asyncio.shield(refresh), 4 * STUCK_AFTER)
    assert client._sync_task is task
    assert not task.done()
    release.set()
    assert await asyncio.wait_for(refresh, 1.0) is True
    await stop(client)


async def test_a_client_closing_is_left_alone() -> None:
    """``close()`` cancels the metadata task, maybe with a refresh pending: not restarted."""

    async def update(client: AIOKafkaClient, passes: int) -> bool:
        return True

    client = client_with(update)
    await stop(client)
    task = client._sync_task
    client._md_update_fut = asyncio.get_running_loop().create_future()
    assert not await watched(client, asyncio.shield(client._md_update_fut), 4 * STUCK_AFTER)
    assert client._sync_task is task
