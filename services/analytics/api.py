"""The analytics HTTP API and dashboard, served to the edge only.

The edge authenticates the caller's key and forwards the request with the
key's identity in ``x-switchyard-role`` / ``-tenant`` / ``-key-id``; this
service trusts those headers, so it listens only on an internal address
(a Unix socket locally) and is never published on its own.

Queries run on worker threads (the engines are synchronous): at most
``max_queries`` at once and ``max_waiting`` queued behind them (a dashboard
asks for a dozen things at a time); beyond that an immediate 503 with
``retry-after``. The engine stops a query at the store's time limit
(``analytics.query_timeout_s``): 503 ``query_timeout``.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from analytics import query as q
from analytics.store import METRICS, PERCENTILES, QueryTimeoutError, Store, empty_metrics
from switchyard.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    SwitchyardError,
    UnavailableError,
)

log = logging.getLogger(__name__)

PREFIX = "/v1/analytics"
_ASSETS = {"app.js": "text/javascript", "charts.js": "text/javascript", "style.css": "text/css"}
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
                        content_type="application/json", headers={"cache-control": "no-store"})


def _error(exc: SwitchyardError) -> web.Response:
    response = _json(exc.envelope(), exc.status)
    if exc.retry_after_ms:
        response.headers["retry-after"] = str(max(1, exc.retry_after_ms // 1000))
    return response


def identity(request: web.Request) -> q.Identity:
    role, tenant = request.headers.get("x-switchyard-role"), request.headers.get("x-switchyard-tenant")
    if role not in ("admin", "client") or not tenant:
        raise AuthenticationError("analytics is served through the edge with an API key")
    return q.Identity(role=role, tenant=tenant, key_id=request.headers.get("x-switchyard-key-id", ""))


class Api:
    def __init__(self, store: Store, *, max_queries: int = 4, max_waiting: int = 64, query_timeout_s: float = 30.0,
                 status: Callable[[], dict[str, Any]] | None = None) -> None:
        self.store = store
        self.slots = asyncio.Semaphore(max_queries)
        self.max_pending = max_queries + max_waiting
        self.query_timeout_s = query_timeout_s
        self.status_source = status or (lambda: {})
        self.pending = 0

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn`` on a worker thread, in one of ``max_queries`` slots. The
        engine stops a query at the store's time limit; a slot is held until
        its query has really stopped (a client that leaves does not free it
        early), so at most ``max_queries`` queries ever run at once."""
        if self.pending >= self.max_pending:
            raise UnavailableError("analytics is busy; retry shortly", code="overloaded", retry_after_ms=1000)
        self.pending += 1
        try:
            async with asyncio.timeout(self.query_timeout_s):
                await self.slots.acquire()
            job = asyncio.ensure_future(asyncio.to_thread(fn, *args))
            job.add_done_callback(lambda _: self.slots.release())
            return await asyncio.shield(job)
        except (TimeoutError, QueryTimeoutError):
            raise UnavailableError("the query took too long; narrow the range or the filters",
                                   code="query_timeout") from None
        finally:
            self.pending -= 1

    def _parse(self, endpoint: str, request: web.Request) -> tuple[q.Query, dict[str, Any]]:
        who = identity(request)
        query, options = q.parse(endpoint, request.query)
        return q.scope(query, who), options

    async def summary(self, request: web.Request) -> web.Response:
        query, _ = self._parse("summary", request)
        (totals,) = await self._run(self.store.summary, replace(query, group_by=()))
        groups = await self._run(self.store.summary, query) if query.group_by else []
        return _json({"object": "analytics.summary", **_echo(query), "totals": _metrics(totals),
                      "groups": [{"key": g["key"], **_metrics(g)} for g in groups]})

    async def timeseries(self, request: web.Request) -> web.Response:
        query, options = self._parse("timeseries", request)
        echo = _echo(query)
        bucket_ms = options["bucket_ms"]
        start = query.since_ms // bucket_ms * bucket_ms
        buckets = list(range(start, query.until_ms, bucket_ms))
        keys: list[dict[str, Any]] = [{}]
        if query.group_by:
            # The top groups over the range, then their series only (bounded).
            top = await self._run(self.store.summary, query)
            keys = [g["key"] for g in top]
            dimension = query.group_by[0]
            values = tuple(str(k[dimension]) for k in keys)
            query = replace(query, filters=(*query.filters, (dimension, values))) if values else query
        points = await self._run(self.store.timeseries, query, bucket_ms) if keys else []
        index = {b: i for i, b in enumerate(buckets)}
        series = {orjson.dumps(k, option=orjson.OPT_SORT_KEYS): _empty_series(k, len(buckets)) for k in keys}
        for point in points:
            entry = series.get(orjson.dumps(point["key"], option=orjson.OPT_SORT_KEYS))
            slot = index.get(point["bucket"])
            if entry is None or slot is None:
                continue
            for name in METRICS:
                entry[name][slot] = point[name]
        return _json({"object": "analytics.timeseries", **echo, "bucket": options["bucket"],
                      "bucket_ms": bucket_ms, "buckets": buckets, "series": list(series.values())})

    async def requests(self, request: web.Request) -> web.Response:
        query, options = self._parse("requests", request)
        rows = await self._run(self.store.requests, query, options["page"])
        more = len(rows) == query.limit
        return _json({"object": "list", "data": rows, "next_cursor": q.cursor_after(rows[-1]) if more else None})

    async def tags(self, request: web.Request) -> web.Response:
        query, _ = self._parse("tags", request)
        return _json({"object": "list", "data": await self._run(self.store.tags, query)})

    async def status(self, request: web.Request) -> web.Response:
        if identity(request).role != "admin":
            raise PermissionDeniedError("the ingestion status is for admin keys", code="admin_only")
        return _json({"object": "analytics.status", "stored_rows": await self._run(self.store.count),
                      **self.status_source()})


