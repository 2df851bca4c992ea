"""The usage publisher against a real nats-server with JetStream on a free port."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import nats.js
import nats.js.errors
import pytest

from deploy.local.probes import bin_path, free_port, tcp_open
from switchyard.events import REPLAY_CHUNK_EVENTS, STREAM, Spool, UsagePublisher
from switchyard.v1 import usage_pb2 as upb


class NatsServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.store = Path(tempfile.mkdtemp(prefix="sy-nats-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.process = subprocess.Popen([bin_path("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(self.port),
                                         "-sd", str(self.store)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        async with asyncio.timeout(10):
            while not tcp_open(self.port):
                await asyncio.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.store, ignore_errors=True)


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer()
    yield server
    server.remove()


@pytest.fixture
def spool_path() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="sy-spool-"))
    yield folder / "router.usage"
    shutil.rmtree(folder, ignore_errors=True)


def event(request_id: str, tenant: str = "acme") -> upb.UsageEvent:
    return upb.UsageEvent(request_id=request_id, tenant=tenant, model="m", status="ok")


async def count(js: nats.js.JetStreamContext) -> int:
    try:
        return (await js.stream_info(STREAM)).state.messages
    except nats.js.errors.NotFoundError:
        return 0  # the publisher has not created the stream yet


async def stored(url: str, expected: int) -> list[tuple[str, str]]:
    """(Nats-Msg-Id, request_id) of every message in the stream, once
    ``expected`` are there (bounded wait)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        async with asyncio.timeout(15):
            while await count(js) < expected:
                await asyncio.sleep(0.05)
        sub = await js.pull_subscribe("switchyard.usage.>", durable=None)
        messages = await sub.fetch(expected + 10, timeout=1) if expected else []
        return [(m.headers["Nats-Msg-Id"], upb.UsageEvent.FromString(m.data).request_id) for m in messages]
    finally:
        await nc.close()


@pytest.fixture
async def publisher(nats_server: NatsServer, spool_path: Path) -> AsyncIterator[UsagePublisher]:
    pub = UsagePublisher(nats_server.url, spool_path, publish_timeout_s=0.5, replay_interval_s=0.1)
    yield pub
    await pub.close()


async def test_events_carry_request_id_as_msg_id(nats_server: NatsServer, publisher: UsagePublisher) -> None:
    await nats_server.start()
    await publisher.start()
    for i in range(5):
        publisher.record(event(f"req-{i}"))
    rows = await stored(nats_server.url, 5)
    assert sorted(rows) == [(f"req-{i}", f"req-{i}") for i in range(5)]


async def test_duplicate_request_id_is_stored_once(nats_server: NatsServer, publisher: UsagePublisher) -> None:
    await nats_server.start()
    await publisher.start()
    publisher.record(event("same"))
    publisher.record(event("same"))
    publisher.record(event("other"))
    rows = await stored(nats_server.url, 2)
    assert sorted(rows) == [("other", "other"), ("same", "same")]


async def test_outage_spools_then_replays_everything_once(nats_server: NatsServer, publisher: UsagePublisher,
                                                          spool_path: Path) -> None:
    await publisher.start()  # NATS is not running yet
    for i in range(10):
        publisher.record(event(f"down-{i}"))
    async with asyncio.timeout(10):
        while publisher.spooled < 10:
            await asyncio.sleep(0.02)
    assert len(Spool(spool_path).read()) == 10
    await nats_server.start()
    rows = await stored(nats_server.url, 10)
    assert sorted(r for r, _ in rows) == sorted(f"down-{i}" for i in range(10))
    async with asyncio.timeout(10):
        while spool_path.exists():
            await asyncio.sleep(0.02)


async def test_spool_left_by_a_dead_process_is_replayed(nats_server: NatsServer, spool_path: Path) -> None:
    Spool(spool_path).append([event("orphan-1").SerializeToString(), event("orphan-2").SerializeToString()])
    with open(spool_path, "ab") as torn:  # a write cut by the crash
        torn.write(b"\x00\x00\x01\x00partial")
    await nats_server.start()
    pub = UsagePublisher(nats_server.url, spool_path, replay_interval_s=0.1)
    await pub.start()
    try:
        rows = await stored(nats_server.url, 2)
        assert sorted(r for r, _ in rows) == ["orphan-1", "orphan-2"]
    finally:
        await pub.close()


async def test_an_existing_stream_is_used_as_it_is(nats_server: NatsServer, publisher: UsagePublisher) -> None:
    """Another configuration is an operator's choice: the publisher neither
    changes it (its NATS user may not) nor stops publishing."""
    await nats_server.start()
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().add_stream(name=STREAM, subjects=["switchyard.usage.>"], duplicate_window=30.0)
        await publisher.start()
        publisher.record(event("kept"))
        rows = await stored(nats_server.url, 1)
        assert rows == [("kept", "kept")]
        assert (await nc.jetstream().stream_info(STREAM)).config.duplicate_window == 30.0
    finally:
        await nc.close()


def test_spool_reads_in_chunks_and_drops_a_prefix(spool_path: Path) -> None:
    spool = Spool(spool_path)
    spool.append([event(f"e{i}").SerializeToString() for i in range(5)])
    first, offset = spool.read_chunk(0, 2)
    rest, end = spool.read_chunk(offset, 10)
    assert [upb.UsageEvent.FromString(p).request_id for p in first + rest] == [f"e{i}" for i in range(5)]
    assert end == spool_path.stat().st_size
    spool.drop_before(offset)
    assert [upb.UsageEvent.FromString(p).request_id for p in spool.read()] == ["e2", "e3", "e4"]


async def test_a_long_spool_is_replayed_in_chunks(nats_server: NatsServer, spool_path: Path) -> None:
    total = 2 * REPLAY_CHUNK_EVENTS + 500
    Spool(spool_path).append([event(f"long-{i}").SerializeToString() for i in range(total)])
    await nats_server.start()
    pub = UsagePublisher(nats_server.url, spool_path, replay_interval_s=0.1)
    await pub.start()
    try:
        async with asyncio.timeout(20):
            while spool_path.exists():
                await asyncio.sleep(0.02)
        assert pub.published == total
        nc = await nats.connect(nats_server.url)
        try:
            assert await count(nc.jetstream()) == total
        finally:
            await nc.close()
    finally:
        await pub.close()
