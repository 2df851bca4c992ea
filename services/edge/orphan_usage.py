"""The usage record of an answer whose router died mid-answer.

The router writes one usage event per request, but a router that is killed
while an answer streams writes none, and the tokens it relayed would go
unbilled. The edge, which saw those chunks, then publishes the event itself:
the prompt and the relayed output, estimated and marked so
(``usage_estimated``), status ``error`` with 502.

It publishes after ``delay_s`` and with the request id as ``Nats-Msg-Id``, like
the router: when the router was alive after all (only the hop between them
broke), its own event came first and JetStream drops this one as a
duplicate; the analytics consumer, idempotent by request id, keeps the first
either way. Pending records are bounded (``max_pending``); beyond the bound
one is dropped and counted, never queued without limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from switchyard.config import Config
from switchyard.events import UsagePublisher
from switchyard.metering import estimate_cut_answer
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import usage_pb2 as upb

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RelayStats:
    """What the edge relayed of one answer."""

    chunks: int = 0
    chunk_bytes: int = 0
    usage_seen: bool = False   # the router's usage event arrived: the router meters this request
    router_lost: bool = False  # the router's stream broke after the answer started


class OrphanUsage:
    def __init__(self, publisher: UsagePublisher, config: Config, *, delay_s: float = 5.0,
                 max_pending: int = 10_000) -> None:
        self.publisher = publisher
        self.config = config
        self.delay_s = delay_s
        self.max_pending = max_pending
        self.dropped = 0
        self._pending: dict[str, tuple[asyncio.TimerHandle, upb.UsageEvent]] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, request: pb.ChatRequest, started: pb.Started, stats: RelayStats, received: float) -> None:
        """Publish (after the delay) the event the dead router did not write."""
        if stats.usage_seen or not stats.router_lost:
            return
        if self.pending >= self.max_pending:
            self.dropped += 1
            log.warning("usage: %d orphaned usage records dropped (too many pending)", self.dropped)
            return
        event = orphan_event(request, started, stats, received, self.config)
        handle = asyncio.get_running_loop().call_later(self.delay_s, self._publish, event.request_id)
        self._pending[event.request_id] = (handle, event)

    def _publish(self, request_id: str) -> None:
        _, event = self._pending.pop(request_id)
        self.publisher.record(event)

    async def close(self) -> None:
        """Publish what is pending now (no waiting on shutdown), then flush to NATS or the spool."""
        for request_id, (handle, _) in list(self._pending.items()):
            handle.cancel()
            self._publish(request_id)
        await self.publisher.close()


def orphan_event(request: pb.ChatRequest, started: pb.Started, stats: RelayStats, received: float,
                 config: Config) -> upb.UsageEvent:
    usage = estimate_cut_answer(request, started, stats.chunks, stats.chunk_bytes, config)
    identity, routing = request.identity, request.routing
    event = upb.UsageEvent(
        request_id=request.request_id, timestamp_ms=int(time.time() * 1000), key_id=identity.key_id,
        tenant=identity.tenant, model_requested=request.model, model=started.model, provider=started.provider,
        route=started.route, route_version=started.route_version, route_arm=started.arm, usage=usage,
        latency_ms=(time.monotonic() - received) * 1000, status="error", error_type="api_error", http_status=502,
        end_user=routing.end_user or request.user, session_id=routing.session_id, stream=request.stream,
        usage_estimated=True)
    event.tags.update(routing.tags)
    event.tags.update(identity.tags)
    return event