def _metrics(values: dict[str, Any]) -> dict[str, Any]:
    return {name: values[name] for name in METRICS}


def _empty_series(key: dict[str, Any], size: int) -> dict[str, Any]:
    zero = empty_metrics()
    return {"key": key, **{name: [None if name in PERCENTILES or zero[name] is None else zero[name]] * size
                           for name in METRICS}}


def _echo(query: q.Query) -> dict[str, Any]:
    return {"since": query.since_ms, "until": query.until_ms, "group_by": list(query.group_by),
            "filters": {name: list(values) for name, values in query.filters}}


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SwitchyardError as exc:
        return _error(exc)
    except web.HTTPNotFound:
        return _error(NotFoundError(f"Unknown analytics URL: {request.path}", code="unknown_url"))
    except web.HTTPMethodNotAllowed:
        return _error(InvalidRequestError(f"{request.method} is not allowed here; use GET",
                                          code="method_not_allowed"))


def _asset(name: str) -> bytes:
    return (importlib.resources.files("analytics") / "dashboard" / name).read_bytes()


def create_app(api: Api, observe: Middleware | None = None) -> web.Application:
    """The API and dashboard; ``observe``: the tracing and metrics middleware."""
    app = web.Application(middlewares=[_errors] if observe is None else [observe, _errors])
    page = _asset("index.html")
    assets = {name: _asset(name) for name in _ASSETS}

    async def dashboard(_: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8", headers=SECURITY_HEADERS)

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in assets:
            raise web.HTTPNotFound()
        return web.Response(body=assets[name], content_type=_ASSETS[name], headers=SECURITY_HEADERS)

    async def health(_: web.Request) -> web.Response:
        return _json({"status": "ok"})

    app.router.add_get(f"{PREFIX}/summary", api.summary)
    app.router.add_get(f"{PREFIX}/timeseries", api.timeseries)
    app.router.add_get(f"{PREFIX}/requests", api.requests)
    app.router.add_get(f"{PREFIX}/tags", api.tags)
    app.router.add_get(f"{PREFIX}/status", api.status)
    app.router.add_get(f"{PREFIX}/dashboard", dashboard)
    app.router.add_get(f"{PREFIX}/dashboard/{{name}}", asset)
    app.router.add_get(f"{PREFIX}/healthz", health)
    app.router.add_get("/healthz", health)
    return app
