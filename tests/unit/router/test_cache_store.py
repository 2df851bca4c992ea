"""The cache store against a real nats-server with JetStream: entries shared
through the bucket, each replica's index and local copies, chunks, per-entry
TTLs, the size bound, and an outage that is a miss, never an error or a wait."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
from collections.abc import AsyncIterator, Callable

import nats
import pytest

from router.cache_store import (
    DIRECT_GET,
    PART_BYTES,
    STREAM,
    CachePurgeError,
    CacheStore,
    tenant_token,
    value_name,
)
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
    await wait_until(lambda: store.available and store.index.complete)
    return store


async def in_bucket(url: str, key: str, tenant: str = "acme") -> bool:
    """Whether NATS itself holds ``key`` (not a replica's memory of it)."""
    nc = await nats.connect(url)
    try:
        msg = await nc.request(DIRECT_GET + value_name(tenant, key), b"", timeout=2)
        return not (msg.headers and msg.headers.get("Status"))
    finally:
        await nc.close()


def k(name: str) -> str:
    """A key as the cache makes them: a hex digest."""
    return hashlib.sha256(name.encode()).hexdigest()


def entry(text: str, *, tenant: str = "acme") -> cpb.CacheEntry:
    now = int(time.time() * 1000)
    chunk = pb.ChatEvent(chunk=pb.Chunk(choices=[pb.ChoiceDelta(index=0, content=text, finish_reason="stop")]))
    return cpb.CacheEntry(tenant=tenant, created_ms=now, expires_ms=now + 60_000, cost_usd=0.5,
                          started=pb.Started(provider="openai", model="gpt-4o-mini"),
                          events=[chunk.SerializeToString(), pb.ChatEvent(usage=pb.Usage()).SerializeToString()])


async def test_an_entry_written_by_one_replica_is_read_by_another(nats_server: NatsServer) -> None:
    a, b = await opened(nats_server.url), await opened(nats_server.url)
    key = "ab" * 32
    try:
        assert await b.get(key, "acme") is None and b.fetched == 0  # the complete index knows it is absent: no I/O
        written = entry("hello")
        assert a.put(key, written, 60)
        assert await a.get(key, "acme") is written and a.fetched == 0  # the writer's own copy
        found = await eventually(lambda: b.get(key, "acme"))  # b's index learns it from the bucket
        assert found == written and b.fetched == 1
        assert await b.get(key, "acme") is found and b.fetched == 1  # then b's local copy
        # A newer write elsewhere (a no-cache refresh) makes b's copy stale.
        newer = entry("newer")
        assert a.put(key, newer, 60)
        assert await eventually(lambda: _with_text(b, key, "newer")) == newer and b.fetched == 2
        # A replica that starts later builds its index from the bucket.
        c = await opened(nats_server.url)
        try:
            assert await c.get(key, "acme") == newer and len(c.index) == 1
        finally:
            await c.close()
    finally:
        await a.close()
        await b.close()


async def test_large_entries_are_chunked(nats_server: NatsServer) -> None:
    writer, reader = await opened(nats_server.url), await opened(nats_server.url)
    try:
        big = entry("x" * (3 * PART_BYTES))
        big.events.extend(pb.ChatEvent(chunk=pb.Chunk(choices=[pb.ChoiceDelta(content=f"{i}" * 1000)]))
                          .SerializeToString() for i in range(200))
        expected = list(big.events)
        assert writer.put(k("big"), big, 60)
        found = await eventually(lambda: reader.get(k("big"), "acme"))
        assert found.parts >= 4 and list(found.events) == expected  # type: ignore[attr-defined]
        # A rewrite uses new continuation values: a reader gets one write or the other, never a mix.
        assert writer.put(k("big"), entry("small"), 60)
        small = await eventually(lambda: _with_text(reader, k("big"), "small"))
        assert small.parts == 0  # type: ignore[attr-defined]
    finally:
        await writer.close()
        await reader.close()


async def _with_text(store: CacheStore, key: str, text: str) -> cpb.CacheEntry | None:
    found = await store.get(key, "acme")
    if found is None or pb.ChatEvent.FromString(found.events[0]).chunk.choices[0].content != text:
        return None
    return found


async def test_entries_expire_by_their_own_ttl(nats_server: NatsServer) -> None:
    store = await opened(nats_server.url)
    try:
        short = entry("a")
        short.expires_ms = int(time.time() * 1000) + 1000
        assert store.put(k("short"), short, 1)
        assert store.put(k("long"), entry("b"), 600)
        await wait_until_async(lambda: in_bucket(nats_server.url, k("short")), True, 5)
        assert await store.get(k("short"), "acme") is short
        began = time.monotonic()
        await wait_until_async(lambda: in_bucket(nats_server.url, k("short")), False, 10)  # NATS drops it by its TTL
        assert time.monotonic() - began < 5
        assert await store.get(k("short"), "acme") is None and await store.get(k("long"), "acme") is not None
        assert len(store.index) == 1  # the replica forgot it too
    finally:
        await store.close()


async def wait_until_async(check: Callable[[], object], value: bool, timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while await check() != value:  # type: ignore[misc]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_the_bucket_is_bounded_and_evicts_the_oldest(nats_server: NatsServer) -> None:
    store = await opened(nats_server.url, max_bytes=1024 * 1024)
    reader = await opened(nats_server.url, max_bytes=1024 * 1024)  # the same config as the writer
    try:
        for i in range(40):  # 40 x 100 KiB into a 1 MiB bucket
            assert store.put(k(f"e{i}"), entry(str(i) * 100 * 1024), 600)
            await wait_until(lambda: not store._queue)
        await eventually(lambda: reader.get(k("e39"), "acme"))
        nc = await nats.connect(nats_server.url)
        try:
            info = await nc.jetstream().stream_info(STREAM)
        finally:
            await nc.close()
        assert info.state.bytes <= 1024 * 1024 and info.state.messages < 12
        assert not await in_bucket(nats_server.url, k("e0"))
        fetched = reader.fetched
        assert await reader.get(k("e0"), "acme") is None  # its index still holds it: the fetch finds nothing
        assert reader.fetched == fetched + 1
        assert store.local.size <= store.local.max_bytes
    finally:
        await store.close()
        await reader.close()


async def test_an_outage_is_an_immediate_miss_and_recovers(nats_server: NatsServer) -> None:
    store = await opened(nats_server.url)
    try:
        assert store.put(k("kept"), entry("a"), 600)
        await wait_until_async(lambda: in_bucket(nats_server.url, k("kept")), True, 5)
        nats_server.stop()
        await wait_until(lambda: not store.available)
        lookup = store.get(k("kept"), "acme")
        with pytest.raises(StopIteration) as answered:
            lookup.send(None)  # it answers without waiting on anything: no I/O, no timer
        assert answered.value.value is None
        dropped = store.dropped
        assert not store.put(k("other"), entry("b"), 600) and store.dropped == dropped + 1
        await nats_server.start()  # same port and storage directory
        await wait_until(lambda: store.available and store.index.complete, timeout=20)
        assert await store.get(k("kept"), "acme") is not None  # the index, rebuilt from the bucket, has it
        assert store.put(k("other"), entry("b"), 600)
        await eventually(lambda: store.get(k("other"), "acme"))
    finally:
        await store.close()


async def test_a_nats_server_with_a_fresh_store(nats_server: NatsServer) -> None:
    store = await opened(nats_server.url)
    try:
        assert store.put(k("before"), entry("a"), 600)
        await wait_until_async(lambda: in_bucket(nats_server.url, k("before")), True, 5)
        nats_server.stop()
        shutil.rmtree(nats_server.store)  # the server comes back with nothing
        await nats_server.start()
        await wait_until(lambda: store.available and store.index.complete, timeout=20)
        assert await store.get(k("before"), "acme") is None and len(store.index) == 0  # the index was rebuilt
        assert store.put(k("again"), entry("c"), 600)  # the bucket was created again
        await wait_until_async(lambda: in_bucket(nats_server.url, k("again")), True, 5)
    finally:
        await store.close()


async def test_a_purge_removes_one_tenants_entries_everywhere(nats_server: NatsServer) -> None:
    a, b = await opened(nats_server.url), await opened(nats_server.url)
    try:
        big = entry("y" * (2 * PART_BYTES))  # continuation values go with their head
        for name, tenant in (("one", "acme"), ("big", "acme"), ("two", "globex")):
            assert a.put(k(name), big if name == "big" else entry(name, tenant=tenant), 600)
        for name, tenant in (("one", "acme"), ("big", "acme"), ("two", "globex")):
            await eventually(lambda name=name, tenant=tenant: b.get(k(name), tenant))  # b holds local copies
        assert await a.purge("acme") >= 4  # one + big's head and its (at least 2) continuation values
        assert not await in_bucket(nats_server.url, k("one")) and not await in_bucket(nats_server.url, k("big"))
        assert await in_bucket(nats_server.url, k("two"), "globex")
        assert await a.get(k("one"), "acme") is None  # the purging replica forgot at once
        await wait_until_async(lambda: b.get(k("one"), "acme"), None, 5)  # the other on the announcement
        assert await b.get(k("big"), "acme") is None
        assert await b.get(k("two"), "globex") is not None and await a.get(k("two"), "globex") is not None
        # Entries written after the purge are cached again.
        assert a.put(k("one"), entry("again"), 600)
        await eventually(lambda: b.get(k("one"), "acme"))
    finally:
        await a.close()
        await b.close()


async def test_a_purge_of_everything_empties_every_replica(nats_server: NatsServer) -> None:
    a, b = await opened(nats_server.url), await opened(nats_server.url)
    try:
        for name, tenant in (("one", "acme"), ("two", "globex")):
            assert a.put(k(name), entry(name, tenant=tenant), 600)
            await eventually(lambda name=name, tenant=tenant: b.get(k(name), tenant))
        assert await b.purge(None) == 2
        await wait_until(lambda: len(a.index) == 0 and len(a.local) == 0)
        assert len(b.index) == 0 and len(b.local) == 0
        fetched = a.fetched
        assert await a.get(k("one"), "acme") is None and await a.get(k("two"), "globex") is None
        assert a.fetched == fetched  # the (complete, empty) index answers: no I/O
    finally:
        await a.close()
        await b.close()


async def test_a_purge_drops_the_tenants_queued_writes(nats_server: NatsServer) -> None:
    store = await opened(nats_server.url)
    try:
        assert store.put(k("queued"), entry("a"), 600) and store.put(k("other"), entry("b", tenant="globex"), 600)
        store._forget(tenant_token("acme").encode())  # what a purge announcement does, before the writes leave
        assert [name for name, *_ in store._queue] == [value_name("globex", k("other"))]
        assert store._queued_bytes == sum(len(q[1]) for q in store._queue)
        await wait_until_async(lambda: in_bucket(nats_server.url, k("other"), "globex"), True, 5)
        assert not await in_bucket(nats_server.url, k("queued"))
    finally:
        await store.close()


async def test_a_purge_without_nats_is_refused(nats_server: NatsServer) -> None:
    store = await opened(nats_server.url)
    try:
        nats_server.stop()
        await wait_until(lambda: not store.available)
        with pytest.raises(CachePurgeError):
            await store.purge("acme")
    finally:
        await store.close()
