"""The one aiohttp middleware that traces and counts every HTTP request of a
service (the edge, analytics): a SERVER span named ``{method} {route}``
(the route's pattern, never the raw path, so names stay few), made current
while the handler runs so that the handler's calls carry its context, and
the request's duration by route, method and status. Without a tracer and
metrics the service installs no middleware at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from switchyard import attributes as a
from switchyard import telemetry
from switchyard.metrics import HttpMetrics, http_method


def route_of(request: web.Request) -> str:
    """The matched route's pattern (``/v1/models/{model}``); unknown URLs
    share the catch-all's."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def http_observer(tracer: Tracer | None, metrics: HttpMetrics | None,
                  request_id: Callable[[web.Request], str] | None = None) -> Middleware | None:
    """The middleware, or None when there is nothing to observe."""
    if tracer is None and metrics is None:
        return None
    clock = time.monotonic

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_of(request)
        method = http_method(request.method)
        span = token = None
        if tracer is not None:
            span = tracer.start_span(f"{method} {route}", context=telemetry.extract(request.headers),
                                     kind=SpanKind.SERVER, attributes={a.HTTP_REQUEST_METHOD: method,
                                                                       a.HTTP_ROUTE: route})
            if request_id is not None and span.is_recording():
                span.set_attribute(a.REQUEST_ID, request_id(request))
            token = otel_context.attach(trace.set_span_in_context(span))
        if metrics is not None:
            metrics.active.inc()
        started = clock()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away (nginx's number for it)
            raise
        finally:
            if metrics is not None:
                metrics.active.dec()
                metrics.duration(route, method, str(status)).observe(clock() - started)
            if span is not None:
                span.set_attribute(a.HTTP_RESPONSE_STATUS_CODE, status)
                if status >= 500:
                    span.set_attribute(a.ERROR_TYPE, str(status))
                    span.set_status(Status(StatusCode.ERROR))
                span.end()
                otel_context.detach(token)

    return observe
