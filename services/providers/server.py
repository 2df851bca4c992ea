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
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import grpc

from providers import timing
from providers.attempt import AttemptFailedError, AttemptSpec, stream_attempt
from providers.observer import GenerateCalls, UnaryCall
from providers.registry import ProviderRegistry
from providers.unary import count_tokens, embed
from switchyard import event_tags
from switchyard.errors import SwitchyardError
from switchyard.grpc_server import identity, unary
from switchyard.session import SessionServicer
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb
from switchyard.v1 import provider_pb2 as ppb

R = TypeVar("R", epb.EmbedResponse, pb.CountTokensResponse)

log = logging.getLogger(__name__)
SERVICE = "switchyard.v1.Provider"
_END = object()


def internal_error(exc: BaseException) -> bytes:
    return ppb.GenerateEvent(error=pb.Error(status=500, type="api_error", code="internal_error", retryable=True,
                                            message="the provider worker failed")).SerializeToString()


class ProviderServicer:
    def __init__(self, registry: ProviderRegistry, observer: GenerateCalls | None = None) -> None:
        self.registry = registry
        self.observer = observer
        self.session = SessionServicer(self.stream_generate, on_error=internal_error, observer=observer)

    async def generate(self, request_bytes: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for payload in self.session.handler(request_bytes, _deadline(context)):
            yield payload

    async def stream_generate(self, request_bytes: bytes, deadline: float | None,
                              batched: bool = True) -> AsyncIterator[bytes]:
        """GenerateEvent bytes for one attempt; ``deadline`` is time.monotonic()-based.
        ``batched``: a stream's events queued meanwhile go out joined (one
        message each time the transport is ready); in process there is no
        transport to wait for, and every event goes out as it comes."""
        received = time.monotonic()
        request = ppb.GenerateRequest.FromString(request_bytes)
        target = request.target
        spec = self.registry.attempt_spec(target.provider, target.model,
                                          request.timeouts if request.HasField("timeouts") else None)
        if spec is None:
            error = pb.Error(status=404, type="invalid_request_error", code="model_not_found",
                             message=f"provider {target.provider!r} is not configured")
            yield ppb.GenerateEvent(error=error).SerializeToString()
            return
        events = self._batched(spec, request.request, deadline, received) if request.request.stream and batched \
            else self._serialized(spec, request.request, deadline, received)
        async for payload in events:
            yield payload

    async def _serialized(self, spec: AttemptSpec, request: pb.ChatRequest, deadline: float | None,
                          received: float) -> AsyncIterator[bytes]:
        clock = timing.start()
        first = True
        try:
            async for event in stream_attempt(spec, request, deadline):
                if first:
                    first = False
                    yield timing_event(received, clock, time.monotonic())
                yield event.SerializeToString()
        except AttemptFailedError as exc:
            yield self._failed(spec, exc.error)
        except SwitchyardError as exc:
            yield self._failed(spec, exc.to_proto())

    async def _batched(self, spec: AttemptSpec, request: pb.ChatRequest, deadline: float | None,
                       received: float) -> AsyncIterator[bytes]:
        """Pump events into a queue; each send takes everything queued."""
        queue: asyncio.Queue[object] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for event in self._serialized(spec, request, deadline, received):
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
        return await self.embed_until(attempt, _deadline(context))

    async def embed_until(self, attempt: ppb.EmbedAttempt, deadline: float | None) -> epb.EmbedResponse:
        target = attempt.target
        spec = self.registry.attempt_spec(target.provider, target.model,
                                          attempt.timeouts if attempt.HasField("timeouts") else None)
        if spec is None:
            return epb.EmbedResponse(error=_unknown_provider(target.provider))
        if self.observer is None:
            return await embed(spec, attempt.request, deadline)
        return await _observed(self.observer.embed(attempt), embed(spec, attempt.request, deadline))

    async def count_tokens(self, request: ppb.GenerateRequest,
                           context: grpc.aio.ServicerContext) -> pb.CountTokensResponse:
        return await self.count_until(request, _deadline(context))

    async def count_until(self, request: ppb.GenerateRequest, deadline: float | None) -> pb.CountTokensResponse:
        target = request.target
        spec = self.registry.attempt_spec(target.provider, target.model)
        if spec is None:
            return pb.CountTokensResponse(error=_unknown_provider(target.provider))
        if self.observer is None:
            return await count_tokens(spec, request.request, deadline)
        return await _observed(self.observer.count(request), count_tokens(spec, request.request, deadline))

    def register(self, server: grpc.aio.Server) -> list[str]:
        handlers = {
            "Generate": grpc.unary_stream_rpc_method_handler(self.generate, request_deserializer=identity,
                                                             response_serializer=identity),
            "GenerateSession": self.session.method_handler(),
            "Embed": unary(self.embed, ppb.EmbedAttempt, epb.EmbedResponse),
            "CountTokens": unary(self.count_tokens, ppb.GenerateRequest, pb.CountTokensResponse),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        return [SERVICE]


async def _observed(call: UnaryCall, reply: Awaitable[R]) -> R:
    """A unary call's answer, reported to its observer however it ends."""
    answer: R | None = None
    try:
        answer = await reply
        return answer
    finally:
        call.end(answer)


def _unknown_provider(provider: str) -> pb.Error:
    return pb.Error(status=404, type="invalid_request_error", code="model_not_found",
                    message=f"provider {provider!r} is not configured")


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return time.monotonic() + remaining if remaining is not None else None


def timing_event(received: float, clock: timing.UpstreamClock, first_at: float) -> bytes:
    """The worker's share of the time to first output, sent before it
    (``Timing``), with the upstream's name for its answer."""
    out = pb.Timing(provider_total_us=int((first_at - received) * 1e6), upstream_response_id=clock.response_id,
                    upstream_model=clock.model)
    if sent_at := clock.sent_at:
        out.provider_us, out.upstream_us = int((sent_at - received) * 1e6), int((first_at - sent_at) * 1e6)
    return ppb.GenerateEvent(timing=out).SerializeToString()


def from_batch(batch: list[bytes]) -> bytes:
    return batch[0] if len(batch) == 1 else b"".join(batch)
