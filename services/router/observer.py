"""What the router reports, from the session hook (``switchyard.session``)
and the usage event, never from the request path itself:

- ``ChatCalls`` (server side): a SERVER span per Router.Chat call, current
  while the pipeline runs, and the requests in flight;
- ``AttemptCalls`` (client side, tracing only): one GenAI inference span
  ``chat {model}`` per attempt (Provider.Generate call), whose context is
  appended to the GenerateRequest bytes (protobuf merges concatenated
  messages) for the provider worker to continue;
- ``ObservedUsage``: every settled request's metrics, its outcome on the
  current span, and that span's context in the usage event's NATS headers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from router.breaker import CLOSED, HALF_OPEN, OPEN, BreakerBoard
from router.routes import RoutingTable
from router.usage import UsageSink
from switchyard import attributes as a
from switchyard import event_tags, genai, telemetry
from switchyard.events import UsagePublisher
from switchyard.metrics import Bounded, RouterMetrics, publisher_metrics
from switchyard.session import TransportError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb
from switchyard.v1 import usage_pb2 as upb

_RPC = {a.RPC_SYSTEM: "grpc", a.RPC_SERVICE: "switchyard.v1.Router", a.RPC_METHOD: "Chat"}


def _ended_by_caller(error: BaseException | None) -> bool:
    return isinstance(error, (asyncio.CancelledError, GeneratorExit))


# ------------------------------------------------------------ server side --

class ChatCalls:
    """The session hook of Router.Chat."""

    def __init__(self, tracer: Tracer | None, metrics: RouterMetrics | None) -> None:
        self.tracer = tracer
        self.metrics = metrics

    def start(self, request: bytes) -> _ChatCall:
        return _ChatCall(self, request)


class _ChatCall:
    __slots__ = ("context", "metrics", "request", "span")

    def __init__(self, owner: ChatCalls, request: bytes) -> None:
        self.request = request
        self.context: Context | None = None
        self.span = None
        self.metrics = owner.metrics
        if self.metrics is not None:
            self.metrics.in_flight.inc()
        if owner.tracer is not None:
            chat = pb.ChatRequest.FromString(request)
            self.span = owner.tracer.start_span(
                "switchyard.v1.Router/Chat", kind=SpanKind.SERVER, context=telemetry.extract(chat.trace_context),
                attributes={**_RPC, a.REQUEST_ID: chat.request_id, a.GEN_AI_REQUEST_MODEL: chat.model})
            self.context = trace.set_span_in_context(self.span)

    def event(self, raw: bytes) -> None:
        pass

    def end(self, error: BaseException | None) -> None:
        if self.metrics is not None:
            self.metrics.in_flight.dec()
        if self.span is not None:
            if error is not None and not _ended_by_caller(error):
                self.span.set_attribute(a.ERROR_TYPE, type(error).__name__)
                self.span.set_status(Status(StatusCode.ERROR))
            self.span.end()


class ObservedUsage:
    """A usage sink that also reports each settled request."""

    def __init__(self, sink: UsageSink, metrics: RouterMetrics | None) -> None:
        self.sink = sink
        self.metrics = metrics
        self.models, self.providers, self.routes = Bounded(200), Bounded(64), Bounded(200)
        self.error_types = Bounded(64)

    def record(self, event: upb.UsageEvent, headers: Mapping[str, str] | None = None) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            self._annotate(span, event)
        carrier = dict(headers or {})
        telemetry.inject_current(carrier)  # the usage event joins the request's trace
        if self.metrics is not None:
            self._count(event)
        self.sink.record(event, carrier or None)

    @staticmethod
    def _annotate(span: trace.Span, event: upb.UsageEvent) -> None:
        attributes: dict[str, Any] = {a.OUTCOME: event.status, a.COST_USD: event.usage.cost_usd}
        if event.model:
            attributes[a.GEN_AI_RESPONSE_MODEL] = event.model
        if event.route:
            attributes[a.ROUTE] = event.route
        if event.cache_status:
            attributes[a.CACHE_STATUS] = event.cache_status
        if event.status == "error":
            attributes[a.ERROR_TYPE] = event.error_type or genai.OTHER_ERROR
            attributes[a.HTTP_RESPONSE_STATUS_CODE] = event.http_status
            span.set_status(Status(StatusCode.ERROR, event.error_type))
        span.set_attributes(attributes)

    def _count(self, event: upb.UsageEvent) -> None:
        m = self.metrics
        assert m is not None
        route, model, provider = self.routes(event.route), self.models(event.model), self.providers(event.provider)
        labels = (event.endpoint or "chat", route, model, provider)
        m.requests(*labels, event.status).inc()
        m.duration(*labels, event.status).observe(event.latency_ms / 1000)
        if event.ttft_ms:
            m.ttft(*labels).observe(event.ttft_ms / 1000)
        usage = event.usage
        if usage.prompt_tokens or usage.completion_tokens:
            for kind, count in (("input", usage.prompt_tokens), ("output", usage.completion_tokens),
                                ("cache_read", usage.cached_tokens), ("cache_creation", usage.cache_write_tokens),
                                ("reasoning", usage.reasoning_tokens)):
                if count or kind in ("input", "output"):
                    m.tokens(route, model, provider, kind).observe(count)
        if usage.cost_usd:
            m.cost(route, model, provider).inc(usage.cost_usd)
        if event.cost_saved_usd:
            m.cost_saved.inc(event.cost_saved_usd)
        if event.cache_status:
            m.cache(event.cache_status).inc()
        if event.status == "error" and not event.attempts:
            m.rejections(str(event.http_status), self.error_types(event.error_type)).inc()
        for attempt in event.attempts:
            m.attempts(self.providers(attempt.provider), self.models(attempt.model), attempt.outcome).inc()


# ------------------------------------------------------------ client side --

class AttemptCalls:
    """The client-side session hook of Provider.Generate: one span per attempt."""

    def __init__(self, tracer: Tracer, table: Callable[[], RoutingTable], content: bool = False) -> None:
        self.tracer = tracer
        self.table = table
        self.content = content

    def start(self, request: bytes) -> _AttemptCall:
        return _AttemptCall(self, request)


class _AttemptCall:
    __slots__ = ("context", "failed", "first_chunk_at", "model", "reasons", "request", "response_id", "span",
                 "started_at", "stream", "texts", "usage_seen")

    def __init__(self, owner: AttemptCalls, request: bytes) -> None:
        self.context: Context | None = None
        self.started_at = time.monotonic()
        self.first_chunk_at: float | None = None
        self.failed = self.usage_seen = False
        self.reasons: dict[int, str] = {}
        generate = ppb.GenerateRequest.FromString(request)
        target, chat = generate.target, generate.request
        self.model, self.stream, self.response_id = target.model, chat.stream, genai.response_id(chat)
        self.texts: dict[int, list[str]] | None = {} if owner.content else None
        spec = owner.table().config.providers.get(target.provider)
        base_url = spec.base_url if spec is not None else ""
        attributes = {a.GEN_AI_OPERATION_NAME: genai.OPERATION_CHAT,
                      a.GEN_AI_PROVIDER_NAME: genai.provider_name(spec.type if spec else "", base_url),
                      a.GEN_AI_REQUEST_MODEL: target.model, a.PROVIDER: target.provider,
                      a.ATTEMPT: generate.attempt, **genai.request_attributes(chat)}
        if address := genai.server_address(base_url):
            attributes[a.SERVER_ADDRESS], attributes[a.SERVER_PORT] = address
        self.span = span = owner.tracer.start_span(f"{genai.OPERATION_CHAT} {target.model}", kind=SpanKind.CLIENT,
                                                   attributes=attributes)
        if span.is_recording() and owner.content:
            span.set_attribute(a.GEN_AI_INPUT_MESSAGES, genai.input_messages(chat))
        carrier = telemetry.inject(span)
        self.request = request + ppb.GenerateRequest(trace_context=carrier).SerializeToString() if carrier \
            else request

    def event(self, raw: bytes) -> None:
        tag = raw[0] if raw else 0
        if tag == event_tags.CHUNK:
            if self.first_chunk_at is None:
                self.first_chunk_at = time.monotonic()
            if self.span.is_recording():
                genai.note_chunk(ppb.GenerateEvent.FromString(raw).chunk, self.reasons, self.texts)
        elif tag == event_tags.USAGE:
            self.usage_seen = True
            self.span.set_attributes(genai.usage_attributes(ppb.GenerateEvent.FromString(raw).usage))
        elif tag == event_tags.ERROR:
            self._fail(genai.error_type(ppb.GenerateEvent.FromString(raw).error))
        elif tag == event_tags.TIMING and self.span.is_recording():
            # The upstream's own id of its answer and the model version that answered, when it gave them.
            timing = ppb.GenerateEvent.FromString(raw).timing
            self.response_id = timing.upstream_response_id or self.response_id
            self.model = timing.upstream_model or self.model

    def _fail(self, kind: str) -> None:
        self.failed = True
        self.span.set_attribute(a.ERROR_TYPE, kind)
        self.span.set_status(Status(StatusCode.ERROR, kind))

    def end(self, error: BaseException | None) -> None:
        span = self.span
        if error is not None and not self.failed:
            if isinstance(error, TransportError):
                self._fail("deadline_exceeded" if error.code == grpc.StatusCode.DEADLINE_EXCEEDED
                           else "provider_unavailable")
            elif not _ended_by_caller(error):
                self._fail(type(error).__name__)
            elif not self.usage_seen:
                span.set_attribute(a.OUTCOME, "cancelled")
        if self.first_chunk_at is not None and span.is_recording():
            answer: dict[str, Any] = {a.GEN_AI_RESPONSE_ID: self.response_id, a.GEN_AI_RESPONSE_MODEL: self.model}
            if self.reasons:
                answer[a.GEN_AI_RESPONSE_FINISH_REASONS] = genai.finish_reasons(self.reasons)
            if self.stream:
                answer[a.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = self.first_chunk_at - self.started_at
            if self.texts is not None:
                answer[a.GEN_AI_OUTPUT_MESSAGES] = genai.output_messages(self.texts, self.reasons)
            span.set_attributes(answer)
        span.end()


# ------------------------------------------------------------ scrape time --

BREAKER_STATES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
MAX_BREAKER_SERIES = 500  # pass-through providers accept any model name: a breaker each


def state_metrics(breakers: BreakerBoard, publisher: UsagePublisher | None) -> Iterator[tuple[str, str, list[str],
                                                                                               list[Any]]]:
    """Gauges read when Prometheus scrapes: breaker states, the usage publisher."""
    states = sorted(breakers.states().items(), key=lambda item: -BREAKER_STATES.get(item[1], 0))
    yield ("switchyard_breaker_state", "Circuit breaker per provider and model: 0 closed, 1 half-open, 2 open "
           "(as last used; the not-closed ones first when there are many)", ["provider", "model"],
           [(key, BREAKER_STATES.get(state, 0)) for key, state in states[:MAX_BREAKER_SERIES]])
    if publisher is not None:
        yield from publisher_metrics(publisher)
