from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from router.execute import Outcome, generate_request_bytes, stream_plan
from router.resolve import Plan, Target
from switchyard.session import TransportError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb


def chunk(text: str) -> bytes:
    return ppb.GenerateEvent(chunk=pb.Chunk(choices=[pb.ChoiceDelta(index=0, content=text)])).SerializeToString()


def error(status: int, retryable: bool) -> bytes:
    return ppb.GenerateEvent(error=pb.Error(status=status, type="api_error", message="boom",
                                            retryable=retryable)).SerializeToString()


def usage(tokens: int) -> bytes:
    return ppb.GenerateEvent(usage=pb.Usage(completion_tokens=tokens, cost_usd=0.5)).SerializeToString()


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


def transport_error(code: grpc.StatusCode) -> TransportError:
    return TransportError(code, "x")


PLAN = Plan([Target("a", "m1"), Target("b", "m2")], "raw")
REQUEST = pb.ChatRequest(request_id="r1", model="m1", messages=[pb.Message(role="user", text="hi")])


async def run(provider: Provider, plan: Plan = PLAN) -> tuple[list[pb.ChatEvent], Outcome]:
    outcome = Outcome()
    events = [pb.ChatEvent.FromString(raw) async for raw in
              stream_plan(plan, "r1", REQUEST.SerializeToString(), provider, None, outcome)]
    return events, outcome


def test_generate_request_embeds_request_bytes_unchanged() -> None:
    raw = generate_request_bytes(REQUEST.SerializeToString(), "a", "m1", 3)
    parsed = ppb.GenerateRequest.FromString(raw)
    assert parsed.request == REQUEST
    assert (parsed.target.provider, parsed.target.model, parsed.attempt) == ("a", "m1", 3)


async def test_success_relays_events_after_started() -> None:
    provider = Provider([chunk("he"), chunk("llo"), usage(2)])
    events, outcome = await run(provider)
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["started", "chunk", "chunk", "usage"]
    assert events[0].started.provider == "a" and events[0].started.attempt == 1
    assert outcome.usage.completion_tokens == 2 and outcome.error is None
    assert outcome.attempts[0].outcome == "ok"


async def test_retryable_error_before_output_falls_back_silently() -> None:
    provider = Provider([error(503, True)], [chunk("ok"), usage(1)])
    events, outcome = await run(provider)
    assert [e.WhichOneof("event") for e in events] == ["started", "chunk", "usage"]
    assert events[0].started.provider == "b" and events[0].started.attempt == 2
    assert [a.outcome for a in outcome.attempts] == ["error", "ok"]
    assert provider.requests[1].target.model == "m2"


async def test_non_retryable_error_does_not_fall_back() -> None:
    provider = Provider([error(400, False)], [chunk("never")])
    events, _outcome = await run(provider)
    assert [e.WhichOneof("event") for e in events] == ["error"]
    assert events[0].error.status == 400
    assert len(provider.requests) == 1


async def test_error_after_output_ends_stream_without_fallback() -> None:
    provider = Provider([chunk("part"), error(502, True)], [chunk("never")])
    events, outcome = await run(provider)
    assert [e.WhichOneof("event") for e in events] == ["started", "chunk", "error"]
    assert outcome.error.status == 502
    assert len(provider.requests) == 1


async def test_dead_worker_before_output_retries_same_target_once() -> None:
    provider = Provider([transport_error(grpc.StatusCode.UNAVAILABLE)], [chunk("ok"), usage(1)])
    events, _outcome = await run(provider)
    assert events[0].started.provider == "a" and events[0].started.attempt == 2
    assert [r.target.provider for r in provider.requests] == ["a", "a"]


async def test_dead_workers_three_times_then_falls_back_to_next_target() -> None:
    dead = [transport_error(grpc.StatusCode.UNAVAILABLE)]
    provider = Provider(list(dead), list(dead), list(dead), [chunk("ok"), usage(1)])
    events, _outcome = await run(provider)
    assert [r.target.provider for r in provider.requests] == ["a", "a", "a", "b"]
    assert events[0].started.provider == "b"


async def test_single_target_dead_worker_reports_503() -> None:
    dead = [transport_error(grpc.StatusCode.UNAVAILABLE)]
    provider = Provider(list(dead), list(dead), list(dead))
    events, _outcome = await run(provider, Plan([Target("a", "m1")], "raw"))
    assert [e.WhichOneof("event") for e in events] == ["error"]
    assert events[0].error.status == 503 and len(provider.requests) == 3


async def test_dead_worker_mid_stream_is_an_error_event() -> None:
    provider = Provider([chunk("x"), transport_error(grpc.StatusCode.UNAVAILABLE)])
    events, _outcome = await run(provider)
    assert events[-1].error.code == "provider_unavailable"
    assert provider.closed[0]


async def test_all_attempts_fail_reports_last_error() -> None:
    provider = Provider([error(503, True)], [error(429, True)])
    events, _outcome = await run(provider)
    assert [e.WhichOneof("event") for e in events] == ["error"]
    assert events[0].error.status == 429


async def test_empty_stream_counts_as_failure() -> None:
    provider = Provider([], [chunk("ok")])
    events, _ = await run(provider)
    assert events[0].started.provider == "b"


async def test_cancellation_cancels_provider_call() -> None:
    provider = Provider([chunk("a"), chunk("b")])
    outcome = Outcome()
    agen = stream_plan(PLAN, "r1", REQUEST.SerializeToString(), provider, None, outcome)
    await anext(agen)  # started
    await anext(agen)  # first chunk
    await agen.aclose()  # what a cancelled client call does to the generator
    assert provider.closed[0]
    assert outcome.cancelled
    assert outcome.attempts[0].outcome == "cancelled"
