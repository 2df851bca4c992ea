"""One attempt: one ``Provider.Generate`` call against one target, with the
commit rule: an attempt that fails before its first output raises
``BeforeOutputError`` (nothing was sent, the caller may try elsewhere); once
it has produced output, its events are relayed and a later failure ends the
stream with an error event.

Provider events share ChatEvent's field numbers, so a relayed event's first
byte is its oneof tag (``switchyard.event_tags``) and the bytes go to the
edge untouched. The router parses only what it must account for (errors and
usage).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import grpc

from router.breaker import BreakerBoard
from router.routes import Leaf, Plan, Target
from switchyard import event_tags
from switchyard.metering import add_usage
from switchyard.session import Streamer, TransportError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb

log = logging.getLogger(__name__)


class BeforeOutputError(Exception):
    """Nothing was sent to the client: the caller may try something else."""

    def __init__(self, error: pb.Error, *, transport: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.transport = transport


@dataclass(slots=True)
class Attempt:
    """One attempt (or a skipped target), for the trace and the usage event.
    Plain Python: a protobuf message costs about a microsecond per field to
    build, and most requests never need one."""

    provider: str
    model: str
    route: str = ""
    retry: int = 0
    backoff_ms: float = 0.0
    outcome: str = "error"  # ok | error | cancelled | skipped | rejected
    error_type: str = ""
    status: int = 0
    code: str = ""
    latency_ms: float = 0.0
    gate: str = ""

    def to_proto(self, out: pb.AttemptRecord) -> None:
        out.provider, out.model, out.outcome, out.latency_ms = self.provider, self.model, self.outcome, self.latency_ms
        if self.route:
            out.route = self.route
        if self.retry:
            out.retry, out.backoff_ms = self.retry, self.backoff_ms
        if self.error_type or self.status or self.code:
            out.error_type, out.status, out.code = self.error_type, self.status, self.code
        if self.gate:
            out.gate = self.gate


@dataclass(slots=True, frozen=True)
class Decision:
    """A routing config visited: which one, and what it chose and why."""

    route: str
    version: int
    strategy: str
    chosen: str = ""
    reason: str = ""

    def to_proto(self) -> pb.RouteDecision:
        return pb.RouteDecision(route=self.route, version=self.version, strategy=self.strategy, chosen=self.chosen,
                                reason=self.reason)


@dataclass(slots=True)
class Outcome:
    """What happened to one request: for the usage event and the trace."""

    started: pb.Started | None = None
    usage: pb.Usage | None = None  # summed over every billed attempt
    error: pb.Error | None = None
    attempts: list[Attempt] = field(default_factory=list)
    routes: list[Decision] = field(default_factory=list)
    first_output_at: float | None = None
    cancelled: bool = False
    arm: str = ""
    template: str = ""
    # The answering attempt's output since it committed, until its usage event
    # arrives: what a stream cut before its usage is billed for (by estimate).
    unbilled: bool = False
    chunks: int = 0
    chunk_bytes: int = 0
    cache_status: str = ""     # hit | miss | bypass, "" when no cache applies (the cache stage)
    cost_saved_usd: float = 0.0


@dataclass(slots=True)
class RunContext:
    """Everything the strategies and attempts of one request share."""

    request: pb.ChatRequest
    request_bytes: bytes
    deadline: float | None
    generate: Streamer
    breakers: BreakerBoard
    plan: Plan
    outcome: Outcome = field(default_factory=Outcome)
    provider_types: dict[str, str] = field(default_factory=dict)  # provider name -> API type
    attempts_started: int = 0
    cache: str = ""  # the cache stage's status, for the started event
    models: TargetCheck | None = None  # models' shared limits, checked before a target's first attempt
    headers: dict[str, str] | None = None  # for the client, on the started event (rate-limit state)
    received: float = 0.0  # time.monotonic() when the router received the request (0: unknown)

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


class TargetCheck(Protocol):
    async def admit(self, target: Target) -> pb.Error | None:
        """None to go ahead; otherwise the error that skips this target."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def generate_request_bytes(request_bytes: bytes, provider: str, model: str, attempt: int,
                           timeouts: ppb.AttemptTimeouts | None = None) -> bytes:
    """GenerateRequest wire bytes embedding the already-serialised ChatRequest
    (the attempt's trace context is appended by the session hook, when traced)."""
    if timeouts is not None:
        tail = ppb.GenerateRequest(target=ppb.Target(provider=provider, model=model), attempt=attempt,
                                   timeouts=timeouts).SerializeToString()
    else:
        tail = _plain_tail(provider, model, attempt)
    return b"\x0a" + _varint(len(request_bytes)) + request_bytes + tail


@lru_cache(maxsize=4096)
def _plain_tail(provider: str, model: str, attempt: int) -> bytes:
    return ppb.GenerateRequest(target=ppb.Target(provider=provider, model=model), attempt=attempt).SerializeToString()


