"""The spans of Router.Embed and Router.CountTokens, as Router.Chat has them:
a SERVER span for the call (the child of the edge's request span, from the
request's trace context) and, per attempt, a GenAI CLIENT span named
``{operation} {model}`` (operation ``embeddings`` or ``count_tokens``,
provider, model, server address, input tokens, the dimensions asked for,
``error.type`` and status ERROR on a failure), whose context travels to the
provider worker in the attempt message."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, MutableMapping

import grpc
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from router.routes import RoutingTable
from switchyard import attributes as a
from switchyard import genai, telemetry
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb
from switchyard.v1 import provider_pb2 as ppb


class UnarySpans:
    def __init__(self, tracer: Tracer, table: Callable[[], RoutingTable]) -> None:
        self.tracer = tracer
        self.table = table

    def call(self, method: str, request_id: str, model: str, trace_context: Mapping[str, str]) -> Span:
        """The SERVER span of Router/``method``."""
        return self.tracer.start_span(
            f"switchyard.v1.Router/{method}", kind=SpanKind.SERVER, context=telemetry.extract(trace_context),
            attributes={a.RPC_SYSTEM: "grpc", a.RPC_SERVICE: "switchyard.v1.Router", a.RPC_METHOD: method,
                        a.REQUEST_ID: request_id, a.GEN_AI_REQUEST_MODEL: model})

    def embed_attempt(self, call: Span, attempt: ppb.EmbedAttempt) -> Span:
        """An embeddings attempt's span; its context is written into ``attempt`` for the provider worker."""
        extra = {a.GEN_AI_EMBEDDINGS_DIMENSION_COUNT: attempt.request.dimensions} \
            if attempt.request.HasField("dimensions") else {}
        return self._attempt(call, genai.OPERATION_EMBEDDINGS, attempt.target, attempt.attempt,
                             attempt.trace_context, extra)

    def count_attempt(self, call: Span, attempt: ppb.GenerateRequest) -> Span:
        """A token-count attempt's span; its context is written into ``attempt``."""
        return self._attempt(call, genai.OPERATION_COUNT_TOKENS, attempt.target, attempt.attempt,
                             attempt.trace_context, {})

    def _attempt(self, call: Span, operation: str, target: ppb.Target, number: int,
                 carrier: MutableMapping[str, str], extra: dict[str, int]) -> Span:
        spec = self.table().config.providers.get(target.provider)
        base_url = spec.base_url if spec is not None else ""
        attributes = {a.GEN_AI_OPERATION_NAME: operation,
                      a.GEN_AI_PROVIDER_NAME: genai.provider_name(spec.type if spec else "", base_url),
                      a.GEN_AI_REQUEST_MODEL: target.model, a.PROVIDER: target.provider, a.ATTEMPT: number, **extra}
        if address := genai.server_address(base_url):
            attributes[a.SERVER_ADDRESS], attributes[a.SERVER_PORT] = address
        span = self.tracer.start_span(f"{operation} {target.model}", kind=SpanKind.CLIENT,
                                      context=trace.set_span_in_context(call), attributes=attributes)
        carrier.update(telemetry.inject(span))
        return span


def attempt_ended(span: Span, model: str, reply: epb.EmbedResponse | pb.CountTokensResponse | None,
                  error: BaseException | None) -> None:
    """Close an attempt's span with what came back: an answer, an error answer, or an exception."""
    if reply is not None and reply.HasField("error"):
        _fail(span, genai.error_type(reply.error))
    elif isinstance(error, grpc.aio.AioRpcError):
        _fail(span, "deadline_exceeded" if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
              else "provider_unavailable")
    elif error is not None:
        if isinstance(error, asyncio.CancelledError):
            span.set_attribute(a.OUTCOME, "cancelled")
        else:
            _fail(span, type(error).__name__)
    elif isinstance(reply, pb.CountTokensResponse):
        span.set_attributes({a.GEN_AI_RESPONSE_MODEL: model, a.GEN_AI_USAGE_INPUT_TOKENS: reply.input_tokens})
    elif reply is not None:  # embeddings: the model the upstream says answered, if it says
        span.set_attributes({a.GEN_AI_RESPONSE_MODEL: reply.upstream_model or model,
                             a.GEN_AI_USAGE_INPUT_TOKENS: reply.usage.prompt_tokens})
    span.end()


def call_ended(span: Span, error: pb.Error | None, cancelled: bool) -> None:
    """Close the call's span with the request's outcome."""
    if error is not None:
        _fail(span, genai.error_type(error))
    span.set_attribute(a.OUTCOME, "cancelled" if cancelled else "error" if error is not None else "ok")
    span.end()


def _fail(span: Span, kind: str) -> None:
    span.set_attribute(a.ERROR_TYPE, kind)
    span.set_status(Status(StatusCode.ERROR, kind))
