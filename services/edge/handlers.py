"""HTTP handlers: authenticate, validate once, open one Router.Chat stream,
transcode its events to OpenAI JSON or SSE.

Response headers are sent only when the first successful attempt has
produced output, so every failure before that is a plain HTTP error with the
right status; a failure after it ends the SSE stream with an error event and
no ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import orjson
from aiohttp import web
from grpc_health.v1 import health_pb2
from opentelemetry.trace import Span, SpanKind, Tracer

from edge import conventions
from edge.auth import KeyStore
from edge.transcode import (
    DONE,
    ChunkEncoder,
    CompletionBuilder,
    error_status_and_body,
    extra_fields,
    identity_of,
    to_chat_request,
)
from edge.validation import parse_chat_request
from switchyard import attributes, telemetry
from switchyard.config import Config
from switchyard.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    SwitchyardError,
    UnavailableError,
)
from switchyard.grpc_server import CHANNEL_OPTIONS
from switchyard.session import TransportError, streamer
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import router_pb2 as rpb

log = logging.getLogger(__name__)

JSON = "application/json"
HEARTBEAT = b": keep-alive\n\n"


def json_error(exc: SwitchyardError, request_id: str = "") -> web.Response:
    headers = request_id_headers(request_id) if request_id else {}
    if exc.retry_after_ms:
        headers["retry-after"] = str(max(1, round(exc.retry_after_ms / 1000)))
    return web.Response(status=exc.status, body=orjson.dumps(exc.envelope()), content_type=JSON, headers=headers)


def _proto_error_response(err: pb.Error, headers: dict[str, str]) -> web.Response:
    status, body = error_status_and_body(err)
    if err.retry_after_ms:
        headers["retry-after"] = str(max(1, round(err.retry_after_ms / 1000)))
    return web.Response(status=status, body=body, content_type=JSON, headers=headers)


def interrupted() -> pb.Error:
    """A router stream that ended without its closing usage event."""
    return pb.Error(status=502, type="api_error", code="stream_interrupted",
                    message="the answer was interrupted before it was complete")


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_for(request: web.Request) -> str:
    """The client's ``X-Request-Id`` when it is well formed, else a new one."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def request_id_headers(request_id: str) -> dict[str, str]:
    """The request id under every convention's header name (seed 000: Modelux, seed 001: Muxx)."""
    return {"x-request-id": request_id, "x-modelux-request-id": request_id, "X-Muxx-Request-Id": request_id}


def _started_headers(started: pb.Started, request_id: str) -> dict[str, str]:
    """Headers known when the accepted attempt starts (streaming included)."""
    headers = request_id_headers(request_id)
    headers.update({
        "x-switchyard-provider": started.provider,
        "x-switchyard-model-used": started.model,
        "x-switchyard-attempt": str(started.attempt),
        "x-modelux-provider": started.provider,
        "x-modelux-model-used": started.model,
    })
    if started.route:
        headers["x-switchyard-route"] = "@" + started.route
        headers["x-switchyard-route-version"] = str(started.route_version)
        headers["x-modelux-config"] = "@" + started.route
        headers["x-modelux-config-version"] = str(started.route_version)
    if started.arm:
        headers["x-switchyard-arm"] = started.arm
    if started.cache:  # the router's response cache: HIT | MISS | BYPASS (seed 001's X-Muxx-Cache)
        headers["x-switchyard-cache"] = headers["X-Muxx-Cache"] = started.cache.upper()
    return headers


def _final_headers(headers: dict[str, str], latency_ms: float, usage: pb.Usage | None) -> None:
    """Headers known only at the end: latency and cost (non-streaming answers)."""
    latency = str(round(latency_ms))
    headers["x-switchyard-latency-ms"] = headers["x-modelux-latency-ms"] = latency
    if usage is not None:
        cost = f"{usage.cost_usd:.6f}"
        headers["x-switchyard-cost-usd"] = headers["x-modelux-cost-usd"] = headers["X-Muxx-Cost"] = cost


