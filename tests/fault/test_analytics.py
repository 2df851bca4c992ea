"""NATS-OUTAGE / NATS-CRASH for the analytics consumer: across a NATS
outage, a replayed spool, a consumer crash between commit and ack, and the
analytics process SIGKILLed mid-batch, the store holds every request sent
exactly once. Real nats-server, real `python -m analytics`."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest

from analytics.consumer import DURABLE, Consumer
from analytics.duckdb_store import DuckDBStore
from analytics.retention import DAY_MS
from analytics.store import row_from_event
from deploy.local.mesh import SERVICES
from deploy.local.probes import free_port, tcp_open
from deploy.local.process import Process
from switchyard.events import STREAM, SUBJECT_PREFIX, UsagePublisher, subject_for
from switchyard.v1 import usage_pb2 as upb
from tests.unit.analytics.events import make_events
from tests.unit.switchyard.test_events import NatsServer

ADMIN = {"x-switchyard-role": "admin", "x-switchyard-tenant": "ops"}
CONFIG = """
providers: {p: {type: openai, base_url: "http://127.0.0.1:1"}}
analytics: {store: duckdb, path: "%s"%s}
"""


class AnalyticsProcess:
    """``python -m analytics`` on a free TCP port (the test is its trusted caller)."""

    def __init__(self, folder: Path, nats_url: str, *, retention_days: int = 0, **settings: str) -> None:
        self.port = free_port()
        config = folder / "switchyard.yaml"
        config.write_text(CONFIG % (folder / "usage.duckdb", f", retention_days: {retention_days}"
                                    if retention_days else ""))
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SERVICES), "PYTHONUNBUFFERED": "1",
               "SWITCHYARD_CONFIG": str(config), "SWITCHYARD_NATS_URL": nats_url,
               "SWITCHYARD_ANALYTICS_ADDRESS": f"127.0.0.1:{self.port}", **settings}
        self.process = Process("analytics", [sys.executable, "-m", "analytics"], env, folder / "analytics.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/analytics"

    async def start(self) -> None:
        self.process.start()
        async with asyncio.timeout(20):
            while not tcp_open(self.port):
                assert self.process.alive(), self.process.log_path.read_text()
                await asyncio.sleep(0.02)

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/{path}", headers=ADMIN,
                                                                   params=params) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def stored(self) -> int:
        return (await self.get("status"))["stored_rows"]

    async def wait_stored(self, count: int) -> None:
        async with asyncio.timeout(60):
            while await self.stored() < count:
                await asyncio.sleep(0.05)


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sy-an-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def server() -> AsyncIterator[NatsServer]:
    nats_server = NatsServer()
    await nats_server.start()
    yield nats_server
    nats_server.remove()


async def drained(url: str) -> None:
    """Until the durable consumer has nothing pending or unacknowledged."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        async with asyncio.timeout(60):
            while True:
                info = await js.consumer_info(STREAM, DURABLE)
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    return
                await asyncio.sleep(0.1)
    finally:
        await nc.close()


async def publish(url: str, events: list[upb.UsageEvent], msg_id_suffix: str = "") -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=STREAM, subjects=[f"{SUBJECT_PREFIX}.>"])
        for start in range(0, len(events), 1000):
            acks = [await js.publish_async(subject_for(e), e.SerializeToString(),
                                           headers={"Nats-Msg-Id": e.request_id + msg_id_suffix})
                    for e in events[start:start + 1000]]
            await asyncio.gather(*acks)
    finally:
        await nc.close()


async def assert_exactly_once(analytics: AnalyticsProcess, events: list[upb.UsageEvent]) -> None:
    assert await analytics.stored() == len(events)
    summary = await analytics.get("summary", since="0", until="99999999999999")
    assert summary["totals"]["requests"] == len(events)
    ids, cursor = [], None
    while True:
        page = await analytics.get("requests", since="0", until="99999999999999", limit="1000",
                                   **({"cursor": cursor} if cursor else {}))
        ids += [row["request_id"] for row in page["data"]]
        if not (cursor := page["next_cursor"]):
            break
    assert sorted(ids) == sorted(e.request_id for e in events)  # each one, once


