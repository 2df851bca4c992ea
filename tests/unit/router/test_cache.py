"""The cache stage in the pipeline, with a scripted provider and an in-memory
store: what is served from the cache, what is stored, and what each control
and mode does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping

import pytest

from router.breaker import BreakerBoard
from router.cache import ResponseCache
from router.pipeline import Pipeline
from router.routes import RoutingTable
from switchyard.config import BreakerSettings
from switchyard.v1 import cache_pb2 as cpb
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb
from switchyard.v1 import usage_pb2 as upb
from tests.unit.router.scripted import REQUEST, Provider, chunk, copy, error, table, tool_chunk, usage

CACHE = """
routes:
  pair:
    targets: [m1, m2]
  hot:
    targets: [{model: m1, params: {temperature: 0.8}}]
api_keys:
  - {id: fresh, prefix: sy_fresh0000, sha256: "0000000000000000000000000000000000000000000000000000000000000000"}
  - {id: short, prefix: sy_short0000, sha256: "1111111111111111111111111111111111111111111111111111111111111111"}
cache:
  ttl_s: 60
  max_ttl_s: 600
  max_entry_bytes: 4096
  routes: {pair: {mode: read_only, ttl_s: 120}}
  models: {m2: {mode: write_only, ttl_s: 30}}
  keys: {fresh: {mode: "off"}, short: {ttl_s: 5}}
"""


class MemoryStore:
    """CacheStore's interface over a dict; ``down`` makes it unreachable."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}
        self.ttls: dict[str, int] = {}
        self.down = False
        self.gets = 0

    async def get(self, key: str, tenant: str) -> cpb.CacheEntry | None:
        self.gets += 1
        data = None if self.down else self.entries.get(key)
        return None if data is None else cpb.CacheEntry.FromString(data)

    def put(self, key: str, entry: cpb.CacheEntry, ttl_s: int) -> bool:
        if self.down:
            return False
        self.entries[key] = entry.SerializeToString()
        self.ttls[key] = ttl_s
        return True

    def only(self) -> cpb.CacheEntry:
        assert len(self.entries) == 1
        return cpb.CacheEntry.FromString(next(iter(self.entries.values())))


class Sink:
    def __init__(self) -> None:
        self.events: list[upb.UsageEvent] = []

    def record(self, event: upb.UsageEvent, headers: Mapping[str, str] | None = None) -> None:
        self.events.append(event)


class Harness:
    def __init__(self, extra: str = CACHE, store: MemoryStore | None = None) -> None:
        self.routing: RoutingTable = table(extra)
        self.store = store or MemoryStore()
        self.sink = Sink()
        self.cache = ResponseCache(self.store)  # type: ignore[arg-type]

    async def run(self, request: pb.ChatRequest, provider: Provider, *, stop_after: int | None = None,
                  ) -> list[pb.ChatEvent]:
        pipeline = Pipeline(lambda: self.routing, provider, self.sink, BreakerBoard(BreakerSettings()),
                            cache=self.cache)
        events = []
        stream = pipeline.stream(request.SerializeToString(), None)
        async for raw in stream:
            events.append(pb.ChatEvent.FromString(raw))
            if stop_after is not None and len(events) == stop_after:
                await stream.aclose()  # the client went away
                break
        return events

    @property
    def usage(self) -> upb.UsageEvent:
        return self.sink.events[-1]


def request(model: str = "m1", request_id: str = "r1", **routing: object) -> pb.ChatRequest:
    out = copy(REQUEST)
    out.request_id, out.model = request_id, model
    out.sampling.temperature = 0
    out.identity.tenant, out.identity.key_id = "acme", "k1"
    for name, value in routing.items():
        field = getattr(out.routing, name)
        if isinstance(value, dict):
            field.update(value)
        else:
            setattr(out.routing, name, value)
    return out


def reasoning_chunk(text: str) -> bytes:
    return ppb.GenerateEvent(chunk=pb.Chunk(choices=[pb.ChoiceDelta(index=0, role="assistant", reasoning=text)])
                             ).SerializeToString()


RICH = [reasoning_chunk("thinking"), chunk("Hel"), chunk("lo"), tool_chunk("lookup", '{"q": 1}'), usage(7, cost=0.25)]


