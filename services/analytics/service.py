"""The analytics process: the store, the HTTP API on an internal address and,
when NATS is configured, the consumer. SIGTERM finishes the batch in hand,
stops serving and closes the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from analytics.api import Api, create_app
from analytics.consumer import Consumer, consumer_metrics
from analytics.retention import Retention, retention_metrics
from analytics.store import open_store
from switchyard import metrics, telemetry
from switchyard.config import Config
from switchyard.http_observer import http_observer
from switchyard.http_site import start_site
from switchyard.settings import AnalyticsSettings
from switchyard.shutdown import exit_if_stuck, stop_signal

log = logging.getLogger(__name__)


async def run_analytics(config: Config, settings: AnalyticsSettings) -> None:
    address, nats_url, grace = settings.address, settings.nats_url, settings.grace_s
    stop = stop_signal()
    store = await asyncio.to_thread(open_store, config.analytics)
    tracer = telemetry.setup("analytics", settings)
    registry = metrics.new_registry() if settings.metrics_address else None
    days = config.analytics.retention_days
    retention = Retention(store, days) if days else None
    if registry is not None and retention is not None:
        registry.register(metrics.StateCollector(lambda: retention_metrics(retention)))
    consumer = None
    if nats_url:
        consumer = Consumer(nats_url, store, batch=settings.batch, ack_wait_s=settings.ack_wait_s,
                            tracer=tracer, keep_from=retention.cutoff_ms if retention is not None else None)
        if registry is not None:
            registry.register(metrics.StateCollector(lambda: consumer_metrics(consumer)))

    def status() -> dict[str, object]:
        out: dict[str, object] = {"retention": None if retention is None else {
            "days": retention.days, "deleted": retention.deleted, "last_sweep_ms": retention.last_sweep_ms}}
        if consumer is None:
            return {**out, "consumer": None}
        return {**out, "consumer": {"connected": consumer.connected, "received": consumer.received,
                                    "stored": consumer.stored, "rejected": consumer.rejected,
                                    "expired": consumer.expired}}

    observe = http_observer(tracer, metrics.HttpMetrics(registry) if registry is not None else None)
    api = Api(store, status=status, query_timeout_s=config.analytics.query_timeout_s)
    runner = web.AppRunner(create_app(api, observe), access_log=None, shutdown_timeout=grace)
    await runner.setup()
    await start_site(runner, address)
    metrics_runner = await metrics.serve(settings.metrics_address, registry) \
        if registry is not None and settings.metrics_address else None
    log.info("analytics (%s store) listening on %s; consuming: %s", config.analytics.store, address,
             "yes" if consumer else "no (SWITCHYARD_NATS_URL unset)")
    consuming = asyncio.create_task(consumer.run(stop)) if consumer else None
    sweeping = asyncio.create_task(retention.run(stop)) if retention else None
    failed = False

    def consumer_ended(task: asyncio.Task[None]) -> None:
        nonlocal failed
        if not task.cancelled() and task.exception() is not None:
            failed = True  # exit non-zero: a supervisor restarts the service
            log.error("analytics: the consumer failed", exc_info=task.exception())
            stop.set()

    if consuming is not None:
        consuming.add_done_callback(consumer_ended)
    await stop.wait()
    log.info("draining (grace %.0fs)", grace)
    exit_if_stuck(grace)
    if consuming is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consuming, grace)
    if sweeping is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sweeping, grace)  # a sweep in its thread finishes; none starts after stop
    await runner.cleanup()
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    await asyncio.to_thread(store.close)
    telemetry.shutdown()
    if failed:
        raise SystemExit(1)
