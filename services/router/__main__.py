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
from router.governance import BUCKETS, BUDGETS_BUCKET, LIMITS_BUCKET, Governor
from router.ledger import Buckets, Ledger, MemoryKV
from router.pipeline import Pipeline
from router.server import CONFIG_HEALTH, RouterServicer
from router.unary import UnaryRouter
from router.usage import CountingUsageSink, UsageSink
from switchyard import logs, telemetry
from switchyard.config import ConfigError, GovernanceSpec
from switchyard.events import UsagePublisher
from switchyard.grpc_server import CHANNEL_OPTIONS, run, serve
from switchyard.session import streamer
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb
from switchyard.v1 import provider_pb2 as ppb


async def start_governor(nats_url: str | None, settings: GovernanceSpec) -> tuple[Governor, Buckets | None]:
    """Limits and budgets over NATS key-value, or per process without NATS."""
    if not nats_url:
        memory = MemoryKV()
        return Governor(Ledger(lambda: memory), Ledger(lambda: memory), settings), None  # type: ignore[arg-type]
    buckets = Buckets(nats_url, BUCKETS)
    await buckets.start()
    timeout = settings.store_timeout_s
    limits = Ledger(lambda: buckets.kv(LIMITS_BUCKET), buckets.connected, timeout_s=timeout)
    budgets = Ledger(lambda: buckets.kv(BUDGETS_BUCKET), buckets.connected, timeout_s=timeout)
    return Governor(limits, budgets, settings), buckets


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
    governor, buckets = await start_governor(nats_url, watcher.table.config.governance)
    store = None
    if nats_url:  # the cache's limits are read at start-up; its modes and TTLs reload with the config
        settings = watcher.table.config.cache
        store = CacheStore(nats_url, max_bytes=settings.max_bytes, max_age_s=settings.max_ttl_s + 60,
                           lookup_timeout_s=settings.lookup_timeout_s, local_bytes=settings.local_bytes)
        await store.start()
    pipeline = Pipeline(lambda: watcher.table, generate, usage, breakers, telemetry.setup("router"), governor,
                        cache=ResponseCache(store))
    embed = channel.unary_unary("/switchyard.v1.Provider/Embed", request_serializer=ppb.EmbedAttempt.SerializeToString,
                                response_deserializer=epb.EmbedResponse.FromString)
    count = channel.unary_unary("/switchyard.v1.Provider/CountTokens",
                                request_serializer=ppb.GenerateRequest.SerializeToString,
                                response_deserializer=pb.CountTokensResponse.FromString)
    unary = UnaryRouter(lambda: watcher.table, breakers, usage, embed, count, governor)
    servicer = RouterServicer(pipeline, lambda: watcher.table, unary)

    async def report_config(health_servicer: health.aio.HealthServicer) -> None:
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        last = None
        while True:
            if watcher.synced != last:
                last = watcher.synced
                await health_servicer.set(CONFIG_HEALTH, serving if last else not_serving)
            await asyncio.sleep(0.5)

    async def stop() -> None:
        await governor.close()
        if buckets is not None:
            await buckets.close()
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