async def test_miss_then_hit_replays_every_event_without_a_provider() -> None:
    h = Harness()
    first = await h.run(request(), Provider(RICH))
    assert first[0].started.cache == "miss" and first[0].started.attempt == 1
    assert (h.usage.cache_status, h.usage.cache_hit, h.usage.usage.cost_usd) == ("miss", False, 0.25)
    entry = h.store.only()
    assert entry.tenant == "acme" and entry.cost_usd == 0.25 and entry.started.model == "m1"
    assert h.store.ttls == {next(iter(h.store.entries)): 60}

    second = await h.run(request(request_id="r2"), Provider())  # no attempt scripted: a call would fail
    started = second[0].started
    assert (started.cache, started.request_id, started.model, started.provider, started.attempt) == \
        ("hit", "r2", "m1", "a", 0)
    assert [e.chunk for e in second[1:-1]] == [e.chunk for e in first[1:-1]]  # reasoning, content, tool call
    assert second[-1].usage.completion_tokens == 7 and second[-1].usage.cost_usd == 0  # a hit costs nothing
    usage = h.usage
    assert (usage.request_id, usage.cache_status, usage.cache_hit, usage.status) == ("r2", "hit", True, "ok")
    assert (usage.usage.cost_usd, usage.cost_saved_usd, usage.model, usage.provider) == (0, 0.25, "m1", "a")
    assert len(usage.attempts) == 0 and usage.ttft_ms >= 0


async def test_streamed_and_whole_answers_serve_each_other() -> None:
    h = Harness()
    streamed = request()
    streamed.stream, streamed.include_usage = True, True
    await h.run(streamed, Provider(RICH))
    events = await h.run(request(request_id="r2"), Provider())
    assert events[0].started.cache == "hit"
    assert "".join(e.chunk.choices[0].content for e in events if e.HasField("chunk")) == "Hello"


async def test_tenants_never_share_an_entry() -> None:
    h = Harness()
    await h.run(request(), Provider(RICH))
    other = request(request_id="r2")
    other.identity.tenant = "globex"
    provider = Provider(RICH)
    events = await h.run(other, provider)
    assert len(provider.requests) == 1 and events[0].started.cache == "miss"
    assert len(h.store.entries) == 2
    # An entry found under a key but written for another tenant is never served.
    key = next(k for k, v in h.store.entries.items() if cpb.CacheEntry.FromString(v).tenant == "acme")
    forged = cpb.CacheEntry.FromString(h.store.entries[key])
    forged.tenant = "globex"
    h.store.entries[key] = forged.SerializeToString()
    provider = Provider(RICH)
    await h.run(request(request_id="r3"), provider)
    assert len(provider.requests) == 1


def finished(reason: str, index: int = 0) -> bytes:
    return chunk("x", reason, index)


@pytest.mark.parametrize(("events", "why"), [
    ([chunk("partial"), error(502, False)], "error"),                 # a stream cut after output
    ([error(400, False)], "error"),                                     # an error before output
    ([finished("length"), usage(1)], "finish_reason length"),           # truncated
    ([finished("content_filter"), usage(1)], "finish_reason content_filter"),
    ([chunk("no finish"), usage(1)], "choice 0 did not finish"),
    ([finished("stop")], "incomplete"),                                 # no usage: the stream did not end
    ([chunk("x" * 5000, "stop"), usage(1)], "max_entry_bytes"),         # larger than max_entry_bytes
])
async def test_only_complete_successful_answers_are_stored(events: list[bytes], why: str) -> None:
    h = Harness()
    result = await h.run(request(trace=True), Provider(events))
    assert h.store.entries == {}
    assert why in result[-1].trace.cache.reason and not result[-1].trace.cache.stored


async def test_every_choice_must_finish() -> None:
    h = Harness()
    two = request()
    two.sampling.n = 2
    await h.run(two, Provider([finished("stop", 0), usage(1)]))
    assert h.store.entries == {}
    await h.run(two, Provider([finished("stop", 0), finished("stop", 1), usage(1)]))
    assert len(h.store.entries) == 1


async def test_a_client_that_goes_away_stores_nothing() -> None:
    h = Harness()
    await h.run(request(), Provider(RICH), stop_after=2)
    assert h.store.entries == {}
    assert h.usage.status == "cancelled"


async def test_no_cache_answers_fresh_and_refreshes_the_entry() -> None:
    h = Harness()
    await h.run(request(), Provider([chunk("old", "stop"), usage(1)]))
    provider = Provider([chunk("new", "stop"), usage(1)])
    events = await h.run(request(request_id="r2", cache_skip=True, trace=True), provider)
    assert len(provider.requests) == 1 and events[0].started.cache == "bypass"
    assert (events[-1].trace.cache.reason, events[-1].trace.cache.stored) == ("no-cache", True)
    assert h.usage.cache_status == "bypass"
    events = await h.run(request(request_id="r3"), Provider())
    assert events[1].chunk.choices[0].content == "new"


