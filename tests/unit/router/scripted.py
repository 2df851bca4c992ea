"""A scripted provider worker and a config for router tests without sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from router.breaker import BreakerBoard, breaker_settings
from router.execute import BeforeOutputError, Outcome, RunContext
from router.policy import plan_failed, stream_node
from router.routes import RoutingTable
from switchyard.config import parse_config
from switchyard.session import TransportError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb

BASE = """
providers:
  a:
    type: openai
    base_url: http://127.0.0.1:1/v1
    models: [m1, m3]
  b:
    type: anthropic
    base_url: http://127.0.0.1:2
    models: [m2]
  local:
    type: openai_compat
    base_url: http://127.0.0.1:3/v1
aliases:
  quick: a/m1
"""


def copy(request: pb.ChatRequest) -> pb.ChatRequest:
    out = pb.ChatRequest()
    out.CopyFrom(request)
    return out


def table(extra: str = "") -> RoutingTable:
    return RoutingTable(parse_config(BASE + extra))


def chunk(text: str, finish: str = "", index: int = 0) -> bytes:
    delta = pb.ChoiceDelta(index=index, content=text, finish_reason=finish)
    return ppb.GenerateEvent(chunk=pb.Chunk(choices=[delta])).SerializeToString()


def tool_chunk(name: str, arguments: str = "{}") -> bytes:
    call = pb.ToolCallDelta(index=0, id="call_1", name=name, arguments=arguments)
    delta = pb.ChoiceDelta(index=0, tool_calls=[call], finish_reason="tool_calls")
    return ppb.GenerateEvent(chunk=pb.Chunk(choices=[delta])).SerializeToString()


def error(status: int, retryable: bool, *, retry_after_ms: int = 0, code: str = "", upstream: int = 0,
          type_: str = "api_error") -> bytes:
    return ppb.GenerateEvent(error=pb.Error(status=status, type=type_, message="boom", retryable=retryable,
                                            retry_after_ms=retry_after_ms, code=code,
                                            upstream_status=upstream)).SerializeToString()


def usage(tokens: int, cost: float = 0.5) -> bytes:
    return ppb.GenerateEvent(usage=pb.Usage(completion_tokens=tokens, total_tokens=tokens,
                                            cost_usd=cost)).SerializeToString()


def answer(text: str = "ok") -> list[bytes]:
    return [chunk(text, "stop"), usage(1)]


def transport_error(code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> TransportError:
    return TransportError(code, "x")


class Provider:
    """Scripted provider worker: one list of events per attempt."""

    def __init__(self, *attempts: list[bytes | BaseException]) -> None:
        self.attempts = list(attempts)
        self.requests: list[ppb.GenerateRequest] = []
        self.closed: list[bool] = []

    async def __call__(self, request: bytes, timeout_s: float | None = None) -> AsyncIterator[bytes]:
        self.requests.append(ppb.GenerateRequest.FromString(request))
        index = len(self.closed)
        self.closed.append(False)
        try:
            for item in self.attempts.pop(0):
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.closed[index] = True

    @property
    def targets(self) -> list[str]:
        return [f"{r.target.provider}/{r.target.model}" for r in self.requests]


REQUEST = pb.ChatRequest(request_id="r1", model="m1", messages=[pb.Message(role="user", text="hi")])


def context(routing: RoutingTable, provider: Provider, model: str, *, fallbacks: tuple[str, ...] = (),
            request: pb.ChatRequest | None = None, deadline: float | None = None,
            breakers: BreakerBoard | None = None) -> RunContext:
    request = copy(request or REQUEST)
    request.model = model
    plan = routing.plan(model, fallbacks)
    return RunContext(request, request.SerializeToString(), deadline, provider,
                      breakers or BreakerBoard(*breaker_settings(routing.config)), plan, Outcome(),
                      provider_types=routing.provider_types)


async def run(routing: RoutingTable, provider: Provider, model: str = "m1", **kwargs: object,
              ) -> tuple[list[pb.ChatEvent], Outcome]:
    ctx = context(routing, provider, model, **kwargs)  # type: ignore[arg-type]
    events = [pb.ChatEvent.FromString(raw) async for raw in stream_plan(ctx)]
    return events, ctx.outcome


async def stream_plan(ctx: RunContext) -> AsyncIterator[bytes]:
    """The run stage as the pipeline drives it."""
    events = stream_node(ctx.plan.root, ctx, "")
    try:
        async for raw in events:
            yield raw
    except BeforeOutputError as exc:
        ctx.outcome.error = plan_failed(exc.error, ctx)
        yield pb.ChatEvent(error=ctx.outcome.error).SerializeToString()
    finally:
        await events.aclose()


def kinds(events: list[pb.ChatEvent]) -> list[str]:
    return [e.WhichOneof("event") for e in events]
