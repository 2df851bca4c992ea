"""The cache store against a real nats-server with JetStream: entries shared
through the bucket, chunked when large, expiring by their own TTL, evicted
beyond the size bound, and an outage that is a miss, never an error or a wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import nats
import pytest

from router.cache_store import PART_BYTES, STREAM, CacheStore
from switchyard.v1 import cache_pb2 as cpb
from switchyard.v1 import chat_pb2 as pb
from tests.unit.switchyard.test_events import NatsServer


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    server = NatsServer()
    await server.start()
    yield server
    server.remove()


async def wait_until(check: Callable[[], object], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def eventually(fetch: Callable[[], object], timeout: float = 10.0) -> object:  # noqa: ASYNC109
    """The first non-None result of the coroutine function ``fetch``."""
    deadline = time.monotonic() + timeout
    while (result := await fetch()) is None:  # type: ignore[misc]
        assert time.monotonic() < deadline, "never found"
        await asyncio.sleep(0.02)
    return result


async def opened(url: str, **limits: float) -> CacheStore:
    store = CacheStore(url, max_bytes=int(limits.get("max_bytes", 64 * 1024 * 1024)), max_age_s=3600,
                       lookup_timeout_s=limits.get("lookup_timeout_s", 1.0))
    await store.start()
    await wait_until(lambda: store.available)
    return store


def entry(text: str, *, tenant: str = "acme") -> cpb.CacheEntry:
    now = int(time.time() * 1000)
    chunk = pb.ChatEvent(chunk=pb.Chunk(choices=[pb.ChoiceDelta(index=0, content=text, finish_reason="stop")]))
    return cpb.CacheEntry(tenant=tenant, created_ms=now, expires_ms=now + 60_000, cost_usd=0.5,
                          started=pb.Started(provider="openai", model="gpt-4o-mini"),
                          events=[chunk.SerializeToString(), pb.ChatEvent(usage=pb.Usage()).SerializeToString()])


async def test_an_entry_written_by_one_replica_is_read_by_another(nats_server: NatsServer) -> None:
    a, b = await opened(nats_server.url), await opened(nats_server.url)
    try:
        assert await b.get("k" * 64) is None
        written = entry("hello")
        assert a.put("k" * 64, written, 60)
        found = await eventually(lambda: b.get("k" * 64))
        assert found == written
    finally:
        await a.close()
        await b.close()


async def test_large_entries_are_chunked(nats_server: NatsServer) -> None:
    store = await opened(nats_server.url)
    try:
        big = entry("x" * (3 * PART_BYTES))
        big.events.extend(pb.ChatEvent(chunk=pb.Chunk(choices=[pb.ChoiceDelta(content=f"{i}" * 1000)]))
                          .SerializeToString() for i in range(200))
        expected = cpb.CacheEntry()
        expected.CopyFrom(big)
        assert store.put("big", big, 60)
        found = await eventually(lambda: store.get("big"))
        assert found.parts >= 4 and len(found.events) == len(expected.events)  # type: ignore[attr-defined]
        assert list(found.events) == list(expected.events)  # type: ignore[attr-defined]
        # A rewrite uses new continuation values: the reader gets one write or the other, never a mix.
        assert store.put("big", entry("small"), 60)
        small = await eventually(lambda: _with_text(store, "big", "small"))
        assert small.parts == 0  # type: ignore[attr-defined]
    finally:
        await store.close()


async def _with_text(store: CacheStore, key: str, text: str) -> cpb.CacheEntry | None:
    found = await store.get(key)
    if found is None or pb.ChatEvent.FromString(found.events[0]).chunk.choices[0].content != text:
        return None
    return found


async def test_entries_expire_by_their_own_ttl(nats_server: NatsServer) -> None:
    store = await opened(nats_server.url)
    try:
        assert store.put("short", entry("a"), 1)
        assert store.put("long", entry("b"), 600)
        await eventually(lambda: store.get("short"))
        began = time.monotonic()
        await wait_until_async(lambda: store.get("short"), absent=True, timeout=10)
        assert time.monotonic() - began < 5  # the server removed it (the store itself never checks the expiry)
        assert await store.get("long") is not None
    finally:
        await store.close()


async def wait_until_async(fetch: Callable[[], object], *, absent: bool, timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while ((await fetch()) is None) != absent:  # type: ignore[misc]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_the_bucket_is_bounded_and_evicts_the_oldest(nats_server: NatsServer) -> None:
    store = await opened(nats_server.url, max_bytes=1024 * 1024)
    try:
        for i in range(40):  # 40 x 100 KiB into a 1 MiB bucket
            assert store.put(f"e{i}", entry(str(i) * 100 * 1024), 600)
            await wait_until(lambda: not store._queue)
        await eventually(lambda: store.get("e39"))
        nc = await nats.connect(nats_server.url)
        try:
            info = await nc.jetstream().stream_info(STREAM)
        finally:
            await nc.close()
        assert info.state.bytes <= 1024 * 1024 and info.state.messages < 12
        assert await store.get("e0") is None
    finally:
        await store.close()


async def test_an_outage_is_an_immediate_miss_and_recovers(nats_server: NatsServer) -> None:
    store = await opened(nats_server.url)
    try:
        assert store.put("kept", entry("a"), 600)
        await eventually(lambda: store.get("kept"))
        nats_server.stop()
        await wait_until(lambda: not store.available)
        began = time.monotonic()
        assert await store.get("kept") is None
        assert time.monotonic() - began < 0.05  # no waiting on a store that is down
        dropped = store.dropped
        assert not store.put("other", entry("b"), 600) and store.dropped == dropped + 1
        await nats_server.start()  # same port and storage directory
        await wait_until(lambda: store.available, timeout=20)
        assert await eventually(lambda: store.get("kept")) is not None
        assert store.put("other", entry("b"), 600)
        await eventually(lambda: store.get("other"))
    finally:
        await store.close()


async def test_a_lost_stream_is_created_again(nats_server: NatsServer) -> None:
    store = await opened(nats_server.url)
    try:
        nc = await nats.connect(nats_server.url)
        try:
            await nc.jetstream().delete_stream(STREAM)
        finally:
            await nc.close()
        assert await store.get("any") is None  # no responders: a miss, and the stream is recreated
        await wait_until(lambda: store.available)
        assert store.put("again", entry("c"), 600)
        await eventually(lambda: store.get("again"))
    finally:
        await store.close()