async def test_no_store_reads_but_does_not_write() -> None:
    h = Harness()
    provider = Provider(RICH)
    events = await h.run(request(cache_no_store=True), provider)
    assert events[0].started.cache == "miss" and h.store.entries == {} and h.store.gets == 1
    await h.run(request(request_id="r2"), Provider(RICH))
    events = await h.run(request(request_id="r3", cache_no_store=True), Provider())
    assert events[0].started.cache == "hit"


async def test_max_age_bounds_the_stored_ttl_and_the_age_served() -> None:
    h = Harness()
    await h.run(request(cache_ttl_s=6000), Provider(RICH))
    assert list(h.store.ttls.values()) == [600]  # capped by max_ttl_s
    key = next(iter(h.store.entries))
    entry = h.store.only()
    entry.created_ms -= 10_000  # ten seconds old
    h.store.entries[key] = entry.SerializeToString()
    provider = Provider(RICH)
    events = await h.run(request(request_id="r2", cache_ttl_s=5), provider)  # too old for this client
    assert events[0].started.cache == "miss" and len(provider.requests) == 1
    assert h.store.ttls[key] == 5
    events = await h.run(request(request_id="r3", cache_ttl_s=0, trace=True), Provider(RICH))
    assert events[0].started.cache == "bypass" and events[-1].trace.cache.reason == "max-age=0"


async def test_expired_entries_are_misses() -> None:
    h = Harness()
    await h.run(request(), Provider(RICH))
    key = next(iter(h.store.entries))
    entry = h.store.only()
    entry.expires_ms = int(time.time() * 1000) - 1
    h.store.entries[key] = entry.SerializeToString()
    provider = Provider(RICH)
    events = await h.run(request(request_id="r2"), provider)
    assert events[0].started.cache == "miss" and len(provider.requests) == 1


async def test_modes_and_their_precedence() -> None:
    h = Harness()
    # @pair is read_only (route level, over the default): looked up, never stored.
    events = await h.run(request("@pair"), Provider(RICH))
    assert events[0].started.cache == "miss" and h.store.entries == {}
    # m2 is write_only with a 30 s TTL (model level): stored, never read.
    for rid in ("r1", "r2"):
        provider = Provider(RICH)
        events = await h.run(request("m2", rid, trace=True), provider)
        assert events[0].started.cache == "bypass" and len(provider.requests) == 1
    assert events[-1].trace.cache.reason == "mode write_only" and list(h.store.ttls.values()) == [30]
    # The key's setting wins over the model's and the default.
    short = request("m1", "r3")
    short.identity.key_id = "short"
    await h.run(short, Provider(RICH))
    assert sorted(h.store.ttls.values()) == [5, 30]
    fresh = request("m1", "r4")
    fresh.identity.key_id = "fresh"
    gets = h.store.gets
    events = await h.run(fresh, Provider(RICH))
    assert events[0].started.cache == "bypass" and h.store.gets == gets
    assert h.usage.cache_status == ""  # no cache applies to this key


async def test_sampled_requests_are_not_cached_unless_configured() -> None:
    h = Harness()
    sampled = request(trace=True)
    sampled.sampling.ClearField("temperature")
    events = await h.run(sampled, Provider(RICH))
    assert events[0].started.cache == "bypass" and h.store.entries == {} and h.store.gets == 0
    assert "temperature" in events[-1].trace.cache.reason
    events = await h.run(request("@hot", trace=True), Provider(RICH))  # the target's temperature wins
    assert events[0].started.cache == "bypass"
    h = Harness(CACHE + "  sampled: true\n")
    await h.run(sampled, Provider(RICH))
    events = await h.run(sampled, Provider())
    assert events[0].started.cache == "hit"


async def test_a_store_outage_is_a_miss_never_an_error() -> None:
    h = Harness()
    h.store.down = True
    provider = Provider(RICH)
    events = await h.run(request(trace=True), provider)
    assert events[0].started.cache == "miss" and len(provider.requests) == 1 and h.usage.status == "ok"
    assert events[-1].trace.cache.reason == "the cache store is unavailable"


async def test_decision_trace_on_a_hit() -> None:
    h = Harness()
    secret = request()
    secret.messages[0].text = "a private prompt"
    await h.run(secret, Provider(RICH))
    secret.request_id, secret.routing.trace = "r2", True
    events = await h.run(secret, Provider())
    cache = events[-1].trace.cache
    assert (cache.status, cache.stored, len(cache.key), cache.reason) == ("hit", False, 16, "")
    assert cache.key == next(iter(h.store.entries))[:16] and cache.age_s >= 0
    assert "private" not in str(events[-1].trace)  # never prompt text


