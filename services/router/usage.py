"""One UsageEvent per client request, built from the outcome of its plan."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Protocol

from router.execute import Outcome, bill
from router.routes import Plan, RoutingTable
from switchyard.metering import estimate_cut_answer
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import usage_pb2 as upb

log = logging.getLogger(__name__)


class UsageSink(Protocol):
    def record(self, event: upb.UsageEvent, headers: Mapping[str, str] | None = None) -> None: ...


class CountingUsageSink:
    """Keeps counters only; used when no NATS publisher is configured."""

    def __init__(self) -> None:
        self.count = 0

    def record(self, event: upb.UsageEvent, headers: Mapping[str, str] | None = None) -> None:
        self.count += 1


def build_usage_event(request: pb.ChatRequest, plan: Plan | None, outcome: Outcome, received: float) -> upb.UsageEvent:
    """Fields left at their defaults are not set: building a protobuf message
    costs about a microsecond per field, on every request."""
    now = time.monotonic()
    event = upb.UsageEvent(request_id=request.request_id, timestamp_ms=int(time.time() * 1000),
                           model_requested=request.model, latency_ms=(now - received) * 1000)
    identity, routing = request.identity, request.routing
    if identity.key_id or identity.tenant:
        event.key_id, event.tenant = identity.key_id, identity.tenant
    if end_user := routing.end_user or request.user:
        event.end_user = end_user
    if routing.session_id:
        event.session_id = routing.session_id
    if request.stream:
        event.stream = True
    for attempt in outcome.attempts:
        attempt.to_proto(event.attempts.add())
    if identity.tags:
        event.tags.update(identity.tags)  # the key's metadata; the request's own tags win
    if routing.tags:
        event.tags.update(routing.tags)
    if plan is not None and plan.route:
        event.route, event.route_version = plan.route, plan.route_version
    if outcome.arm:
        event.route_arm = outcome.arm
    if outcome.started is not None:
        event.model, event.provider = outcome.started.model, outcome.started.provider
    if outcome.first_output_at is not None:
        event.ttft_ms = (outcome.first_output_at - received) * 1000
    if outcome.usage is not None:
        event.usage.CopyFrom(outcome.usage)
        if outcome.usage.estimated:
            event.usage_estimated = True
    if outcome.cache_status:
        event.cache_status = outcome.cache_status
        if outcome.cache_status == "hit":  # the usage replayed with the answer costs 0
            event.cache_hit, event.cost_saved_usd = True, outcome.cost_saved_usd
    if outcome.cancelled:
        event.status = "cancelled"
    elif outcome.error is not None:
        event.status, event.error_type, event.http_status = "error", outcome.error.type, outcome.error.status
    else:
        event.status, event.http_status = "ok", 200
    return event


def bill_unfinished(request: pb.ChatRequest, outcome: Outcome, table: RoutingTable,
                    delivered_tokens: int | None = None) -> None:
    """Bill an answer that ended before its usage event for what it produced,
    by estimate (``switchyard.metering.estimate_cut_answer``)."""
    started = outcome.started
    if not outcome.unbilled or started is None:
        return
    outcome.unbilled = False
    bill(outcome, estimate_cut_answer(request, started, outcome.chunks, outcome.chunk_bytes, table.config,
                                      delivered_tokens))
