"""The edge aiohttp application and its runner."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry.trace import Tracer

from edge import analytics_proxy
from edge.admin import CacheAdmin, KeysAdmin
from edge.auth import KeyStore
from edge.handlers import Handlers, request_id_for, request_id_headers
from edge.managed_keys import ManagedKeys
from edge.openapi import openapi_document
from edge.orphan_usage import OrphanUsage
from switchyard import metrics, telemetry
from switchyard.config import Config
from switchyard.events import UsagePublisher
from switchyard.grpc_server import freeze_heap
from switchyard.http_observer import http_observer
from switchyard.http_site import start_site
from switchyard.settings import EdgeSettings
from switchyard.shutdown import exit_if_stuck, stop_signal

log = logging.getLogger(__name__)
HANDLERS = web.AppKey("handlers", Handlers)


async def _health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@web.middleware
async def _request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer carries the request id, errors and unknown URLs included
    (chat answers set it themselves, before they stream)."""
    response = await handler(request)
    if not response.prepared and "x-request-id" not in response.headers:
        response.headers.update(request_id_headers(request_id_for(request)))
    return response


async def _not_found(request: web.Request) -> web.Response:
    body = {"error": {"message": f"Unknown request URL: {request.method} {request.path}", "type":
                      "invalid_request_error", "param": None, "code": "unknown_url"}}
    return web.Response(status=404, body=orjson.dumps(body), content_type="application/json")


def create_app(config: Config, settings: EdgeSettings, tracer: Tracer | None = None,
               http_metrics: metrics.HttpMetrics | None = None) -> web.Application:
    """The edge's routes; ``tracer`` and ``http_metrics`` (either may be
    None) observe every request through one middleware."""
    keys = KeyStore(config.api_keys)
    # The usage of answers whose router died mid-answer (orphan_usage.py).
    orphans = OrphanUsage(UsagePublisher(settings.nats_url, Path(settings.spool)), config) \
        if settings.nats_url else None
    handlers = Handlers(config, keys, settings.router_target, settings.request_timeout_s,
                        transport=settings.transport, sessions=settings.sessions,
                        sse_heartbeat_s=settings.sse_heartbeat_s, orphans=orphans)
    observe = http_observer(tracer, http_metrics, request_id_for)
    # Bodies are read by the handler against the same limit, with an OpenAI 413.
    app = web.Application(client_max_size=config.limits.max_body_bytes,
                          middlewares=[_request_id] if observe is None else [observe, _request_id])
    app[HANDLERS] = handlers
    openapi = orjson.dumps(analytics_proxy.with_paths(openapi_document()))
    app.router.add_post("/v1/chat/completions", handlers.chat_completions)
    app.router.add_post("/chat/completions", handlers.chat_completions)
    app.router.add_post("/v1/messages", handlers.messages)
    app.router.add_post("/v1/messages/count_tokens", handlers.count_tokens)
    app.router.add_post("/v1/embeddings", handlers.embeddings)
    app.router.add_post("/embeddings", handlers.embeddings)
    app.router.add_get("/v1/models", handlers.models)
    app.router.add_get("/v1/models/{model:.+}", handlers.model)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/readyz", handlers.ready)
    app.router.add_get("/openapi.json", lambda _: web.Response(body=openapi, content_type="application/json"))
    analytics_proxy.register(app, config, settings.analytics_target, keys)
    managed = ManagedKeys(settings.nats_url, keys.set_managed) if settings.nats_url else None
    KeysAdmin(keys, managed, config.api_keys, budget_status=handlers.budget_status).register(app)
    CacheAdmin(keys, handlers.purge_cache).register(app)
    app.router.add_route("*", "/{tail:.*}", _not_found)

    async def _open(_: web.Application) -> None:
        if managed is not None:
            await managed.start()
        if orphans is not None:
            await orphans.publisher.start()

    async def _close(_: web.Application) -> None:
        if orphans is not None:  # first: it charges pending orphans' budgets through the router channel
            await orphans.close()
        await handlers.close()
        if managed is not None:
            await managed.close()

    app.on_startup.append(_open)
    app.on_cleanup.append(_close)
    return app


def listen_backlog(config: Config) -> int:
    """Connections the kernel may queue before the edge accepts them.

    Envoy opens one HTTP/1.1 connection per concurrent request, so a burst of
    new requests is a burst of connects; on a Unix socket a connect beyond the
    backlog fails at once (aiohttp's default there is 128), and Envoy answers
    503. The backlog therefore covers the concurrency limit (the kernel caps
    it at net.core.somaxconn)."""
    return max(1024, config.limits.max_concurrent_requests)


async def run_edge(config: Config, settings: EdgeSettings) -> None:
    address, router = settings.address, settings.router_target
    stop = stop_signal()
    registry = metrics.new_registry() if settings.metrics_address else None
    app = create_app(config, settings, telemetry.setup("edge", settings),
                     metrics.HttpMetrics(registry) if registry is not None else None)
    orphans = app[HANDLERS].orphans
    if registry is not None and orphans is not None:
        registry.register(metrics.StateCollector(orphans.metrics))
    # handler_cancellation: a client that disconnects cancels its handler,
    # which cancels the router call and, through it, the upstream request.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=settings.grace_s)
    await runner.setup()
    backlog = listen_backlog(config)
    await start_site(runner, address, backlog)
    # Metrics on a listener of their own: the public one (behind Envoy) never serves them.
    metrics_runner = await metrics.serve(settings.metrics_address, registry) \
        if registry is not None and settings.metrics_address else None
    freeze_heap()
    log.info("edge listening on %s, router %s", address, router)
    await stop.wait()
    log.info("draining")
    exit_if_stuck(settings.drain_delay_s + settings.grace_s)
    app[HANDLERS].draining = True  # readiness fails first so Envoy stops routing here
    if settings.drain_delay_s:
        await asyncio.sleep(settings.drain_delay_s)  # let the proxy's health check see it before the listener closes
    await runner.cleanup()
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    telemetry.shutdown()
