from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import grpc

from edge.orphan_usage import OrphanUsage, RelayStats
from switchyard.config import parse_config
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import router_pb2 as rpb
from switchyard.v1 import usage_pb2 as upb

CONFIG = parse_config("providers:\n  openai: {type: openai, base_url: 'http://127.0.0.1:1/v1', "
                      "models: [gpt-4o-mini]}\n")
REQUEST = pb.ChatRequest(request_id="r1", model="fast", messages=[pb.Message(role="user", text="hello there")],
                         identity=pb.Identity(key_id="k", tenant="t"))
STARTED = pb.Started(provider="openai", model="gpt-4o-mini", provider_type="openai")


class Publisher:
    published = spooled = write_errors = dropped = queued = held = 0
    spool = SimpleNamespace(path=Path("/nonexistent/spool"))

    def __init__(self) -> None:
        self.events: list[upb.UsageEvent] = []
        self.closed = False

    def record(self, event: upb.UsageEvent) -> None:
        self.events.append(event)

    async def close(self) -> None:
        self.closed = True


def lost(chunks: int = 30, usage_seen: bool = False) -> RelayStats:
    return RelayStats(chunks=chunks, chunk_bytes=chunks * 20, usage_seen=usage_seen, router_lost=True)


async def test_the_event_is_estimated_and_published_after_the_delay() -> None:
    publisher = Publisher()
    orphans = OrphanUsage(publisher, CONFIG, delay_s=0.05)  # type: ignore[arg-type]
    orphans.record(REQUEST, STARTED, lost(), time.monotonic())
    assert publisher.events == [] and orphans.pending == 1  # the router's own event gets its chance first
    async with asyncio.timeout(5):
        while not publisher.events:
            await asyncio.sleep(0.01)
    [event] = publisher.events
    assert (event.request_id, event.status, event.http_status, event.usage_estimated) == ("r1", "error", 502, True)
    assert event.usage.completion_tokens >= 30 and event.usage.prompt_tokens > 0 and event.usage.cost_usd > 0


async def test_nothing_when_the_router_metered_it_or_did_not_break() -> None:
    publisher = Publisher()
    orphans = OrphanUsage(publisher, CONFIG, delay_s=0)  # type: ignore[arg-type]
    orphans.record(REQUEST, STARTED, lost(usage_seen=True), time.monotonic())
    orphans.record(REQUEST, STARTED, RelayStats(chunks=3), time.monotonic())
    assert orphans.pending == 0


async def test_pending_records_are_bounded_and_flushed_on_close() -> None:
    publisher = Publisher()
    orphans = OrphanUsage(publisher, CONFIG, delay_s=60, max_pending=1)  # type: ignore[arg-type]
    orphans.record(REQUEST, STARTED, lost(), time.monotonic())
    second = pb.ChatRequest()
    second.CopyFrom(REQUEST)
    second.request_id = "r2"
    orphans.record(second, STARTED, lost(), time.monotonic())
    assert orphans.pending == 1 and orphans.dropped == 1
    await orphans.close()
    assert [e.request_id for e in publisher.events] == ["r1"] and publisher.closed


class Settle:
    """Router.SettleOrphan: fails with ``codes`` in turn, then answers."""

    def __init__(self, *codes: grpc.StatusCode) -> None:
        self.codes = list(codes)
        self.calls: list[rpb.OrphanSettlement] = []

    async def __call__(self, message: rpb.OrphanSettlement, timeout: float) -> rpb.OrphanSettled:  # noqa: ASYNC109
        self.calls.append(message)
        if self.codes:
            code = self.codes.pop(0)
            raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="scripted")
        return rpb.OrphanSettled(budgets=1)


async def test_budgets_are_charged_the_estimate_without_the_prompt() -> None:
    publisher, settle = Publisher(), Settle(grpc.StatusCode.UNAVAILABLE)  # a router still starting: tried again
    orphans = OrphanUsage(publisher, CONFIG, delay_s=60)  # type: ignore[arg-type]
    orphans.connect(settle)
    request = pb.ChatRequest()
    request.CopyFrom(REQUEST)
    request.routing.end_user = "u1"
    orphans.record(request, STARTED, lost(), time.monotonic())
    await orphans.close()  # publishes now and waits (bounded) for the charge
    [event] = publisher.events
    assert len(settle.calls) == 2 and orphans.unsettled == 0
    sent = settle.calls[-1]
    assert sent.cost_usd == event.usage.cost_usd > 0
    assert (sent.request.request_id, sent.request.identity.key_id, sent.request.routing.end_user) == ("r1", "k", "u1")
    assert not sent.request.messages  # what names the budgets, not the prompt


async def test_a_refused_charge_is_counted_not_retried() -> None:
    settle = Settle(grpc.StatusCode.INVALID_ARGUMENT)
    orphans = OrphanUsage(Publisher(), CONFIG, delay_s=60)  # type: ignore[arg-type]
    orphans.connect(settle)
    orphans.record(REQUEST, STARTED, lost(), time.monotonic())
    await orphans.close()
    assert len(settle.calls) == 1 and orphans.unsettled == 1
    gauges = {name: dict(rows) for name, _, _, rows in orphans.metrics()}  # what /metrics shows
    assert gauges["switchyard_orphaned_answers"] == {("pending",): 0, ("dropped",): 0, ("unsettled",): 1}
    assert gauges["switchyard_usage_spool_bytes"] == {(): 0}