async def test_outage_and_replayed_spool(folder: Path, server: NatsServer) -> None:
    analytics = AnalyticsProcess(folder, server.url, SWITCHYARD_ANALYTICS_ACK_WAIT_S="2")
    await analytics.start()
    publisher = UsagePublisher(server.url, folder / "router.usage", publish_timeout_s=0.5, replay_interval_s=0.1)
    await publisher.start()
    before, during, after = (make_events(300, prefix=p, seed=i) for i, p in enumerate(("a", "b", "c")))
    try:
        for event in before:
            publisher.record(event)
        await analytics.wait_stored(300)

        server.stop()
        for event in during:
            publisher.record(event)
        async with asyncio.timeout(20):
            while publisher.spooled < len(during):
                await asyncio.sleep(0.05)
        assert await analytics.stored() == 300  # queries keep answering while NATS is down
        await server.start()
        for event in after:
            publisher.record(event)
        await analytics.wait_stored(900)
    finally:
        await publisher.close()
    # A spool replayed after JetStream's duplicate window: the stream takes
    # the copies (other message ids), the store must not.
    await publish(server.url, before + during, msg_id_suffix="-late")
    await drained(server.url)
    assert analytics.process.alive()
    await assert_exactly_once(analytics, before + during + after)
    analytics.process.stop(10)


async def test_consumer_sigkilled_mid_batch(folder: Path, server: NatsServer) -> None:
    events = make_events(12_000, prefix="k", span_ms=600_000)
    await publish(server.url, events)
    settings = {"SWITCHYARD_ANALYTICS_BATCH": "500", "SWITCHYARD_ANALYTICS_ACK_WAIT_S": "2"}
    analytics = AnalyticsProcess(folder, server.url, **settings)
    await analytics.start()
    async with asyncio.timeout(60):
        while not 0 < (stored := await analytics.stored()) < len(events) // 2:
            assert stored < len(events), "ingested everything before the kill"
            await asyncio.sleep(0.01)
    analytics.process.signal(signal.SIGKILL)
    await asyncio.to_thread(analytics.process.popen.wait, 10)

    await analytics.start()  # same store file, same durable consumer
    await analytics.wait_stored(len(events))
    await drained(server.url)
    await assert_exactly_once(analytics, events)
    analytics.process.stop(10)


class CrashAfterCommit:
    """A store whose first batch commits, then the consumer 'dies' before acking."""

    def __init__(self, store: DuckDBStore) -> None:
        self.store = store
        self.crashed = False

    def insert(self, rows: list) -> int:
        stored = self.store.insert(rows)
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("killed between commit and ack")
        return stored


async def test_commit_without_ack_is_not_counted_twice(folder: Path, server: NatsServer) -> None:
    events = make_events(200, prefix="c")
    await publish(server.url, events)
    store = DuckDBStore(str(folder / "usage.duckdb"))
    crashing = CrashAfterCommit(store)
    consumer = Consumer(server.url, crashing, batch=1000, ack_wait_s=1)  # type: ignore[arg-type]
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    try:
        async with asyncio.timeout(30):
            while consumer.received < 2 * len(events):  # everything, then everything again
                await asyncio.sleep(0.05)
        await drained(server.url)
    finally:
        stop.set()
        await running
    assert crashing.crashed and consumer.stored == 0  # the redelivered batch was already there
    assert store.count() == len(events)
    store.close()


async def test_retention_deletes_old_requests_and_stores_no_expired_ones(folder: Path, server: NatsServer) -> None:
    now = int(time.time() * 1000)
    old = make_events(30, prefix="old", seed=1, start_ms=now - 10 * DAY_MS, span_ms=3600_000)
    recent = make_events(30, prefix="new", seed=2, start_ms=now - 3600_000, span_ms=600_000)
    existing = DuckDBStore(str(folder / "usage.duckdb"))  # what an earlier deployment stored
    assert existing.insert([row_from_event(e) for e in old + recent]) == 60
    existing.close()
    analytics = AnalyticsProcess(folder, server.url, retention_days=7)
    await analytics.start()
    try:
        async with asyncio.timeout(30):  # the sweep at start-up
            while (status := await analytics.get("status"))["retention"]["deleted"] < 30:
                await asyncio.sleep(0.05)
        assert status["retention"]["days"] == 7 and await analytics.stored() == 30
        # Events arriving late from the stream (a replayed spool): those past the retention are not stored.
        late = make_events(10, prefix="late", seed=3, start_ms=now - 8 * DAY_MS, span_ms=3600_000)
        fresh = make_events(10, prefix="fresh", seed=4, start_ms=now - 60_000, span_ms=30_000)
        await publish(server.url, late + fresh)  # creates the stream the consumer waits for
        async with asyncio.timeout(30):
            # ``stored`` counts after the commit (``received`` before it): wait for both outcomes.
            while (consumed := (await analytics.get("status"))["consumer"])["stored"] + consumed["expired"] < 20:
                await asyncio.sleep(0.05)
        assert (consumed["expired"], consumed["stored"]) == (10, 10)
        await assert_exactly_once(analytics, recent + fresh)
    finally:
        analytics.process.stop(10)
