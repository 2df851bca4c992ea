"""HTTP handlers. A chat request reads in one direction, the same for every
front door (``frontdoor.py``: OpenAI chat completions, Anthropic messages):

    parse → authenticate → conventions → canonical request → call → render

Response headers are sent only when the first successful attempt has
produced output, so every failure before that is a plain HTTP error with the
right status; a failure after it ends the SSE stream with an error event
(and, for OpenAI, no ``[DONE]``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import grpc
import orjson
from aiohttp import web
from grpc_health.v1 import health_pb2

from edge import conventions
from edge.admission import Admission, Ticket, client_address, read_body
from edge.anthropic_request import parse_count_tokens_request
from edge.anthropic_request import to_chat_request as anthropic_to_chat
from edge.auth import KeyStore
from edge.bounded_writer import BoundedWriter, SlowReaderError, slow_reader_error
from edge.embeddings import parse_embedding_request, to_embed_request
from edge.embeddings import render as render_embeddings
from edge.frontdoor import ANTHROPIC_MESSAGES, OPENAI_CHAT, FrontDoor
from edge.heartbeat import Heartbeat
from edge.orphan_usage import OrphanUsage, RelayStats
from edge.server_timing import timing_headers
from edge.transcode import error_status, extra_fields, identity_of
from switchyard import event_tags, telemetry
from switchyard.config import ApiKeySpec, Config
from switchyard.errors import (
    InvalidRequestError,
    SwitchyardError,
    UnavailableError,
)
from switchyard.grpc_server import CHANNEL_OPTIONS, unary_client
from switchyard.session import TransportError, streamer
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb
from switchyard.v1 import router_pb2 as rpb

log = logging.getLogger(__name__)

JSON = "application/json"


def json_error(exc: SwitchyardError, request_id: str = "", door: FrontDoor = OPENAI_CHAT) -> web.Response:
    headers = request_id_headers(request_id) if request_id else {}
    if exc.retry_after_ms:
        headers["retry-after"] = str(max(1, round(exc.retry_after_ms / 1000)))
    return web.Response(status=exc.status, body=door.error_body(exc.to_proto()), content_type=JSON,
                        headers=headers)


def _proto_error_response(err: pb.Error, headers: dict[str, str], door: FrontDoor = OPENAI_CHAT) -> web.Response:
    status = error_status(err)
    if err.headers:  # x-ratelimit-* and retry-after from the router's admission
        headers.update(err.headers)
    if err.retry_after_ms and "retry-after" not in headers:
        headers["retry-after"] = str(max(1, round(err.retry_after_ms / 1000)))
    return web.Response(status=status, body=door.error_body(err), content_type=JSON, headers=headers)


def interrupted() -> pb.Error:
    """A router stream that ended without its closing usage event."""
    return pb.Error(status=502, type="api_error", code="stream_interrupted",
                    message="the answer was interrupted before it was complete")


def router_failure(exc: TransportError) -> pb.Error:
    if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return pb.Error(status=504, type="timeout_error", code="deadline_exceeded", message="the request timed out")
    return pb.Error(status=503, type="api_error", code="router_unavailable", message="the router is unavailable")


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_for(request: web.Request) -> str:
    """The client's ``X-Request-Id`` when it is well formed, else a new one
    (the same one for every caller during one request)."""
    request_id = request.get("request_id")
    if request_id is None:
        given = request.headers.get("x-request-id", "")
        request_id = request["request_id"] = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    return request_id


def request_id_headers(request_id: str) -> dict[str, str]:
    """The request id under every convention's header name (seed 000: Modelux,
    seed 001: Muxx; ``request-id`` is the name Anthropic's SDKs read)."""
    return {"x-request-id": request_id, "x-modelux-request-id": request_id, "X-Muxx-Request-Id": request_id,
            "request-id": request_id}


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
    if started.headers:  # the key's rate-limit state, as OpenAI sends it on every answer
        headers.update(started.headers)
    if started.timing.edge_total_us:  # where the time to first output went (server_timing.py)
        headers.update(timing_headers(started.timing))
    return headers


