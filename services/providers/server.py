"""Provider.Generate: one attempt against one upstream model.

Stream events that are ready together go out as one gRPC message: each
message on a stream costs tens of microseconds at both ends, and an upstream
often delivers many tokens in one read. Serialized GenerateEvents that hold
chunks merge by concatenation (protobuf appends repeated fields), so a batch
is just the joined bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer

from providers.attempt import AttemptFailedError, AttemptSpec, stream_attempt
from providers.registry import ProviderRegistry
from providers.unary import count_tokens, embed
from switchyard import attributes, event_tags, telemetry
from switchyard.errors import SwitchyardError
from switchyard.grpc_server import identity
from switchyard.session import SessionServicer
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb
from switchyard.v1 import provider_pb2 as ppb

log = logging.getLogger(__name__)
SERVICE = "switchyard.v1.Provider"
_END = object()


def internal_error(exc: BaseException) -> bytes:
    return ppb.GenerateEvent(error=pb.Error(status=500, type="api_error", code="internal_error", retryable=True,
                                            message="the provider worker failed")).SerializeToString()


class ProviderServicer:
    def __init__(self, registry: ProviderRegistry, tracer: Tracer | None = None) -> None:
        self.registry = registry
        self.tracer = tracer
        self.session = SessionServicer(self.stream_generate, on_error=internal_error)

    async def generate(self, request_bytes: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        async for payload in self.stream_generate(request_bytes, deadline):
            yield payload

    async def stream_generate(self, request_bytes: bytes, deadline: float | None) -> AsyncIterator[bytes]:
        """GenerateEvent bytes for one attempt; ``deadline`` is time.monotonic()-based."""
        request = ppb.GenerateRequest.FromString(request_bytes)
        target = request.target
        spec = self.registry.attempt_spec(target.provider, target.model,
                                          request.timeouts if request.HasField("timeouts") else None)
        if spec is None:
            error = pb.Error(status=404, type="invalid_request_error", code="model_not_found",
                             message=f"provider {target.provider!r} is not configured")
            yield ppb.GenerateEvent(error=error).SerializeToString()
            return
        events = self._batched(spec, request.request, deadline) if request.request.stream else \
            self._serialized(spec, request.request, deadline)
        if self.tracer is None:
            async for payload in events:
                yield payload
            return
        async for payload in self._traced(events, request, spec):
            yield payload

    async def _traced(self, events: AsyncIterator[bytes], request: ppb.GenerateRequest,
                      spec: AttemptSpec) -> AsyncIterator[bytes]:
        """The attempt's events inside a server span and a client span for the
        upstream call, both children of the router's attempt span."""
        assert self.tracer is not None
        server = self.tracer.start_span("switchyard.v1.Provider/Generate", kind=SpanKind.SERVER,
                                        context=telemetry.extract(request.trace_context))
        upstream = self.tracer.start_span(f"upstream {spec.translator.type}", kind=SpanKind.CLIENT,
                                          context=trace.set_span_in_context(server), attributes={
                                              attributes.GEN_AI_SYSTEM: spec.translator.type,
                                              attributes.PROVIDER: spec.translator.provider,
                                              attributes.GEN_AI_REQUEST_MODEL: spec.model})
        outcome = "cancelled"
        try:
            async for payload in events:
                if payload[0] == event_tags.ERROR:
                    error = ppb.GenerateEvent.FromString(payload).error
                    upstream.set_attribute(attributes.ERROR_TYPE, error.type or "error")
                    outcome = "error"
                elif payload[0] == event_tags.USAGE:
                    usage = ppb.GenerateEvent.FromString(payload).usage
                    upstream.set_attribute(attributes.GEN_AI_USAGE_INPUT_TOKENS, usage.prompt_tokens)
                    upstream.set_attribute(attributes.GEN_AI_USAGE_OUTPUT_TOKENS, usage.completion_tokens)
                    outcome = "ok"
                yield payload
        finally:
            upstream.set_attribute(attributes.OUTCOME, outcome)
            upstream.end()
            server.end()

    async def _serialized(self, spec: AttemptSpec, request: pb.ChatRequest,
                          deadline: float | None) -> AsyncIterator[bytes]:
        try:
            async for event in stream_attempt(spec, request, deadline):
                yield event.SerializeToString()
        except AttemptFailedError as exc:
            yield self._failed(spec, exc.error)
        except SwitchyardError as exc:
            yield self._failed(spec, exc.to_proto())

    async def _batched(self, spec: AttemptSpec, request: pb.ChatRequest,
                       deadline: float | None) -> AsyncIterator[bytes]:
        """Pump events into a queue; each send takes everything queued."""
        queue: asyncio.Queue[object] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for event in self._serialized(spec, request, deadline):
                    queue.put_nowait(event)
            finally:
                queue.put_nowait(_END)

        task = asyncio.create_task(pump())
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                batch: list[bytes] = [item]  # type: ignore[list-item]
                while not queue.empty():
                    nxt = queue.get_nowait()
                    if nxt is _END:
                        yield from_batch(batch)
                        return
                    if nxt[0] == event_tags.CHUNK and batch[-1][0] == event_tags.CHUNK:  # type: ignore[index]
                        batch.append(nxt)  # type: ignore[arg-type]
                    else:
                        yield from_batch(batch)
                        batch = [nxt]  # type: ignore[list-item]
                yield from_batch(batch)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _failed(self, spec: AttemptSpec, error: pb.Error) -> bytes:
        error.provider = error.provider or spec.translator.provider
        log.info("attempt %s/%s failed: %s %s", spec.translator.provider, spec.model, error.status, error.code)
        return ppb.GenerateEvent(error=error).SerializeToString()

    async def embed(self, attempt: ppb.EmbedAttempt, context: grpc.aio.ServicerContext) -> epb.EmbedResponse:
        target = attempt.target
        spec = self.registry.attempt_spec(target.provider, target.model,
                                          attempt.timeouts if attempt.HasField("timeouts") else None)
        if spec is None:
            return epb.EmbedResponse(error=_unknown_provider(target.provider))
        return await embed(spec, attempt.request, _deadline(context))

    async def count_tokens(self, request: ppb.GenerateRequest,
                           context: grpc.aio.ServicerContext) -> pb.CountTokensResponse:
        target = request.target
        spec = self.registry.attempt_spec(target.provider, target.model)
        if spec is None:
            return pb.CountTokensResponse(error=_unknown_provider(target.provider))
        return await count_tokens(spec, request.request, _deadline(context))

    def register(self, server: grpc.aio.Server) -> list[str]:
        handlers = {
            "Generate": grpc.unary_stream_rpc_method_handler(self.generate, request_deserializer=identity,
                                                             response_serializer=identity),
            "GenerateSession": self.session.method_handler(),
            "Embed": grpc.unary_unary_rpc_method_handler(
                self.embed, request_deserializer=ppb.EmbedAttempt.FromString,
                response_serializer=epb.EmbedResponse.SerializeToString),
            "CountTokens": grpc.unary_unary_rpc_method_handler(
                self.count_tokens, request_deserializer=ppb.GenerateRequest.FromString,
                response_serializer=pb.CountTokensResponse.SerializeToString),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        return [SERVICE]


def _unknown_provider(provider: str) -> pb.Error:
    return pb.Error(status=404, type="invalid_request_error", code="model_not_found",
                    message=f"provider {provider!r} is not configured")


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return time.monotonic() + remaining if remaining is not None else None


def from_batch(batch: list[bytes]) -> bytes:
    return batch[0] if len(batch) == 1 else b"".join(batch)
