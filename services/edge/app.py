"""The edge aiohttp application and its runner."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry.trace import Tracer

from edge import analytics_proxy
from edge.admin import KeysAdmin
from edge.auth import KeyStore
from edge.handlers import Handlers, request_id_for, request_id_headers
from edge.managed_keys import ManagedKeys
from edge.openapi import openapi_document
from edge.orphan_usage import OrphanUsage
from switchyard import telemetry
from switchyard.config import Config
from switchyard.events import UsagePublisher

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


def create_app(config: Config, router_target: str, request_timeout_s: float = 600.0,
               tracer: Tracer | None = None) -> web.Application:
    keys = KeyStore(config.api_keys)
    nats_url = os.environ.get("SWITCHYARD_NATS_URL")
    # The usage of answers whose router died mid-answer (orphan_usage.py).
    orphans = OrphanUsage(UsagePublisher(nats_url, Path(os.environ.get("SWITCHYARD_EDGE_SPOOL",
                                                                       "var/spool/edge.usage"))), config) \
        if nats_url else None
    handlers = Handlers(config, keys, router_target, request_timeout_s,
                        transport=os.environ.get("SWITCHYARD_TRANSPORT", "session"),
                        sessions=int(os.environ.get("SWITCHYARD_EDGE_SESSIONS", "2")),
                        sse_heartbeat_s=float(os.environ.get("SWITCHYARD_EDGE_SSE_HEARTBEAT_S", "15")),
                        tracer=tracer, orphans=orphans)
    # Bodies are read by the handler against the same limit, with an OpenAI 413.
    app = web.Application(client_max_size=config.limits.max_body_bytes, middlewares=[_request_id])
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
    analytics_proxy.register(app, config, keys)
    managed = ManagedKeys(nats_url, keys.set_managed) if nats_url else None
    KeysAdmin(keys, managed, config.api_keys).register(app)
    app.router.add_route("*", "/{tail:.*}", _not_found)

    async def _open(_: web.Application) -> None:
        if managed is not None:
            await managed.start()
        if orphans is not None:
            await orphans.publisher.start()

    async def _close(_: web.Application) -> None:
        await handlers.close()
        if managed is not None:
            await managed.close()
        if orphans is not None:
            await orphans.close()

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


async def run_edge(config: Config) -> None:
    address = os.environ.get("SWITCHYARD_EDGE_ADDRESS", "127.0.0.1:8081")
    router = os.environ.get("SWITCHYARD_EDGE_ROUTER_TARGET", "127.0.0.1:50051")
    timeout = float(os.environ.get("SWITCHYARD_EDGE_REQUEST_TIMEOUT_S", "600"))
    grace = float(os.environ.get("SWITCHYARD_EDGE_GRACE_S", "30"))
    app = create_app(config, router, timeout, telemetry.setup("edge"))
    # handler_cancellation: a client that disconnects cancels its handler,
    # which cancels the router call and, through it, the upstream request.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=grace)
    await runner.setup()
    backlog = listen_backlog(config)
    if address.startswith("unix:"):
        site: web.BaseSite = web.UnixSite(runner, address[5:], backlog=backlog)
    else:
        host, _, port = address.rpartition(":")
        site = web.TCPSite(runner, host, int(port), backlog=backlog)
    await site.start()
    log.info("edge listening on %s, router %s", address, router)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining")
    app[HANDLERS].draining = True  # readiness fails first so Envoy stops routing here
    drain_delay = float(os.environ.get("SWITCHYARD_EDGE_DRAIN_DELAY_S", "0"))
    if drain_delay:
        await asyncio.sleep(drain_delay)  # let the proxy's health check see it before the listener closes
    await runner.cleanup()
    telemetry.shutdown()