class Handlers:
    def __init__(self, config: Config, keys: KeyStore, router_target: str, request_timeout_s: float, *,
                 transport: str = "session", sessions: int = 2, sse_heartbeat_s: float = 15.0,
                 tracer: Tracer | None = None) -> None:
        self.limits = config.limits
        self.tracer = tracer
        self.sse_heartbeat_s = sse_heartbeat_s
        self.keys = keys
        self.request_timeout_s = request_timeout_s
        self._channel = grpc.aio.insecure_channel(router_target, options=CHANNEL_OPTIONS)
        self._chat = streamer(self._channel, "switchyard.v1.Router", "Chat", transport=transport, sessions=sessions)
        self._list_models = self._channel.unary_unary(
            "/switchyard.v1.Router/ListModels", request_serializer=rpb.ListModelsRequest.SerializeToString,
            response_deserializer=rpb.ListModelsResponse.FromString)
        self._health = self._channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        self._ready_until = 0.0
        self.draining = False
        self.in_flight = 0

    async def close(self) -> None:
        await self._channel.close()

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLargeError(f"request body exceeds the {limit} byte limit")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLargeError(f"request body exceeds the {limit} byte limit") from None

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        request_id = request_id_for(request)
        if self.in_flight >= self.limits.max_concurrent_requests:
            return json_error(UnavailableError("Switchyard is at capacity; retry shortly", code="overloaded",
                                               retry_after_ms=1000), request_id)
        self.in_flight += 1
        span = None
        if self.tracer is not None:
            span = self.tracer.start_span("POST /v1/chat/completions", context=telemetry.extract(request.headers),
                                          kind=SpanKind.SERVER, attributes={attributes.REQUEST_ID: request_id})
        try:
            response = await self._chat_completions(request, request_id, span)
            if span is not None:
                span.set_attribute(attributes.HTTP_RESPONSE_STATUS_CODE, response.status)
            return response
        finally:
            self.in_flight -= 1
            if span is not None:
                span.end()

    async def _chat_completions(self, request: web.Request, request_id: str,
                                span: Span | None) -> web.StreamResponse:
        started_at = time.monotonic()
        try:
            key = self.keys.authenticate(request.headers)
            ctype = request.headers.get("content-type", "")
            if not ctype.split(";", 1)[0].strip().lower() == JSON:
                raise InvalidRequestError("Content-Type must be application/json", param="Content-Type")
            body = await self._read_body(request)
            req = parse_chat_request(body, self.limits)
            if not req.model and req.models:
                req.model = req.models[0]  # Mesh/OpenRouter: the first of `models` is the primary
            # The model may still be empty: the router takes it from a template or the key's default.
            routing = pb.RoutingContext()
            conventions.apply_all(request.headers, req, routing)
            chat = to_chat_request(req, request_id=request_id, identity=identity_of(key), routing=routing)
            if span is not None:
                span.set_attribute(attributes.GEN_AI_REQUEST_MODEL, chat.model)
                span.set_attribute(attributes.STREAM, chat.stream)
                chat.trace_context.update(telemetry.inject(span))
        except SwitchyardError as exc:
            return json_error(exc, request_id)

        request_bytes = chat.SerializeToString()
        deadline = started_at + self.request_timeout_s
        events = self._events(request_bytes, deadline)
        try:
            try:
                first = await anext(events)
            except TransportError as exc:
                if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
                # Nothing was sent anywhere yet: one retry, on a fresh session
                # (and so possibly another router replica), within the same deadline.
                await events.aclose()
                events = self._events(request_bytes, deadline)
                first = await anext(events)
            except StopAsyncIteration:
                return json_error(UnavailableError("the router ended the stream without an answer"), request_id)
            if first.HasField("error"):
                return _proto_error_response(first.error, request_id_headers(request_id))
            started = first.started
            if chat.stream:
                return await self._stream(request, chat, started, events, request_id, started_at)
            return await self._complete(chat, started, events, request_id, started_at)
        except StopAsyncIteration:
            return json_error(UnavailableError("the router ended the stream without an answer"), request_id)
        except TransportError as exc:
            log.warning("router call failed: %s", exc.code.name)
            if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                err = pb.Error(status=504, type="timeout_error", code="deadline_exceeded",
                               message="the request timed out")
            else:
                err = pb.Error(status=503, type="api_error", code="router_unavailable",
                               message="the router is unavailable")
            return _proto_error_response(err, request_id_headers(request_id))
        finally:
            await events.aclose()

    async def _events(self, request_bytes: bytes, deadline: float) -> AsyncIterator[pb.ChatEvent]:
        """The router's events for one request, bounded by the request's
        deadline (a ``time.monotonic()`` instant) on every hop."""
        async for raw in self._chat(request_bytes, max(deadline - time.monotonic(), 0.001)):
            yield pb.ChatEvent.FromString(raw)

    async def _complete(self, chat: pb.ChatRequest, started: pb.Started, events, request_id: str,
                        started_at: float) -> web.Response:
        builder = CompletionBuilder("chatcmpl-" + request_id, int(time.time()), started.model or chat.model)
        finished = False
        async for event in events:
            kind = event.WhichOneof("event")
            if kind == "chunk":
                builder.add_chunk(event.chunk)
            elif kind == "usage":
                builder.set_usage(event.usage)
                finished = True
            elif kind == "error":
                return _proto_error_response(event.error, request_id_headers(request_id))
            elif kind == "trace":
                builder.trace = event.trace
        if not finished:
            return _proto_error_response(interrupted(), request_id_headers(request_id))
        latency_ms = (time.monotonic() - started_at) * 1000
        headers = _started_headers(started, request_id)
        _final_headers(headers, latency_ms, builder.usage)
        builder.extra_fields = extra_fields(started, latency_ms, builder.usage)
        return web.Response(body=orjson.dumps(builder.result()), content_type=JSON, headers=headers)

    async def _stream(self, request: web.Request, chat: pb.ChatRequest, started: pb.Started, events,
                      request_id: str, started_at: float) -> web.StreamResponse:
        headers = _started_headers(started, request_id)
        headers["content-type"] = "text/event-stream"
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(request)
        include_usage = chat.include_usage
        encoder = ChunkEncoder("chatcmpl-" + request_id, int(time.time()), started.model or chat.model,
                               include_usage=include_usage)
        error: pb.Error | None = None
        finished = False  # the usage event closes every complete answer
        try:
            async for event in self._with_heartbeats(events, response):
                kind = event.WhichOneof("event")
                if kind == "chunk":
                    await response.write(encoder.encode(event.chunk))
                elif kind == "usage":
                    finished = True
                    if include_usage:  # cost and latency are known only now: they ride on the usage chunk
                        fields = extra_fields(started, (time.monotonic() - started_at) * 1000, event.usage)
                        await response.write(encoder.encode_usage(event.usage, fields))
                elif kind == "trace":
                    await response.write(encoder.encode_trace(event.trace))
                elif kind == "error":
                    error = event.error
                    break
        except TransportError as exc:
            log.warning("router stream broke mid-answer: %s", exc.code.name)
        if error is None and not finished:
            error = interrupted()
        # A failed stream ends with an error event and never a clean [DONE].
        await response.write(encoder.encode_error(error) if error is not None else DONE)
        await response.write_eof()
        return response

    async def _with_heartbeats(self, events: AsyncIterator[pb.ChatEvent],
                               response: web.StreamResponse) -> AsyncIterator[pb.ChatEvent]:
        """The events, with an SSE comment written whenever the upstream is
        silent for ``sse_heartbeat_s`` (a reasoning model thinking), so that no
        proxy or client between here and the user times the stream out."""
        pending: asyncio.Task[pb.ChatEvent] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(events))
                done, _ = await asyncio.wait((pending,), timeout=self.sse_heartbeat_s)
                if not done:
                    await response.write(HEARTBEAT)
                    continue
                task, pending = pending, None
                try:
                    event = task.result()
                except StopAsyncIteration:
                    return
                yield event
        finally:
            if pending is not None:  # the client left while we waited
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)

    async def models(self, request: web.Request) -> web.Response:
        try:
            key = self.keys.authenticate(request.headers)
            listing = await self._list_models(rpb.ListModelsRequest(), timeout=10)
        except SwitchyardError as exc:
            return json_error(exc)
        except grpc.aio.AioRpcError:
            return json_error(UnavailableError("the router is unavailable"))
        data = [
            {"id": m.id, "object": "model", "created": 0, "owned_by": m.owned_by}
            for m in listing.models
            if key.allowed_models is None or m.id in key.allowed_models
        ]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=JSON)

    async def ready(self, _: web.Request) -> web.Response:
        """Ready when not draining and a router answers its health check
        (cached for a second: Envoy asks every second)."""
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        now = time.monotonic()
        if now >= self._ready_until:
            try:
                reply = await self._health(health_pb2.HealthCheckRequest(service="switchyard.v1.Router"), timeout=1)
            except grpc.aio.AioRpcError as exc:
                return web.json_response({"status": "router unavailable", "code": exc.code().name}, status=503)
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                return web.json_response({"status": "router not serving"}, status=503)
            self._ready_until = now + 1.0
        return web.json_response({"status": "ready"})