@pytest.mark.parametrize("setup", ["no cache section", "no store"])
async def test_without_a_store_or_a_cache_section_nothing_is_cached(setup: str) -> None:
    harness = Harness("") if setup == "no cache section" else Harness()
    if setup == "no store":
        harness.cache = ResponseCache()  # SWITCHYARD_NATS_URL unset
    for _ in range(1):
        provider = Provider(RICH, RICH)
        for rid in ("r1", "r2"):
            events = await harness.run(request(request_id=rid), provider)
            assert events[0].started.cache == "bypass"
        assert len(provider.requests) == 2 and harness.store.entries == {}
        assert harness.usage.cache_status == ""


async def test_only_if_cached_never_reaches_an_upstream() -> None:
    h = Harness()
    events = await h.run(request(cache_only=True), Provider())  # nothing cached: 504, no attempt
    assert (events[0].error.status, events[0].error.code) == (504, "cache_miss")
    assert h.usage.status == "error" and len(h.usage.attempts) == 0 and h.store.entries == {}
    sampled = request(cache_only=True)
    sampled.sampling.ClearField("temperature")
    events = await h.run(sampled, Provider())  # not cacheable at all: 504 too, saying why
    assert events[0].error.status == 504 and "temperature" in events[0].error.message
    await h.run(request(), Provider(RICH))
    events = await h.run(request(request_id="r2", cache_only=True), Provider())
    assert events[0].started.cache == "hit"


# ------------------------------------------------------------- coalescing --


class Gated(Provider):
    """The first attempt waits for ``gate``; ``called`` is set when it starts."""

    def __init__(self, *attempts: list[bytes | BaseException]) -> None:
        super().__init__(*attempts)
        self.called = asyncio.Event()
        self.gate = asyncio.Event()
        self.calls = 0

    async def __call__(self, request: bytes, timeout_s: float | None = None) -> AsyncIterator[bytes]:
        self.calls += 1
        if self.calls == 1:
            self.called.set()
            await self.gate.wait()
        async for raw in super().__call__(request, timeout_s):
            yield raw


async def waiting(h: Harness, provider: Gated, count: int) -> list[asyncio.Task[list[pb.ChatEvent]]]:
    """``count`` identical non-streaming requests started while the first is held upstream, each
    parked on it (each looked the key up in the store, and nothing after that suspends before the wait)."""
    await provider.called.wait()
    tasks = [asyncio.create_task(h.run(request(request_id=f"w{i}"), provider)) for i in range(count)]
    for _ in range(100):
        if h.store.gets == 1 + count:
            break
        await asyncio.sleep(0)  # a scheduling yield: lets each new task run to its first suspension
    assert h.store.gets == 1 + count
    return tasks


async def test_identical_requests_in_flight_wait_for_the_first_answer() -> None:
    h = Harness()
    provider = Gated(RICH)
    first = asyncio.create_task(h.run(request(), provider))
    waiters = await waiting(h, provider, 3)
    provider.gate.set()
    answers = [await first, *await asyncio.gather(*waiters)]
    assert provider.calls == 1  # one upstream call for four requests
    assert [a[0].started.cache for a in answers] == ["miss", "hit", "hit", "hit"]
    assert all([e.chunk for e in a[1:-1]] == [e.chunk for e in answers[0][1:-1]] for a in answers[1:])
    billed = sorted((e.request_id, e.usage.cost_usd, e.cost_saved_usd) for e in h.sink.events)
    assert billed == [("r1", 0.25, 0), ("w0", 0, 0.25), ("w1", 0, 0.25), ("w2", 0, 0.25)]


async def test_a_failed_first_request_does_not_fail_the_ones_waiting_for_it() -> None:
    h = Harness()
    provider = Gated([error(400, False, code="bad")], *([chunk("ok", "stop"), usage(1)] for _ in range(2)))
    first = asyncio.create_task(h.run(request(), provider))
    waiters = await waiting(h, provider, 2)
    provider.gate.set()
    assert (await first)[0].error.code == "bad"
    for answer in await asyncio.gather(*waiters):  # each ran itself
        assert answer[0].started.cache == "miss" and answer[1].chunk.choices[0].content == "ok"
    assert provider.calls == 3


async def test_a_stream_never_waits_for_an_identical_request() -> None:
    h = Harness()
    provider = Gated(RICH, RICH)
    first = asyncio.create_task(h.run(request(), provider))
    await provider.called.wait()
    streamed = request(request_id="s1")
    streamed.stream = True
    answer = await h.run(streamed, provider)  # completes while the first is still held upstream
    assert answer[0].started.cache == "miss" and answer[-1].HasField("usage") and not first.done()
    provider.gate.set()
    await first
    assert provider.calls == 2
