"""python -m router: the Router service."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2

from router.breaker import BreakerBoard, breaker_settings
from router.cache import ResponseCache
from router.cache_store import CacheStore
from router.config_watch import ConfigWatcher
from router.pipeline import Pipeline
from router.server import CONFIG_HEALTH, RouterServicer
from router.usage import CountingUsageSink, UsageSink
from switchyard import logs, telemetry
from switchyard.config import ConfigError
from switchyard.events import UsagePublisher
from switchyard.grpc_server import CHANNEL_OPTIONS, run, serve
from switchyard.session import streamer


async def main() -> None:
    logs.setup("router")
    config_path = os.environ.get("SWITCHYARD_CONFIG")
    if not config_path:
        raise ConfigError("no config file: set SWITCHYARD_CONFIG")
    address = os.environ.get("SWITCHYARD_ROUTER_ADDRESS", "127.0.0.1:50051")
    providers = os.environ.get("SWITCHYARD_ROUTER_PROVIDERS_TARGET", "127.0.0.1:50061")
    grace = float(os.environ.get("SWITCHYARD_ROUTER_GRACE_S", "30"))
    nats_url = os.environ.get("SWITCHYARD_NATS_URL")
    try:
        watcher = ConfigWatcher(Path(config_path), nats_url,
                                poll_s=float(os.environ.get("SWITCHYARD_ROUTER_CONFIG_POLL_S", "1")))
    except OSError as exc:
        raise ConfigError(f"cannot read config {config_path}: {exc.strerror}") from None
    breakers = BreakerBoard(*breaker_settings(watcher.table.config))

    watcher.on_change = lambda table: breakers.reconfigure(*breaker_settings(table.config))
    await watcher.start()
    channel = grpc.aio.insecure_channel(providers, options=CHANNEL_OPTIONS)
    generate = streamer(channel, "switchyard.v1.Provider", "Generate",
                        transport=os.environ.get("SWITCHYARD_TRANSPORT", "session"),
                        sessions=int(os.environ.get("SWITCHYARD_ROUTER_SESSIONS", "2")))
    usage: UsageSink
    if nats_url:
        publisher = UsagePublisher(nats_url, Path(os.environ.get("SWITCHYARD_ROUTER_SPOOL", "var/spool/router.usage")))
        await publisher.start()
        usage = publisher
    else:
        usage = CountingUsageSink()
    store = None
    if nats_url:  # the cache's limits are read at start-up; its modes and TTLs reload with the config
        settings = watcher.table.config.cache
        store = CacheStore(nats_url, max_bytes=settings.max_bytes, max_age_s=settings.max_ttl_s + 60,
                           lookup_timeout_s=settings.lookup_timeout_s, local_bytes=settings.local_bytes)
        await store.start()
    pipeline = Pipeline(lambda: watcher.table, generate, usage, breakers, telemetry.setup("router"),
                        cache=ResponseCache(store))
    servicer = RouterServicer(pipeline, lambda: watcher.table)

    async def report_config(health_servicer: health.aio.HealthServicer) -> None:
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        last = None
        while True:
            if watcher.synced != last:
                last = watcher.synced
                await health_servicer.set(CONFIG_HEALTH, serving if last else not_serving)
            await asyncio.sleep(0.5)

    async def stop() -> None:
        await watcher.close()
        await channel.close()
        if store is not None:
            await store.close()
        if nats_url:
            await publisher.close()  # queued events reach NATS or the spool before exit
        telemetry.shutdown()

    await serve(address, servicer.register, grace=grace, on_drain=servicer.session.drain, on_stop=stop,
                on_start=report_config)


if __name__ == "__main__":
    run(main)
