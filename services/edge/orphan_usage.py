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

The answer's budgets are charged the same estimate: the edge asks a live
router replica (``Router.SettleOrphan``) to commit it to the budget ledgers,
where each entry takes a request id once, so a router that settled the
request itself wins there too. The dead router's reservation would
otherwise only expire, and the spend would be lost to the budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from switchyard.config import Config
from switchyard.events import UsagePublisher
from switchyard.metering import estimate_cut_answer
from switchyard.metrics import State, publisher_metrics
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import router_pb2 as rpb
from switchyard.v1 import usage_pb2 as upb

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RelayStats:
    """What the edge relayed of one answer."""

    chunks: int = 0
    chunk_bytes: int = 0
    usage_seen: bool = False   # the router's usage event arrived: the router meters this request
    router_lost: bool = False  # the router's stream broke after the answer started


Settle = Callable[..., Awaitable[rpb.OrphanSettled]]  # Router.SettleOrphan: (message, timeout=...)
SETTLE_ATTEMPTS = 3
SETTLE_TIMEOUT_S = 5.0


class OrphanUsage:
    def __init__(self, publisher: UsagePublisher, config: Config, *, delay_s: float = 5.0,
                 max_pending: int = 10_000) -> None:
        self.publisher = publisher
        self.config = config
        self.delay_s = delay_s
        self.max_pending = max_pending
        self.dropped = 0
        self.unsettled = 0  # orphaned answers whose budgets could not be charged
        self._pending: dict[str, tuple[asyncio.TimerHandle, upb.UsageEvent, pb.ChatRequest]] = {}
        self._settle: Settle | None = None
        self._charging: set[asyncio.Task[None]] = set()

    def connect(self, settle: Settle) -> None:
        """Where orphaned answers' budgets are charged: the router's ``SettleOrphan``."""
        self._settle = settle

    @property
    def pending(self) -> int:
        return len(self._pending)

    def metrics(self) -> State:
        """Gauges for a ``StateCollector``: this edge's usage publisher, and
        what became of orphaned answers' records and budget charges."""
        yield from publisher_metrics(self.publisher)
        yield ("switchyard_orphaned_answers", "Answers whose router died mid-answer, by what the edge could not do "
               "for them (records dropped beyond the pending bound, budgets not charged) and still pending",
               ["state"], [(("pending",), self.pending), (("dropped",), self.dropped),
                           (("unsettled",), self.unsettled)])

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
        self._pending[event.request_id] = (handle, event, budget_names(request))

    def _publish(self, request_id: str) -> None:
        _, event, request = self._pending.pop(request_id)
        self.publisher.record(event)
        if self._settle is None or event.usage.cost_usd <= 0:
            return
        if len(self._charging) >= self.max_pending:
            self.unsettled += 1
            log.warning("budgets: %d orphaned answers not charged (too many pending)", self.unsettled)
            return
        task = asyncio.get_running_loop().create_task(self._charge(request, event.usage.cost_usd))
        self._charging.add(task)
        task.add_done_callback(self._charging.discard)

    async def _charge(self, request: pb.ChatRequest, cost: float) -> None:
        assert self._settle is not None
        message = rpb.OrphanSettlement(request=request, cost_usd=cost)
        for attempt in range(SETTLE_ATTEMPTS):
            try:
                await self._settle(message, timeout=SETTLE_TIMEOUT_S)
                return
            except grpc.aio.AioRpcError as exc:
                retry = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if not retry or attempt == SETTLE_ATTEMPTS - 1:
                    self.unsettled += 1
                    log.warning("budgets: orphaned answer %s not charged (%s)", request.request_id,
                                exc.code().name)
                    return
            await asyncio.sleep(0.5 * 2 ** attempt)

    async def close(self) -> None:
        """Publish what is pending now (no waiting on shutdown) and charge it
        (bounded), then flush to NATS or the spool."""
        for request_id, (handle, _, _) in list(self._pending.items()):
            handle.cancel()
            self._publish(request_id)
        if self._charging:
            await asyncio.wait(list(self._charging), timeout=SETTLE_TIMEOUT_S)
        await self.publisher.close()


def budget_names(request: pb.ChatRequest) -> pb.ChatRequest:
    """What names a request's budgets (id, identity, user, end user), without its prompt."""
    slim = pb.ChatRequest(request_id=request.request_id, user=request.user)
    slim.identity.CopyFrom(request.identity)
    slim.routing.end_user = request.routing.end_user
    return slim


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
