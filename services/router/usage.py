"""One UsageEvent per client request, built from the outcome of its plan."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Protocol

from router.execute import Outcome
from router.routes import Plan
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
    now = time.monotonic()
    event = upb.UsageEvent(
        request_id=request.request_id,
        timestamp_ms=int(time.time() * 1000),
        key_id=request.identity.key_id,
        tenant=request.identity.tenant,
        model_requested=request.model,
        latency_ms=(now - received) * 1000,
        end_user=request.routing.end_user or request.user,
        session_id=request.routing.session_id,
        stream=request.stream,
        attempts=outcome.attempts,
    )
    event.tags.update(request.routing.tags)
    if plan is not None:
        event.route, event.route_version = plan.route, plan.route_version
    if outcome.started is not None:
        event.model, event.provider = outcome.started.model, outcome.started.provider
    if outcome.first_output_at is not None:
        event.ttft_ms = (outcome.first_output_at - received) * 1000
    event.usage.CopyFrom(outcome.usage)
    if outcome.cancelled:
        event.status = "cancelled"
    elif outcome.error is not None:
        event.status, event.error_type, event.http_status = "error", outcome.error.type, outcome.error.status
    else:
        event.status, event.http_status = "ok", 200
    return event