def overridden(request_bytes: bytes, leaf: Leaf) -> bytes:
    """The request with the target's parameter overrides. Protobuf merges
    concatenated messages field by field, so the overrides are appended as
    bytes instead of re-serialising the request."""
    if leaf.params is None:
        return request_bytes
    sampling = pb.Sampling(**leaf.params.model_dump(exclude_none=True))
    return request_bytes + pb.ChatRequest(sampling=sampling).SerializeToString()


def attempt_timeouts(leaf: Leaf) -> ppb.AttemptTimeouts | None:
    if leaf.timeouts is None:
        return None
    return ppb.AttemptTimeouts(**leaf.timeouts.model_dump(exclude_none=True))


def bill(outcome: Outcome, part: pb.Usage) -> pb.Usage:
    """Bill ``part`` to the request; the running total."""
    if outcome.usage is None:
        outcome.usage = part
        return part
    add_usage(outcome.usage, part)
    return outcome.usage


def transport_error(exc: TransportError, provider: str) -> pb.Error:
    if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return pb.Error(status=504, type="timeout_error", code="deadline_exceeded",
                        message="the request deadline passed before the upstream answered", retryable=False,
                        provider=provider)
    return pb.Error(status=503, type="api_error", code="provider_unavailable",
                    message=f"provider worker unavailable ({exc.code.name})", retryable=True, provider=provider)


def _event(**kwargs: object) -> bytes:
    return pb.ChatEvent(**kwargs).SerializeToString()


def _started(ctx: RunContext, provider: str, model: str, attempt: int) -> pb.Started:
    plan = ctx.plan
    started = pb.Started(provider=provider, model=model, attempt=attempt, request_id=ctx.request.request_id,
                         model_requested=plan.model_requested, provider_type=ctx.provider_types.get(provider, ""))
    if plan.route:
        started.route, started.route_version = plan.route, plan.route_version
    if ctx.outcome.arm:
        started.arm = ctx.outcome.arm
    if ctx.cache:
        started.cache = ctx.cache
    if ctx.headers:
        started.headers.update(ctx.headers)
    return started


async def stream_attempt(leaf: Leaf, ctx: RunContext, record: Attempt) -> AsyncIterator[bytes]:
    """A ``started`` event, then the provider's event bytes for one attempt.
    Raises BeforeOutputError when the attempt fails before any output."""
    target = leaf.target
    ctx.attempts_started += 1
    number = ctx.attempts_started
    outcome = ctx.outcome
    billed_before = outcome.usage is not None
    began = time.monotonic()
    remaining = ctx.remaining()
    timeout = None if remaining is None else max(remaining, 0.001)
    payload = generate_request_bytes(overridden(ctx.request_bytes, leaf), target.provider, target.model, number,
                                     attempt_timeouts(leaf))
    sent = time.monotonic()
    events = ctx.generate(payload, timeout)
    committed = False
    worker_timing: pb.Timing | None = None
    try:
        async for raw in events:
            tag = raw[0] if raw else 0
            if tag == event_tags.TIMING:  # the worker's share of the time to first output: on our started event
                worker_timing = ppb.GenerateEvent.FromString(raw).timing
                continue
            if tag == event_tags.ERROR:
                error = ppb.GenerateEvent.FromString(raw).error
                record.error_type, record.status, record.code = error.type, error.status, error.code
                if not committed:
                    raise BeforeOutputError(error)
                outcome.error = error
                yield raw
                return
            if not committed:
                committed = True
                outcome.started = started = _started(ctx, target.provider, target.model, number)
                if ctx.received:
                    timing = started.timing
                    if worker_timing is not None:
                        timing.CopyFrom(worker_timing)
                    timing.router_us = int((sent - ctx.received) * 1e6)
                    timing.router_total_us = int((time.monotonic() - ctx.received) * 1e6)
                body = started.SerializeToString()  # as ChatEvent field 1, without building a ChatEvent
                yield b"\x0a" + _varint(len(body)) + body
                outcome.unbilled, outcome.chunks, outcome.chunk_bytes = True, 0, 0
            if tag == event_tags.CHUNK:
                outcome.chunks += 1
                outcome.chunk_bytes += len(raw)
            elif tag == event_tags.USAGE:
                outcome.unbilled = False
                total = bill(outcome, ppb.GenerateEvent.FromString(raw).usage)
                if billed_before:  # earlier attempts were billed too (cascade): report the sum
                    raw = _event(usage=total)
            yield raw
        if not committed:
            raise BeforeOutputError(pb.Error(status=502, type="api_error", code="empty_response", retryable=True,
                                             message=f"{target.provider} ended the stream without output",
                                             provider=target.provider))
        record.outcome = "ok"
    except TransportError as exc:
        log.info("attempt %d on %s: transport failed: %s", number, target.name, exc)
        error = transport_error(exc, target.provider)
        record.error_type, record.status, record.code = error.type, error.status, error.code
        if not committed:
            raise BeforeOutputError(error, transport=error.retryable) from None
        outcome.error = error
        yield _event(error=error)
    except BaseException as exc:
        if not isinstance(exc, Exception):  # cancelled, or the consumer went away
            record.outcome = "cancelled"
            outcome.cancelled = True
        raise
    finally:
        record.latency_ms = (time.monotonic() - began) * 1000
        await events.aclose()
