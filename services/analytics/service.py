"""The analytics process: the store, the HTTP API on an internal address and,
when NATS is configured, the consumer. SIGTERM finishes the batch in hand,
stops serving and closes the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from aiohttp import web

from analytics.api import Api, create_app
from analytics.consumer import Consumer
from analytics.store import open_store
from switchyard import telemetry
from switchyard.config import Config

log = logging.getLogger(__name__)


async def run_analytics(config: Config) -> None:
    address = os.environ.get("SWITCHYARD_ANALYTICS_ADDRESS", "127.0.0.1:8090")
    nats_url = os.environ.get("SWITCHYARD_NATS_URL")
    grace = float(os.environ.get("SWITCHYARD_ANALYTICS_GRACE_S", "30"))
    store = await asyncio.to_thread(open_store, config.analytics)
    consumer = None
    if nats_url:
        consumer = Consumer(nats_url, store, batch=int(os.environ.get("SWITCHYARD_ANALYTICS_BATCH", "1000")),
                            ack_wait_s=float(os.environ.get("SWITCHYARD_ANALYTICS_ACK_WAIT_S", "30")),
                            tracer=telemetry.setup("analytics"))

    def status() -> dict[str, object]:
        if consumer is None:
            return {"consumer": None}
        return {"consumer": {"connected": consumer.connected, "received": consumer.received,
                             "stored": consumer.stored, "rejected": consumer.rejected}}

    runner = web.AppRunner(create_app(Api(store, status=status)), access_log=None, shutdown_timeout=grace)
    await runner.setup()
    if address.startswith("unix:"):
        site: web.BaseSite = web.UnixSite(runner, address[5:])
    else:
        host, _, port = address.rpartition(":")
        site = web.TCPSite(runner, host, int(port))
    await site.start()
    log.info("analytics (%s store) listening on %s; consuming: %s", config.analytics.store, address,
             "yes" if consumer else "no (SWITCHYARD_NATS_URL unset)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    consuming = asyncio.create_task(consumer.run(stop)) if consumer else None
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
    log.info("stopping")
    if consuming is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consuming, grace)
    await runner.cleanup()
    await asyncio.to_thread(store.close)
    telemetry.shutdown()
    if failed:
        raise SystemExit(1)
