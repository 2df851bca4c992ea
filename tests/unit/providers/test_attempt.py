"""The attempt runner against a tiny scripted upstream: commit point,
timeouts, error mapping, cancellation, n fan-out, emulated json_schema."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from providers import timing
from providers.attempt import AttemptFailedError, AttemptSpec, stream_attempt
from providers.base import Capabilities, SSEEvent, Translator, UpstreamProtocolError, UpstreamRequest
from providers.fairness import KeyGate
from providers.server import ProviderServicer
from switchyard import event_tags
from switchyard.config import Pricing, ProviderSpec, Timeouts
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb


class LineTranslator(Translator):
    """Upstream protocol of the fake: SSE ``data: <word>`` lines, ``data: END``
    (finish and usage) or ``data: BARE_END`` (usage without a finish)."""

    type = "fake"
    capabilities = Capabilities(n=False, json_schema=False)

    def build_request(self, request: pb.ChatRequest, model: str, *, stream: bool) -> UpstreamRequest:
        body = orjson.dumps({"script": request.messages[0].text, "stream": stream})
        return UpstreamRequest("POST", f"{self.spec.base_url}/gen", {"content-type": "application/json"}, body)

    def parse_response(self, body: bytes, model: str) -> Iterable[ppb.GenerateEvent]:
        data = orjson.loads(body)
        yield ppb.GenerateEvent(chunk=pb.Chunk(choices=[pb.ChoiceDelta(role="assistant", content=data["text"],
                                                                     finish_reason="stop")]))
        yield ppb.GenerateEvent(usage=pb.Usage(prompt_tokens=10, completion_tokens=1000))

    async def stream_events(self, events: AsyncIterator[SSEEvent], model: str) -> AsyncIterator[ppb.GenerateEvent]:
        async for event in events:
            if event.data in ("END", "BARE_END"):
                if event.data == "END":
                    yield ppb.GenerateEvent(chunk=pb.Chunk(choices=[pb.ChoiceDelta(finish_reason="stop")]))
                yield ppb.GenerateEvent(usage=pb.Usage(prompt_tokens=10, completion_tokens=1000))
                return
            if event.data == "ROLE":
                yield ppb.GenerateEvent(chunk=pb.Chunk(choices=[pb.ChoiceDelta(role="assistant")]))
                continue
            yield ppb.GenerateEvent(chunk=pb.Chunk(choices=[pb.ChoiceDelta(content=event.data)]))
        raise UpstreamProtocolError("no END")

    def map_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> pb.Error:
        return pb.Error(status=status, type="api_error", message=body.decode(), retryable=status >= 500,
                        retry_after_ms=int(headers.get("retry-after", "0")) * 1000)


class Upstream:
    """Scripts: 'a b c' (words), 'role-then-fail', 'error:503', 'stall ...', 'slow-first', 'json',
    'nofinish a b' (terminator without a finish), 'cut a b' (connection closed mid-answer),
    'slow a b c' (a word every 150 ms)."""

    def __init__(self) -> None:
        self.calls = 0
        self.disconnected = asyncio.Event()
        self.json_answers: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        body = await request.json()
        script: str = body["script"]
        if script.startswith("error:"):
            return web.Response(status=int(script[6:]), text="upstream says no", headers={"retry-after": "3"})
        if script == "slow-first":
            await asyncio.sleep(5)
        if not body["stream"]:
            text = self.json_answers.pop(0) if script == "json" else script
            return web.json_response({"text": text})
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        try:
            if script == "role-then-fail":
                await response.write(b"data: ROLE\n\n")
                request.transport.close()
                return response
            await response.write(b"data: ROLE\n\n")
            words = script.split()[1:] if script.startswith("nofinish") else script.split()
            for i, word in enumerate(words):
                if script.startswith("slow"):
                    await asyncio.sleep(0.15)
                await response.write(f"data: {word}\n\n".encode())
                if script.startswith("stall") and i == 0:
                    await asyncio.sleep(30)
            if script.startswith("cut"):
                request.transport.close()
                return response
            await response.write(b"data: BARE_END\n\n" if script.startswith("nofinish") else b"data: END\n\n")
        except asyncio.CancelledError:
            self.disconnected.set()
            raise
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    fake = Upstream()
    app = web.Application()
    app.router.add_post("/gen", fake.handle)
    server = TestServer(app, host="127.0.0.1", port=0, handler_cancellation=True)
    await server.start_server()
    yield fake, str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def make_spec(url: str, session: aiohttp.ClientSession, **timeouts: float) -> AttemptSpec:
    spec = ProviderSpec(type="openai", base_url=url)
    translator = LineTranslator("fake", spec, None)
    pricing = Pricing(input_per_mtok=1.0, output_per_mtok=2.0)
    return AttemptSpec(translator, session, "m", Timeouts(**timeouts), pricing)


def request(script: str, *, stream: bool = True, n: int = 1, schema: str = "") -> pb.ChatRequest:
    req = pb.ChatRequest(model="m", stream=stream, messages=[pb.Message(role="user", text=script)])
    req.sampling.n = n
    if schema:
        req.response_format.type = "json_schema"
        req.response_format.schema_json = schema
    return req


async def collect(spec: AttemptSpec, req: pb.ChatRequest) -> list[ppb.GenerateEvent]:
    return [e async for e in stream_attempt(spec, req, None)]


async def test_stream_events_and_cost(upstream, session) -> None:
    _, url = upstream
    events = await collect(make_spec(url, session), request("hello world"))
    texts = [d.content for e in events if e.HasField("chunk") for d in e.chunk.choices]
    assert texts == ["", "hello", "world", ""]
    assert events[-1].usage.cost_usd == pytest.approx((10 * 1.0 + 1000 * 2.0) / 1e6)


async def test_role_only_then_failure_is_a_clean_pre_output_failure(upstream, session) -> None:
    _, url = upstream
    with pytest.raises(AttemptFailedError) as info:
        await collect(make_spec(url, session), request("role-then-fail"))
    assert info.value.output_sent is False
    assert info.value.error.retryable


async def test_upstream_error_status_is_mapped(upstream, session) -> None:
    _, url = upstream
    with pytest.raises(AttemptFailedError) as info:
        await collect(make_spec(url, session), request("error:503"))
    assert info.value.error.status == 503
    assert info.value.error.retry_after_ms == 3000


async def test_first_token_timeout(upstream, session) -> None:
    _, url = upstream
    with pytest.raises(AttemptFailedError) as info:
        await collect(make_spec(url, session, first_token_s=0.2), request("slow-first"))
    assert info.value.error.status == 504 and info.value.error.retryable


async def test_stall_mid_stream_times_out_and_closes_upstream(upstream, session) -> None:
    fake, url = upstream
    spec = make_spec(url, session, between_chunks_s=0.2)
    seen = []
    with pytest.raises(AttemptFailedError) as info:
        async for event in stream_attempt(spec, request("stall now"), None):
            seen.append(event)
    assert info.value.output_sent is True
    assert "stalled" in info.value.error.message
    await asyncio.wait_for(fake.disconnected.wait(), 5)


async def test_consumer_cancellation_closes_upstream_connection(upstream, session) -> None:
    fake, url = upstream
    agen = stream_attempt(make_spec(url, session), request("stall forever"), None)
    await anext(agen)
    await anext(agen)
    await agen.aclose()
    await asyncio.wait_for(fake.disconnected.wait(), 5)


async def test_non_stream(upstream, session) -> None:
    _, url = upstream
    events = await collect(make_spec(url, session), request("whole answer", stream=False))
    assert events[0].chunk.choices[0].content == "whole answer"


async def test_fan_out_merges_n_single_calls(upstream, session) -> None:
    fake, url = upstream
    events = await collect(make_spec(url, session), request("a b", n=3))
    indexes = {d.index for e in events if e.HasField("chunk") for d in e.chunk.choices}
    assert indexes == {0, 1, 2}
    assert fake.calls == 3
    usage = [e.usage for e in events if e.HasField("usage")]
    assert len(usage) == 1 and usage[0].completion_tokens == 3000


SCHEMA = '{"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}'


async def test_emulated_schema_valid_first_time(upstream, session) -> None:
    fake, url = upstream
    fake.json_answers = ['{"x": 1}']
    events = await collect(make_spec(url, session), request("json", stream=False, schema=SCHEMA))
    assert events[0].chunk.choices[0].content == '{"x": 1}'
    assert fake.calls == 1


async def test_emulated_schema_retries_once_then_succeeds(upstream, session) -> None:
    fake, url = upstream
    fake.json_answers = ['{"x": "nope"}', '{"x": 2}']
    events = await collect(make_spec(url, session), request("json", stream=False, schema=SCHEMA))
    assert events[0].chunk.choices[0].content == '{"x": 2}'
    assert fake.calls == 2
    assert events[-1].usage.completion_tokens == 2000  # both calls are billed


async def test_emulated_schema_invalid_twice_is_an_error(upstream, session) -> None:
    fake, url = upstream
    fake.json_answers = ["not json", '{"y": 1}']
    with pytest.raises(AttemptFailedError) as info:
        await collect(make_spec(url, session), request("json", stream=False, schema=SCHEMA))
    assert info.value.error.code == "invalid_structured_output"
    assert fake.calls == 2


async def test_attempts_over_a_keys_share(upstream, session) -> None:
    _, url = upstream
    spec = make_spec(url, session, first_token_s=0.3)
    spec.gate = KeyGate(total=2, per_key=1, max_waiting=1)
    busy = request("stall forever")
    busy.identity.key_id = "flood"
    holder = stream_attempt(spec, busy, None)
    await anext(holder)  # holds flood's only slot while it streams
    waiting = request("a b")
    waiting.identity.key_id = "flood"
    with pytest.raises(AttemptFailedError) as timed_out:
        _ = [e async for e in stream_attempt(spec, waiting, None)]
    assert timed_out.value.error.code == "upstream_timeout"
    assert "came free" in timed_out.value.error.message

    queued = asyncio.create_task(anext(stream_attempt(spec, waiting, None)))
    await asyncio.sleep(0)
    with pytest.raises(AttemptFailedError) as refused:
        _ = [e async for e in stream_attempt(spec, waiting, None)]
    error = refused.value.error
    assert (error.status, error.code, error.retryable, error.retry_after_ms) == (
        429, "key_concurrency_exceeded", True, 1000)
    other = request("a b")
    other.identity.key_id = "victim"
    events = [e async for e in stream_attempt(spec, other, None)]
    assert events[-1].HasField("usage")
    await holder.aclose()  # the slot frees; the queued attempt runs
    assert (await asyncio.wait_for(queued, 5)).HasField("chunk")
    assert spec.gate.used <= 1


# ------------------------------------------------ failures in the client's terms --


async def test_terminator_without_a_finish_is_truncated(upstream, session) -> None:
    _, url = upstream
    with pytest.raises(AttemptFailedError) as early:
        await collect(make_spec(url, session), request("nofinish"))
    assert (early.value.error.code, early.value.error.retryable, early.value.output_sent) == (
        "upstream_stream_truncated", True, False)
    with pytest.raises(AttemptFailedError) as late:
        await collect(make_spec(url, session), request("nofinish a b"))
    error = late.value.error
    assert (error.status, error.code, error.retryable, late.value.output_sent) == (
        502, "upstream_stream_truncated", False, True)
    assert "finish reason for choice 0" in error.message


async def test_fan_out_with_one_truncated_choice_fails(upstream, session) -> None:
    _, url = upstream
    with pytest.raises(AttemptFailedError) as info:
        await collect(make_spec(url, session), request("nofinish a", n=2))
    assert info.value.error.code == "upstream_stream_truncated"


async def test_connection_cut_mid_answer_is_said_plainly(upstream, session) -> None:
    _, url = upstream
    with pytest.raises(AttemptFailedError) as info:
        await collect(make_spec(url, session), request("cut a b"))
    error = info.value.error
    assert (error.status, error.code, info.value.output_sent) == (502, "upstream_stream_truncated", True)
    assert error.message == "the connection to fake closed before the answer was complete"


@pytest.mark.parametrize(("limits", "script", "named"), [
    ({"first_token_s": 0.2}, "slow-first", "0.2 s first-token timeout"),
    ({"between_chunks_s": 0.2}, "stall now", "stalled: no chunk within the 0.2 s between-chunks timeout"),
    ({"total_s": 0.4, "between_chunks_s": 5}, "slow a b c d e f", "0.4 s total timeout"),
])
async def test_each_timeout_names_itself(upstream, session, limits: dict, script: str, named: str) -> None:
    _, url = upstream
    with pytest.raises(AttemptFailedError) as info:
        await collect(make_spec(url, session, **limits), request(script))
    error = info.value.error
    assert (error.status, error.type, error.code) == (504, "timeout_error", "upstream_timeout")
    assert named in error.message


async def test_request_deadline_is_not_an_upstream_timeout(upstream, session) -> None:
    _, url = upstream
    spec = make_spec(url, session)
    with pytest.raises(AttemptFailedError) as info:
        _ = [e async for e in stream_attempt(spec, request("slow-first"), time.monotonic() + 0.2)]
    error = info.value.error
    assert (error.status, error.code, error.retryable) == (504, "deadline_exceeded", False)
    assert "deadline" in error.message


async def test_upstream_error_text_is_logged_at_debug_only(upstream, session, caplog) -> None:
    _, url = upstream
    with caplog.at_level(logging.DEBUG, logger="providers.sanitize"), pytest.raises(AttemptFailedError):
        await collect(make_spec(url, session), request("error:503"))
    assert any("upstream says no" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


async def test_the_first_upstream_send_is_timed_across_fan_out_tasks(upstream, session) -> None:
    _, url = upstream
    for n in (1, 3):
        clock = timing.start()
        before = time.monotonic()
        await collect(make_spec(url, session), request("a b", n=n))
        assert before < clock.sent_at < time.monotonic()


async def test_the_worker_sends_its_timing_just_before_the_first_output(upstream, session) -> None:
    _, url = upstream
    received = time.monotonic()
    out = [raw async for raw in ProviderServicer(None)._serialized(  # type: ignore[arg-type]
        make_spec(url, session), request("slow a b"), None, received)]
    assert [raw[0] for raw in out[:2]] == [event_tags.TIMING, event_tags.CHUNK]
    assert sum(raw[0] == event_tags.TIMING for raw in out) == 1
    sent = ppb.GenerateEvent.FromString(out[0]).timing
    assert sent.upstream_us >= 150_000  # the upstream's 150 ms before its first word
    assert 0 < sent.provider_us < sent.upstream_us
    assert sent.provider_total_us >= sent.provider_us + sent.upstream_us
    assert sent.provider_total_us <= (time.monotonic() - received) * 1e6


class OneSpec:
    """What the servicer asks of a registry, for one upstream."""

    def __init__(self, spec: AttemptSpec) -> None:
        self.spec = spec

    def attempt_spec(self, provider: str, model: str, timeouts: object = None) -> AttemptSpec:
        return self.spec


async def test_in_process_streams_are_sent_event_by_event(upstream, session) -> None:
    """Over gRPC a stream's queued events leave joined; in process (the router
    calling the worker's code) each event is its own message, as parsed."""
    _, url = upstream
    servicer = ProviderServicer(OneSpec(make_spec(url, session)))  # type: ignore[arg-type]
    generate = ppb.GenerateRequest(request=request("a b c d e f"), target=ppb.Target(provider="fake", model="m"))
    payloads = [raw async for raw in servicer.stream_generate(generate.SerializeToString(), None, batched=False)]
    events = [ppb.GenerateEvent.FromString(raw) for raw in payloads]
    assert [e.WhichOneof("event") for e in events][:2] == ["timing", "chunk"]
    assert sum(e.HasField("chunk") for e in events) >= 6  # one chunk per word, none joined
    assert all(len(e.chunk.choices) <= 1 for e in events)
    assert events[-1].HasField("usage")
