"""What a provider worker reports, from the session hook of Provider.Generate
(``switchyard.session``): per attempt, a SERVER span (child of the router's
``chat {model}`` span, from the GenerateRequest's trace context) with a
CLIENT span for the upstream HTTP call, and the GenAI client metrics
(gen_ai.client.token.usage, operation duration, time to first chunk) by
provider and model. Provider.Embed and Provider.CountTokens calls get the
same SERVER span and metrics with operation ``embeddings`` or
``count_tokens`` (``UnaryCall``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from switchyard import attributes as a
from switchyard import event_tags, genai, telemetry
from switchyard.config import ProviderSpec
from switchyard.metrics import Bounded, GenAiClientMetrics
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb
from switchyard.v1 import provider_pb2 as ppb

_RPC = {a.RPC_SYSTEM: "grpc", a.RPC_SERVICE: "switchyard.v1.Provider", a.RPC_METHOD: "Generate"}


class GenerateCalls:
    def __init__(self, tracer: Tracer | None, metrics: GenAiClientMetrics | None,
                 providers: Mapping[str, ProviderSpec]) -> None:
        self.tracer = tracer
        self.metrics = metrics
        self.providers = providers
        self.models, self.names, self.error_types = Bounded(200), Bounded(64), Bounded(64)

    def start(self, request: bytes) -> _GenerateCall:
        return _GenerateCall(self, request)

    def embed(self, attempt: ppb.EmbedAttempt) -> UnaryCall:
        return UnaryCall(self, "Embed", genai.OPERATION_EMBEDDINGS, attempt.target, attempt.attempt,
                         attempt.trace_context)

    def count(self, request: ppb.GenerateRequest) -> UnaryCall:
        return UnaryCall(self, "CountTokens", genai.OPERATION_COUNT_TOKENS, request.target, request.attempt,
                         request.trace_context)


class _GenerateCall:
    __slots__ = ("context", "error_type", "first_chunk_at", "labels", "metrics", "owner", "request", "server",
                 "started_at", "stream", "upstream")

    def __init__(self, owner: GenerateCalls, request: bytes) -> None:
        self.request = request
        self.owner = owner
        self.context = None
        self.started_at = time.monotonic()
        self.first_chunk_at: float | None = None
        self.error_type = ""
        self.server = self.upstream = None
        generate = ppb.GenerateRequest.FromString(request)
        target = generate.target
        self.stream = generate.request.stream
        spec = owner.providers.get(target.provider)
        base_url = spec.base_url if spec is not None else ""
        provider_name = genai.provider_name(spec.type if spec else "", base_url)
        self.metrics = owner.metrics
        if self.metrics is not None:
            self.metrics.in_flight.inc()
            self.labels = (genai.OPERATION_CHAT, provider_name, owner.models(target.model),
                           owner.names(target.provider))
        if owner.tracer is not None:
            self.server = owner.tracer.start_span(
                "switchyard.v1.Provider/Generate", kind=SpanKind.SERVER,
                context=telemetry.extract(generate.trace_context),
                attributes={**_RPC, a.PROVIDER: target.provider, a.GEN_AI_REQUEST_MODEL: target.model,
                            a.ATTEMPT: generate.attempt})
            attributes = {a.HTTP_REQUEST_METHOD: "POST", a.GEN_AI_PROVIDER_NAME: provider_name}
            if address := genai.server_address(base_url):
                attributes[a.SERVER_ADDRESS], attributes[a.SERVER_PORT] = address
            self.upstream = owner.tracer.start_span("POST", kind=SpanKind.CLIENT, attributes=attributes,
                                                    context=trace.set_span_in_context(self.server))

    def event(self, raw: bytes) -> None:
        tag = raw[0] if raw else 0
        if tag == event_tags.CHUNK:
            if self.first_chunk_at is None:
                self.first_chunk_at = time.monotonic()
                if self.stream and self.metrics is not None:
                    self.metrics.ttfc(*self.labels).observe(self.first_chunk_at - self.started_at)
        elif tag == event_tags.USAGE:
            if self.metrics is not None:
                usage = ppb.GenerateEvent.FromString(raw).usage
                self.metrics.tokens(*self.labels, "input").observe(usage.prompt_tokens)
                self.metrics.tokens(*self.labels, "output").observe(usage.completion_tokens)
        elif tag == event_tags.ERROR:
            error = ppb.GenerateEvent.FromString(raw).error
            self.error_type = genai.error_type(error)
            if self.upstream is not None:
                if error.upstream_status:
                    self.upstream.set_attribute(a.HTTP_RESPONSE_STATUS_CODE, error.upstream_status)

    def _fail(self, span: trace.Span) -> None:
        span.set_attribute(a.ERROR_TYPE, self.error_type)
        span.set_status(Status(StatusCode.ERROR, self.error_type))

    def end(self, error: BaseException | None) -> None:
        cancelled = isinstance(error, (asyncio.CancelledError, GeneratorExit))
        if error is not None and not cancelled and not self.error_type:
            self.error_type = type(error).__name__
        if self.metrics is not None:
            self.metrics.in_flight.dec()
            self.metrics.duration(*self.labels, self.owner.error_types(self.error_type)).observe(
                time.monotonic() - self.started_at)
        if self.server is not None and self.upstream is not None:
            if self.error_type:
                self._fail(self.server)
                self._fail(self.upstream)
            elif cancelled:
                self.server.set_attribute(a.OUTCOME, "cancelled")
            else:
                self.upstream.set_attribute(a.HTTP_RESPONSE_STATUS_CODE, 200)
            self.upstream.end()
            self.server.end()


class UnaryCall:
    """One Provider.Embed or Provider.CountTokens call: a SERVER span (child
    of the router's attempt span) with a CLIENT span for the upstream HTTP
    call when there was one (a count the worker estimated made none), and the
    GenAI client metrics with the call's operation (duration, input tokens),
    like a Generate call's."""

    __slots__ = ("labels", "metrics", "owner", "span", "started_at", "upstream_attributes")

    def __init__(self, owner: GenerateCalls, method: str, operation: str, target: ppb.Target, attempt: int,
                 trace_context: Mapping[str, str]) -> None:
        self.owner = owner
        self.started_at = time.monotonic()
        spec = owner.providers.get(target.provider)
        provider_name = genai.provider_name(spec.type if spec else "", spec.base_url if spec else "")
        self.labels = (operation, provider_name, owner.models(target.model), owner.names(target.provider))
        self.metrics = owner.metrics
        if self.metrics is not None:
            self.metrics.in_flight.inc()
        self.span = owner.tracer.start_span(
            f"switchyard.v1.Provider/{method}", kind=SpanKind.SERVER, context=telemetry.extract(trace_context),
            attributes={**_RPC, a.RPC_METHOD: method, a.PROVIDER: target.provider,
                        a.GEN_AI_REQUEST_MODEL: target.model, a.ATTEMPT: attempt}) \
            if owner.tracer is not None else None
        self.upstream_attributes: dict[str, str | int] = {}  # for the upstream call's span, when traced
        if self.span is not None:
            self.upstream_attributes = {a.HTTP_REQUEST_METHOD: "POST", a.GEN_AI_PROVIDER_NAME: provider_name}
            if address := genai.server_address(spec.base_url if spec else ""):
                self.upstream_attributes[a.SERVER_ADDRESS], self.upstream_attributes[a.SERVER_PORT] = address

    def end(self, reply: epb.EmbedResponse | pb.CountTokensResponse | None) -> None:
        """``reply``: the answer (None when the call was cut short)."""
        error_type = genai.error_type(reply.error) if reply is not None and reply.HasField("error") else \
            ("" if reply is not None else "cancelled")
        if self.metrics is not None:
            self.metrics.in_flight.dec()
            self.metrics.duration(*self.labels, self.owner.error_types(error_type)).observe(
                time.monotonic() - self.started_at)
            if reply is not None and not error_type:
                self.metrics.tokens(*self.labels, "input").observe(input_tokens(reply))
        if self.span is not None:
            if reply is not None and not (isinstance(reply, pb.CountTokensResponse) and reply.estimated):
                self._upstream_span(reply, error_type)
            if error_type:
                self.span.set_attribute(a.ERROR_TYPE, error_type)
                self.span.set_status(Status(StatusCode.ERROR, error_type))
            self.span.end()

    def _upstream_span(self, reply: epb.EmbedResponse | pb.CountTokensResponse, error_type: str) -> None:
        """The upstream HTTP call, from the call's start to its answer (as a
        Generate call's is); its status is the upstream's, when it gave one."""
        assert self.owner.tracer is not None and self.span is not None
        upstream = self.owner.tracer.start_span("POST", kind=SpanKind.CLIENT, attributes=self.upstream_attributes,
                                                context=trace.set_span_in_context(self.span),
                                                start_time=getattr(self.span, "start_time", None))
        if error_type:
            if reply.error.upstream_status:
                upstream.set_attribute(a.HTTP_RESPONSE_STATUS_CODE, reply.error.upstream_status)
            upstream.set_attribute(a.ERROR_TYPE, error_type)
            upstream.set_status(Status(StatusCode.ERROR, error_type))
        else:
            upstream.set_attribute(a.HTTP_RESPONSE_STATUS_CODE, 200)
        upstream.end()


def input_tokens(reply: epb.EmbedResponse | pb.CountTokensResponse) -> int:
    return reply.input_tokens if isinstance(reply, pb.CountTokensResponse) else reply.usage.prompt_tokens
