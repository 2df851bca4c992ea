"""python -m router: the Router service."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2

from providers.in_process import InProcessProviders
from providers.observer import GenerateCalls
from router.breaker import BreakerBoard, breaker_settings
from router.cache import ResponseCache
from router.cache_store import CacheStore
from router.config_watch import ConfigWatcher
from router.governance import BUCKETS, BUDGETS_BUCKET, LIMITS_BUCKET, Governor
from router.ledger import Buckets, Ledger, MemoryKV
from router.observer import AttemptCalls, ChatCalls, ObservedUsage, state_metrics
from router.pipeline import Pipeline
from router.server import CONFIG_HEALTH, RouterServicer
from router.unary import UnaryRouter
from router.unary_spans import UnarySpans
from router.usage import CountingUsageSink, UsageSink
from switchyard import logs, metrics, settings, telemetry
from switchyard.config import ConfigError, GovernanceSpec
from switchyard.events import UsagePublisher
from switchyard.grpc_server import CHANNEL_OPTIONS, run, serve, unary_client
from switchyard.session import observed, streamer
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
    env = settings.load(settings.RouterSettings)
    logs.setup("router", env.log_level)
    if not env.config:
        raise ConfigError("no config file: set SWITCHYARD_CONFIG")
    nats_url = env.nats_url
    try:
        watcher = ConfigWatcher(Path(env.config), nats_url, poll_s=env.config_poll_s)
    except OSError as exc:
        raise ConfigError(f"cannot read config {env.config}: {exc.strerror}") from None
    breakers = BreakerBoard(*breaker_settings(watcher.table.config))
    tracer = telemetry.setup("router", env)
    registry = metrics.new_registry() if env.metrics_address else None
    router_metrics = metrics.RouterMetrics(registry) if registry is not None else None

    watcher.on_change = lambda table: breakers.reconfigure(*breaker_settings(table.config))
    await watcher.start()
    channel = grpc.aio.insecure_channel(env.providers_target, options=CHANNEL_OPTIONS)
    attempts = AttemptCalls(tracer, lambda: watcher.table, env.trace_content) if tracer is not None else None
    local = None
    if env.providers_in_process:  # the worker's spans and GenAI client metrics come from this process then
        client_metrics = metrics.GenAiClientMetrics(registry) if registry is not None else None
        worker_calls = GenerateCalls(tracer, client_metrics, watcher.table.config.providers) \
            if tracer is not None or client_metrics is not None else None
        local = InProcessProviders(watcher.table.config, worker_calls)
        generate = observed(local.generate, attempts)
    else:
        generate = streamer(channel, "switchyard.v1.Provider", "Generate", transport=env.transport,
                            sessions=env.sessions, observer=attempts)
    usage: UsageSink
    publisher = None
    if nats_url:
        lag = metrics.publish_lag(registry) if registry is not None else None
        publisher = UsagePublisher(nats_url, Path(env.spool), observe_lag=lag)
        await publisher.start()
        usage = publisher
    else:
        usage = CountingUsageSink()
    if tracer is not None or router_metrics is not None:
        usage = ObservedUsage(usage, router_metrics)
    governor, buckets = await start_governor(nats_url, watcher.table.config.governance)
    store = None
    if nats_url:  # the cache's limits are read at start-up; its modes and TTLs reload with the config
        cache = watcher.table.config.cache
        store = CacheStore(nats_url, max_bytes=cache.max_bytes, max_age_s=cache.max_ttl_s + 60,
                           lookup_timeout_s=cache.lookup_timeout_s, local_bytes=cache.local_bytes)
        await store.start()
    pipeline = Pipeline(lambda: watcher.table, generate, usage, breakers, governor, cache=ResponseCache(store))
    embed = local.embed if local is not None else unary_client(
        channel, "/switchyard.v1.Provider/Embed", ppb.EmbedAttempt, epb.EmbedResponse)
    count = local.count if local is not None else unary_client(
        channel, "/switchyard.v1.Provider/CountTokens", ppb.GenerateRequest, pb.CountTokensResponse)
    unary = UnaryRouter(lambda: watcher.table, breakers, usage, embed, count, governor,
                        spans=UnarySpans(tracer, lambda: watcher.table) if tracer is not None else None)
    calls = ChatCalls(tracer, router_metrics) if tracer is not None or router_metrics is not None else None
    servicer = RouterServicer(pipeline, lambda: watcher.table, unary, observer=calls, governor=governor)
    metrics_runner = None
    if registry is not None and env.metrics_address:
        registry.register(metrics.StateCollector(lambda: state_metrics(breakers, publisher)))
        metrics_runner = await metrics.serve(env.metrics_address, registry)

    async def report_config(health_servicer: health.aio.HealthServicer) -> None:
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        last = None
        while True:
            if watcher.synced != last:
                last = watcher.synced
                await health_servicer.set(CONFIG_HEALTH, serving if last else not_serving)
            await asyncio.sleep(0.5)

    async def stop() -> None:
        # Records first: queued usage events reach NATS or the spool, and
        # settlements in flight land, before anything else is closed.
        if publisher is not None:
            await publisher.close()
        await governor.close()
        if buckets is not None:
            await buckets.close()
        await watcher.close()
        await channel.close()
        if local is not None:
            await local.close()
        if store is not None:
            await store.close()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        telemetry.shutdown()

    await serve(env.address, servicer.register, grace=env.grace_s, on_drain=servicer.session.drain, on_stop=stop,
                on_start=report_config)


if __name__ == "__main__":
    run(main)
