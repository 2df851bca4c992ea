"""Router servicer: thin glue between the wire and resolve/execute/usage.

Chat and ChatSession use pass-through (de)serialisers: the request bytes are
parsed once for routing and re-embedded unchanged in each GenerateRequest,
and provider event bytes are relayed unchanged to the edge.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import grpc
from opentelemetry.trace import SpanKind, Tracer

from router.execute import Outcome, stream_plan
from router.resolve import Resolver
from router.usage import UsageSink, build_usage_event
from switchyard import attributes, telemetry
from switchyard.errors import SwitchyardError
from switchyard.grpc_server import identity
from switchyard.session import SessionServicer, Streamer
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import router_pb2 as rpb

log = logging.getLogger(__name__)
SERVICE = "switchyard.v1.Router"


def internal_error(exc: BaseException) -> bytes:
    return pb.ChatEvent(error=pb.Error(status=500, type="api_error", code="internal_error",
                                       message="the router failed to handle the request")).SerializeToString()


class RouterServicer:
    def __init__(self, resolver: Resolver, generate: Streamer, usage: UsageSink, tracer: Tracer | None = None) -> None:
        self.resolver = resolver
        self.tracer = tracer
        self.usage = usage
        self.generate = generate
        self.session = SessionServicer(self.stream_chat, on_error=internal_error)

    async def stream_chat(self, request_bytes: bytes, deadline: float | None) -> AsyncIterator[bytes]:
        """ChatEvent bytes for one request; ``deadline`` is time.monotonic()-based."""
        received = time.monotonic()
        request = pb.ChatRequest.FromString(request_bytes)
        outcome = Outcome()
        plan = None
        span = None
        if self.tracer is not None:
            span = self.tracer.start_span("switchyard.v1.Router/Chat", kind=SpanKind.SERVER,
                                          context=telemetry.extract(request.trace_context), attributes={
                                              attributes.REQUEST_ID: request.request_id,
                                              attributes.GEN_AI_REQUEST_MODEL: request.model})
        try:
            try:
                plan = self.resolver.plan(request.model, list(request.routing.fallbacks))
            except SwitchyardError as exc:
                outcome.error = exc.to_proto()
                yield pb.ChatEvent(error=outcome.error).SerializeToString()
                return
            async for raw in stream_plan(plan, request.request_id, request_bytes, self.generate, deadline, outcome,
                                         tracer=self.tracer, parent=span):
                yield raw
            if request.routing.trace:
                trace = pb.DecisionTrace(resolved_by=plan.resolved_by, attempts=outcome.attempts)
                yield pb.ChatEvent(trace=trace).SerializeToString()
        finally:
            event = build_usage_event(request, plan, outcome, received)
            if span is not None:
                span.set_attribute(attributes.OUTCOME, event.status)
                span.set_attribute(attributes.GEN_AI_USAGE_INPUT_TOKENS, event.usage.prompt_tokens)
                span.set_attribute(attributes.GEN_AI_USAGE_OUTPUT_TOKENS, event.usage.completion_tokens)
                span.set_attribute(attributes.COST_USD, event.usage.cost_usd)
                if event.model:
                    span.set_attribute(attributes.GEN_AI_RESPONSE_MODEL, event.model)
                self.usage.record(event, telemetry.inject(span))  # the usage event joins the trace
                span.end()
            else:
                self.usage.record(event)

    async def chat(self, request_bytes: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        async for raw in self.stream_chat(request_bytes, deadline):
            yield raw

    async def list_models(self, request: rpb.ListModelsRequest,
                          context: grpc.aio.ServicerContext) -> rpb.ListModelsResponse:
        return self.resolver.list_models()

    def register(self, server: grpc.aio.Server) -> list[str]:
        handlers = {
            "Chat": grpc.unary_stream_rpc_method_handler(self.chat, request_deserializer=identity,
                                                         response_serializer=identity),
            "ChatSession": self.session.method_handler(),
            "ListModels": grpc.unary_unary_rpc_method_handler(
                self.list_models, request_deserializer=rpb.ListModelsRequest.FromString,
                response_serializer=rpb.ListModelsResponse.SerializeToString),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        return [SERVICE]
