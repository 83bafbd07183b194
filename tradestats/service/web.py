"""HTTP endpoints on faust's web server: /health, /ready, /stats/{ticker} and /metrics.

``/stats/{ticker}`` is an interactive query in the Kafka Streams sense: any replica answers for
any ticker. The owner of a ticker is the worker assigned the changelog partition its raw key
bytes hash to (faust's assignor knows every member's canonical URL); a request for someone
else's ticker is forwarded there once, marked so that it is never forwarded again.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import aiohttp
import msgspec
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.web import Request, Response, View
from yarl import URL

from tradestats.core.trades import TICKER_PATTERN
from tradestats.service.kafka import partition_for_key

if TYPE_CHECKING:
    from tradestats.service.app import Service

__all__ = ["FORWARDED_HEADER", "install_views"]

log = logging.getLogger(__name__)

FORWARDED_HEADER = "X-Tradestats-Forwarded-By"
_TICKER = re.compile(TICKER_PATTERN)


def install_views(service: Service) -> None:
    """Register the project's pages (faust's own /table and /router pages are disabled)."""
    app, pipeline, settings = service.app, service.pipeline, service.settings
    setup_prometheus_sensors(
        app, pattern="/metrics", registry=service.metrics.registry, name_prefix="faust"
    )
    service.metrics.watch(
        open_windows=pipeline.open_windows,
        consumer_lag=pipeline.consumer_lag,
        recovery_remaining=pipeline.recovery_remaining,
        standby_remaining=pipeline.standby_remaining,
        ready=lambda: pipeline.ready,
    )
    own_url = URL(settings.web_url)

    @app.page("/health")
    async def health(web: View, request: Request) -> Response:
        if app.crash_reason is not None:
            return web.json({"status": "crashed", "reason": repr(app.crash_reason)}, status=503)
        stalled = pipeline.stalled_for()
        if stalled > settings.health_stall_ms / 1000.0:
            reason = f"input waiting, no progress for {stalled:.0f} s"
            return web.json({"status": "stalled", "reason": reason}, status=503)
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: View, request: Request) -> Response:
        if pipeline.ready:
            return web.json({"ready": True, "partitions": pipeline.active_partitions()})
        remaining = pipeline.recovery_remaining()
        if service.topics.waiting_for:
            reason = f"waiting for {service.topics.waiting_for}"
        elif remaining:
            reason = f"restoring state: {remaining} changelog records to go"
        elif app.rebalancing:
            reason = "rebalancing"
        else:
            reason = "starting: waiting for partition assignment"
        return web.json({"ready": False, "reason": reason}, status=503)

    @app.page("/stats/{ticker}")
    async def stats(web: View, request: Request, ticker: str) -> Response:
        if not _TICKER.match(ticker):
            detail = "a ticker is 1-32 of A-Z a-z 0-9 . _ -"
            return web.json({"error": "invalid ticker", "detail": detail}, status=400)
        if not pipeline.ready:
            return web.json(
                {"error": "not ready", "detail": "rebalancing or restoring"}, status=503
            )
        forwarded = FORWARDED_HEADER in request.headers
        try:
            owner = app.router.key_store(service.table.name, ticker.encode())
        except KeyError:
            return web.json({"error": "no owner", "detail": "partition unassigned"}, status=503)
        if forwarded or (owner.host, owner.port) == (own_url.host, own_url.port):
            return _local_stats(web, ticker)
        return await _forward(web, request, owner)

    def _local_stats(web: View, ticker: str) -> Response:
        partition = partition_for_key(ticker.encode(), settings.topic_partitions)
        state = pipeline.partition_state(partition)
        if state is None:
            return web.json({"error": "not owner", "detail": "assignment changed"}, status=503)
        if ticker not in state:
            return web.json({"error": "unknown ticker", "ticker": ticker}, status=404)
        windows = [
            {**msgspec.to_builtins(window), "closed": closed}
            for window, closed in state.windows(ticker)
        ]
        return web.json(
            {
                "ticker": ticker,
                "partition": partition,
                "streamTime": state.stream_time,
                "windows": windows,
            }
        )

    async def _forward(web: View, request: Request, owner: URL) -> Response:
        url = owner.with_path(request.url.path)
        try:
            async with app.http_client.get(
                url,
                headers={FORWARDED_HEADER: str(own_url)},
                timeout=aiohttp.ClientTimeout(total=5),
            ) as response:
                body = await response.read()
                return web.bytes(body, content_type="application/json", status=response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("forwarding %s to %s failed: %r", request.url.path, owner, exc)
            return web.json({"error": "owner unreachable", "owner": str(owner)}, status=502)

    del health, ready, stats  # registered with the app by the decorators