def model_entry(info: rpb.ModelInfo) -> dict[str, Any]:
    """OpenAI's ``model`` object, with what Switchyard knows besides: the kind
    (model, alias, route, template) and, for routing configs, the version."""
    entry: dict[str, Any] = {"id": info.id, "object": "model", "created": 0, "owned_by": info.owned_by,
                             "kind": info.kind}
    if info.kind == "route":
        entry.update(version=info.version, strategy=info.strategy)
    if info.description:
        entry["description"] = info.description
    if info.model:
        entry["model"] = info.model
    return entry


def _final_headers(headers: dict[str, str], latency_ms: float, usage: pb.Usage | None) -> None:
    """Headers known only at the end: latency and cost (non-streaming answers)."""
    latency = str(round(latency_ms))
    headers["x-switchyard-latency-ms"] = headers["x-modelux-latency-ms"] = latency
    if usage is not None:
        cost = f"{usage.cost_usd:.6f}"
        headers["x-switchyard-cost-usd"] = headers["x-modelux-cost-usd"] = headers["X-Muxx-Cost"] = cost


STATUS_TIMEOUT_S = 5.0
PURGE_TIMEOUT_S = 15.0  # the router gives NATS 10 s for the purge


class Handlers:
    def __init__(self, config: Config, keys: KeyStore, router_target: str, request_timeout_s: float, *,
                 transport: str = "session", sessions: int = 2, sse_heartbeat_s: float = 15.0,
                 orphans: OrphanUsage | None = None) -> None:
        self.limits = config.limits
        self.orphans = orphans
        self.sse_heartbeat_s = sse_heartbeat_s
        self.keys = keys
        self.request_timeout_s = request_timeout_s
        self._channel = channel = grpc.aio.insecure_channel(router_target, options=CHANNEL_OPTIONS)
        self._chat = streamer(self._channel, "switchyard.v1.Router", "Chat", transport=transport, sessions=sessions)
        router = "/switchyard.v1.Router/"
        self._list_models = unary_client(channel, router + "ListModels", rpb.ListModelsRequest, rpb.ListModelsResponse)
        self._embed = unary_client(channel, router + "Embed", epb.EmbedRequest, epb.EmbedResponse)
        self._count_tokens = unary_client(channel, router + "CountTokens", pb.ChatRequest, pb.CountTokensResponse)
        self._health = unary_client(channel, "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest,
                                    health_pb2.HealthCheckResponse)
        self._budget_status = unary_client(channel, router + "BudgetStatus", rpb.BudgetStatusRequest,
                                           rpb.BudgetStatusResponse)
        self._purge_cache = unary_client(channel, router + "PurgeCache", rpb.PurgeCacheRequest, rpb.PurgeCacheResponse)
        if orphans is not None:  # an orphaned answer's budgets are charged by a live router replica
            orphans.connect(unary_client(channel, router + "SettleOrphan", rpb.OrphanSettlement, rpb.OrphanSettled))
        self._ready_until = 0.0
        self.draining = False
        self.admission = Admission(config.limits)

    async def close(self) -> None:
        await self._channel.close()

    async def budget_status(self, key: ApiKeySpec, end_user: str = "") -> rpb.BudgetStatusResponse:
        """What the key's, its tenant's and (given) an end user's budgets have
        spent and hold now (the router reads the ledgers)."""
        request = rpb.BudgetStatusRequest(identity=identity_of(key), end_user=end_user)
        return await self._call_router(self._budget_status, request, time.monotonic() + STATUS_TIMEOUT_S)

    async def purge_cache(self, request: rpb.PurgeCacheRequest) -> rpb.PurgeCacheResponse:
        """Ask a router replica to purge the shared cache (it tells the others)."""
        return await self._call_router(self._purge_cache, request, time.monotonic() + PURGE_TIMEOUT_S)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, OPENAI_CHAT)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, ANTHROPIC_MESSAGES)

    async def serve(self, request: web.Request, door: FrontDoor) -> web.StreamResponse:
        """One chat request through ``door``, admitted."""
        ticket = self.admission.ticket()
        try:
            return await self._serve(request, door, request_id_for(request), ticket)
        finally:
            ticket.release()

    async def admitted_body(self, request: web.Request, ticket: Ticket) -> tuple[ApiKeySpec, bytes]:
        """Authenticate, count the request against its key and address, read
        the JSON body, then take a slot: a request holds one only once its
        body is in, so trickling uploads hold none."""
        key = self.keys.authenticate(request.headers)
        ticket.admit_client(key.id, client_address(request))  # 429 beyond the key's or address's share
        ctype = request.headers.get("content-type", "")
        if not ctype.split(";", 1)[0].strip().lower() == JSON:
            raise InvalidRequestError("Content-Type must be application/json", param="Content-Type")
        body = await read_body(request, self.limits)
        ticket.admit()
        return key, body

    async def _serve(self, request: web.Request, door: FrontDoor, request_id: str,
                     ticket: Ticket) -> web.StreamResponse:
        started_at = time.monotonic()
        try:
            key, body = await self.admitted_body(request, ticket)
            parsed = door.parse(body, self.limits)
            routing = pb.RoutingContext()
            conventions.apply_headers(request.headers, routing)
            chat = door.to_chat(parsed, request_id=request_id, identity=identity_of(key), routing=routing)
            telemetry.inject_current(chat.trace_context)  # the router continues the request's trace
        except SwitchyardError as exc:
            return json_error(exc, request_id, door)

        request_bytes = chat.SerializeToString()
        deadline = started_at + self.request_timeout_s
        stats = RelayStats()
        started: pb.Started | None = None
        sent_at = time.monotonic()
        events = self._events(request_bytes, deadline, stats)
        try:
            try:
                first = await anext(events)
            except TransportError as exc:
                if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
                # Nothing was sent anywhere yet: one retry, on a fresh session
                # (and so possibly another router replica), within the same deadline.
                await events.aclose()
                events = self._events(request_bytes, deadline, stats)
                first = await anext(events)
            if first.HasField("error"):
                return _proto_error_response(first.error, request_id_headers(request_id), door)
            started = first.started
            timing = started.timing
            timing.edge_us = int((sent_at - started_at) * 1e6)
            timing.edge_total_us = int((time.monotonic() - started_at) * 1e6)
            if chat.stream:
                return await self._stream(request, door, chat, started, events, request_id, started_at, stats)
            return await self._complete(door, chat, started, events, request_id, started_at)
        except StopAsyncIteration:
            return json_error(UnavailableError("the router ended the stream without an answer"), request_id, door)
        except TransportError as exc:
            log.warning("router call failed: %s", exc.code.name)
            stats.router_lost = started is not None
            return _proto_error_response(router_failure(exc), request_id_headers(request_id), door)
        finally:
            await events.aclose()
            if self.orphans is not None and started is not None:
                self.orphans.record(chat, started, stats, started_at)

    async def _events(self, request_bytes: bytes, deadline: float, stats: RelayStats) -> AsyncIterator[pb.ChatEvent]:
        """The router's events for one request, bounded by the request's
        deadline (a ``time.monotonic()`` instant) on every hop; ``stats``
        counts what was relayed (for an answer whose router dies)."""
        async for raw in self._chat(request_bytes, max(deadline - time.monotonic(), 0.001)):
            tag = raw[0]
            if tag == event_tags.CHUNK:
                stats.chunks += 1
                stats.chunk_bytes += len(raw)
            elif tag == event_tags.USAGE:
                stats.usage_seen = True
            yield pb.ChatEvent.FromString(raw)

    async def _complete(self, door: FrontDoor, chat: pb.ChatRequest, started: pb.Started, events,
                        request_id: str, started_at: float) -> web.Response:
        builder = door.completion(chat, started, request_id)
        finished = False
        async for event in events:
            kind = event.WhichOneof("event")
            if kind == "chunk":
                builder.add_chunk(event.chunk)
            elif kind == "usage":
                builder.set_usage(event.usage)
                finished = True
            elif kind == "error":
                return _proto_error_response(event.error, request_id_headers(request_id), door)
            elif kind == "trace":
                builder.trace = event.trace
        if not finished:
            return _proto_error_response(interrupted(), request_id_headers(request_id), door)
        latency_ms = (time.monotonic() - started_at) * 1000
        headers = _started_headers(started, request_id)
        _final_headers(headers, latency_ms, builder.usage)
        builder.extra_fields = extra_fields(started, latency_ms, builder.usage)
        try:
            body = orjson.dumps(builder.result())
        except SwitchyardError as exc:
            return json_error(exc, request_id, door)
        return web.Response(body=body, content_type=JSON, headers=headers)

    async def _stream(self, request: web.Request, door: FrontDoor, chat: pb.ChatRequest, started: pb.Started,
                      events, request_id: str, started_at: float, stats: RelayStats) -> web.StreamResponse:
        headers = _started_headers(started, request_id)
        headers["content-type"] = "text/event-stream"
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(request)
        out = BoundedWriter(request, response, self.limits.max_stream_buffer_bytes)
        encoder = door.stream(chat, started, request_id)
        error: pb.Error | None = None
        finished = False  # the usage event closes every complete answer
        heartbeat = Heartbeat(self.sse_heartbeat_s, partial(out.write, encoder.heartbeat))
        try:
            if opening := encoder.start():
                await out.write(opening)
            async for event in events:
                heartbeat.touch()
                kind = event.WhichOneof("event")
                if kind == "chunk":
                    await out.write(encoder.encode(event.chunk))
                elif kind == "usage":
                    finished = True
                    # Cost and latency are known only now: they ride on the usage frame.
                    fields = extra_fields(started, (time.monotonic() - started_at) * 1000, event.usage)
                    if frame := encoder.encode_usage(event.usage, fields):
                        await out.write(frame)
                elif kind == "trace":
                    if frame := encoder.encode_trace(event.trace):
                        await out.write(frame)
                elif kind == "error":
                    error = event.error
                    break
        except TransportError as exc:
            log.warning("router stream broke mid-answer: %s", exc.code.name)
            stats.router_lost = True
        except SlowReaderError:
            log.info("client not reading: stream ended with over %d bytes unread", out.max_buffered)
            error = slow_reader_error(out.max_buffered)
            await events.aclose()  # cancel the router call now, not after the client has read
        except ConnectionResetError:
            # The client left and a write found its connection closing before
            # aiohttp cancelled this handler: the same as that cancellation.
            await events.aclose()
            return response
        finally:
            await heartbeat.close()
        if error is None and not finished:
            error = interrupted()
        # A failed stream ends with an error event and never a clean ending.
        with contextlib.suppress(ConnectionResetError):  # the client may leave at this very moment too
            await response.write(encoder.encode_error(error) if error is not None else encoder.done())
            await response.write_eof()
        return response

    # ------------------------------------------------------ unary requests --

    async def _unary(self, request: web.Request, door: FrontDoor,
                     answer: Callable[[ApiKeySpec, bytes, str, float], Awaitable[web.Response]]) -> web.Response:
        """One single-answer request: admitted like chat; ``answer`` parses,
        calls the router before ``deadline`` and renders."""
        request_id = request_id_for(request)
        ticket = self.admission.ticket()
        try:
            key, body = await self.admitted_body(request, ticket)
            response = await answer(key, body, request_id, time.monotonic() + self.request_timeout_s)
        except SwitchyardError as exc:
            response = json_error(exc, request_id, door)
        except grpc.aio.AioRpcError as exc:
            log.warning("router call failed: %s", exc.code().name)
            response = _proto_error_response(router_failure(TransportError(exc.code())),
                                             request_id_headers(request_id), door)
        finally:
            ticket.release()
        return response

    async def _call_router(self, method: Callable[..., Awaitable[Any]], message: Any, deadline: float) -> Any:
        """A unary router call; one retry when the router was unreachable."""
        try:
            return await method(message, timeout=max(deadline - time.monotonic(), 0.001))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            return await method(message, timeout=max(deadline - time.monotonic(), 0.001))

    async def embeddings(self, request: web.Request) -> web.Response:
        async def answer(key: ApiKeySpec, body: bytes, request_id: str, deadline: float) -> web.Response:
            started_at = time.monotonic()
            parsed = parse_embedding_request(body, self.limits)
            routing = pb.RoutingContext()
            conventions.apply_headers(request.headers, routing)
            embed = to_embed_request(parsed, request_id=request_id, identity=identity_of(key), routing=routing)
            telemetry.inject_current(embed.trace_context)  # the router continues the request's trace
            reply = await self._call_router(self._embed, embed, deadline)
            if reply.HasField("error"):
                return _proto_error_response(reply.error, request_id_headers(request_id))
            headers = _started_headers(reply.started, request_id)
            _final_headers(headers, (time.monotonic() - started_at) * 1000, reply.usage)
            return web.Response(body=render_embeddings(reply, as_base64=parsed.encoding_format == "base64"),
                                content_type=JSON, headers=headers)

        return await self._unary(request, OPENAI_CHAT, answer)

    async def count_tokens(self, request: web.Request) -> web.Response:
        """Anthropic's ``/v1/messages/count_tokens``: the prompt in the
        resolved upstream's tokens (estimated where it cannot count)."""
        async def answer(key: ApiKeySpec, body: bytes, request_id: str, deadline: float) -> web.Response:
            parsed = parse_count_tokens_request(body, self.limits)
            routing = pb.RoutingContext()
            conventions.apply_headers(request.headers, routing)
            chat = anthropic_to_chat(parsed, request_id=request_id, identity=identity_of(key), routing=routing)
            telemetry.inject_current(chat.trace_context)  # the router continues the request's trace
            reply = await self._call_router(self._count_tokens, chat, deadline)
            if reply.HasField("error"):
                return _proto_error_response(reply.error, request_id_headers(request_id), ANTHROPIC_MESSAGES)
            headers = _started_headers(reply.started, request_id)
            headers["x-switchyard-tokens-estimated"] = "true" if reply.estimated else "false"
            return web.Response(body=orjson.dumps({"input_tokens": reply.input_tokens}), content_type=JSON,
                                headers=headers)

        return await self._unary(request, ANTHROPIC_MESSAGES, answer)

    async def models(self, request: web.Request) -> web.Response:
        """The models, aliases, routing configs and templates this key may use."""
        request_id = request_id_for(request)
        try:
            key = self.keys.authenticate(request.headers)
            listing = await self._list_models(rpb.ListModelsRequest(identity=identity_of(key)), timeout=10)
        except SwitchyardError as exc:
            return json_error(exc, request_id)
        except grpc.aio.AioRpcError:
            return json_error(UnavailableError("the router is unavailable"), request_id)
        body = {"object": "list", "data": [model_entry(m) for m in listing.models]}
        return web.Response(body=orjson.dumps(body), content_type=JSON, headers=request_id_headers(request_id))

    async def model(self, request: web.Request) -> web.Response:
        """One identifier, resolved and scoped as a request naming it would be."""
        request_id = request_id_for(request)
        try:
            key = self.keys.authenticate(request.headers)
            listing = await self._list_models(
                rpb.ListModelsRequest(identity=identity_of(key), id=request.match_info["model"]), timeout=10)
        except SwitchyardError as exc:
            return json_error(exc, request_id)
        except grpc.aio.AioRpcError:
            return json_error(UnavailableError("the router is unavailable"), request_id)
        if listing.HasField("error"):
            return _proto_error_response(listing.error, request_id_headers(request_id))
        return web.Response(body=orjson.dumps(model_entry(listing.models[0])), content_type=JSON,
                            headers=request_id_headers(request_id))

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
