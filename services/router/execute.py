"""Runs a plan: one Provider.Generate per attempt, falling back only while
nothing has been sent, relaying the provider's event bytes untouched.

Provider events share ChatEvent's field numbers, so a relayed event's first
byte is its oneof tag (``switchyard.event_tags``). The router parses
only what it must account for (the first event, usage, errors).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

from router.resolve import Plan
from switchyard import attributes, event_tags, telemetry
from switchyard.session import Streamer, TransportError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb

log = logging.getLogger(__name__)

TRANSPORT_RETRIES = 2
TRANSPORT_BACKOFF_S = 0.05

@dataclass(slots=True)
class Outcome:
    """What happened, for the usage event and the decision trace."""

    started: pb.Started | None = None
    usage: pb.Usage = field(default_factory=pb.Usage)
    error: pb.Error | None = None
    attempts: list[pb.AttemptRecord] = field(default_factory=list)
    first_output_at: float | None = None
    cancelled: bool = False


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
                           trace_context: dict[str, str] | None = None) -> bytes:
    """GenerateRequest wire bytes embedding the already-serialised ChatRequest."""
    tail = ppb.GenerateRequest(target=ppb.Target(provider=provider, model=model), attempt=attempt,
                               trace_context=trace_context)
    return b"\x0a" + _varint(len(request_bytes)) + request_bytes + tail.SerializeToString()


def _event(**kwargs: object) -> bytes:
    return pb.ChatEvent(**kwargs).SerializeToString()


def _unavailable(exc: TransportError, provider: str) -> pb.Error:
    code = exc.code
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return pb.Error(status=504, type="timeout_error", code="deadline_exceeded",
                        message="the request deadline passed before the upstream answered", retryable=False,
                        provider=provider)
    return pb.Error(status=503, type="api_error", code="provider_unavailable",
                    message=f"provider worker unavailable ({code.name})", retryable=True, provider=provider)


async def stream_plan(plan: Plan, request_id: str, request_bytes: bytes, generate: Streamer,
                      deadline: float | None, outcome: Outcome, *, tracer: Tracer | None = None,
                      parent: Span | None = None) -> AsyncIterator[bytes]:
    """ChatEvent bytes for the client, filling ``outcome`` as it goes.

    Falls back to the next target while nothing has been sent. A worker that
    vanished (transport failure) before output gets the same target again, up
    to TRANSPORT_RETRIES times after a short back-off, on a fresh session that
    Envoy routes to a surviving replica (the first retry can still meet the
    dead replica's dying connection before Envoy has noticed).
    """
    targets = list(plan.targets)
    transport_retries_left = TRANSPORT_RETRIES
    last_error: pb.Error | None = None
    index = 0
    while index < len(targets):
        target = targets[index]
        number = index + 1
        has_next = number < len(targets)
        attempt_started = time.monotonic()
        record = pb.AttemptRecord(provider=target.provider, model=target.model, outcome="error")
        outcome.attempts.append(record)
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        span = None
        trace_context = None
        if tracer is not None and parent is not None:
            span = tracer.start_span("attempt", context=trace.set_span_in_context(parent), attributes={
                attributes.PROVIDER: target.provider, attributes.GEN_AI_REQUEST_MODEL: target.model,
                attributes.ATTEMPT: number})
            trace_context = telemetry.inject(span)
        events = generate(generate_request_bytes(request_bytes, target.provider, target.model, number, trace_context),
                          timeout)
        committed = False
        try:
            async for raw in events:
                tag = raw[0] if raw else 0
                if tag == event_tags.ERROR:
                    error = ppb.GenerateEvent.FromString(raw).error
                    record.error_type = error.type
                    record.status = error.status
                    if not committed and error.retryable and has_next:
                        last_error = error
                        break  # nothing sent yet: try the next target
                    outcome.error = error
                    yield raw
                    return
                if not committed:
                    committed = True
                    outcome.first_output_at = time.monotonic()
                    outcome.started = pb.Started(provider=target.provider, model=target.model, route=plan.route,
                                                 route_version=plan.route_version, attempt=number,
                                                 request_id=request_id)
                    yield _event(started=outcome.started)
                if tag == event_tags.USAGE:
                    usage = ppb.GenerateEvent.FromString(raw).usage
                    outcome.usage.MergeFrom(usage)
                yield raw
            else:
                if committed:
                    record.outcome = "ok"
                    return
                last_error = pb.Error(status=502, type="api_error", code="empty_response",
                                      message=f"{target.provider} ended the stream without output", retryable=True,
                                      provider=target.provider)
        except TransportError as exc:
            log.info("attempt %d on %s/%s: transport failed: %s", number, target.provider, target.model, exc)
            error = _unavailable(exc, target.provider)
            record.error_type, record.status = error.type, error.status
            if not committed and error.retryable and transport_retries_left:
                transport_retries_left -= 1
                targets.insert(index + 1, target)
                has_next = True
                await asyncio.sleep(TRANSPORT_BACKOFF_S * (TRANSPORT_RETRIES - transport_retries_left))
            if committed or not error.retryable or not has_next:
                outcome.error = error
                yield _event(error=error)
                return
            last_error = error
        except BaseException:
            record.outcome = "cancelled"
            outcome.cancelled = True
            raise
        finally:
            record.latency_ms = (time.monotonic() - attempt_started) * 1000
            await events.aclose()
            if span is not None:
                span.set_attribute(attributes.OUTCOME, record.outcome)
                if record.error_type:
                    span.set_attribute(attributes.ERROR_TYPE, record.error_type)
                span.end()
        log.info("attempt %d on %s/%s failed before output (%s); trying the next", number, target.provider,
                 target.model, last_error.code if last_error else "?")
        index += 1
    error = last_error or pb.Error(status=502, type="api_error", code="no_attempt", message="no attempt could run")
    outcome.error = error
    yield _event(error=error)
