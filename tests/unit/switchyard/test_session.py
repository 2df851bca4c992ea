"""Multiplexed sessions over a real gRPC server on a Unix socket."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from switchyard.session import SessionPool, SessionServicer, TransportError


class Backend:
    """Handler: request b"n:<count>:<delay_ms>" yields count events; records
    deadlines and cancellations."""

    def __init__(self) -> None:
        self.deadlines: list[float | None] = []
        self.cancelled = asyncio.Event()
        self.started = asyncio.Event()

    async def handle(self, request: bytes, deadline: float | None) -> AsyncIterator[bytes]:
        self.deadlines.append(deadline)
        kind, count, delay = request.decode().split(":")
        if kind == "boom":
            raise RuntimeError("handler bug")
        self.started.set()
        try:
            for i in range(int(count)):
                if int(delay):
                    await asyncio.sleep(int(delay) / 1000)
                yield f"{kind}-{i}".encode()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@pytest.fixture
async def served() -> AsyncIterator[tuple[Backend, SessionServicer, grpc.aio.Server, str]]:
    backend = Backend()
    servicer = SessionServicer(backend.handle, on_error=lambda exc: b"error:" + str(exc).encode())
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", {"S": servicer.method_handler()}),))
    path = Path(tempfile.mkdtemp()) / "s.sock"
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    yield backend, servicer, server, f"unix:{path}"
    await server.stop(0)


async def collect(pool: SessionPool, request: bytes, timeout_s: float | None = None) -> list[bytes]:
    return [e async for e in pool.stream(request, timeout_s)]


async def test_concurrent_calls_keep_their_own_ordered_events(served) -> None:
    _, _, _, target = served
    async with grpc.aio.insecure_channel(target) as channel:
        pool = SessionPool(channel, "/t.S/S", size=1)
        results = await asyncio.gather(*(collect(pool, f"c{i}:5:1".encode()) for i in range(20)))
        for i, events in enumerate(results):
            assert events == [f"c{i}-{j}".encode() for j in range(5)]
        assert len(pool.sessions) == 1  # all twenty calls shared one stream
        pool.close()


async def test_timeout_becomes_server_deadline(served) -> None:
    backend, _, _, target = served
    async with grpc.aio.insecure_channel(target) as channel:
        pool = SessionPool(channel, "/t.S/S")
        before = time.monotonic()
        await collect(pool, b"a:1:0", timeout_s=5)
        await collect(pool, b"b:1:0")
        assert backend.deadlines[0] == pytest.approx(before + 5, abs=0.5)
        assert backend.deadlines[1] is None
        pool.close()


async def test_consumer_leaving_cancels_the_server_task(served) -> None:
    backend, _, _, target = served
    async with grpc.aio.insecure_channel(target) as channel:
        pool = SessionPool(channel, "/t.S/S")
        events = pool.stream(b"slow:1000:20")
        assert await anext(events) == b"slow-0"
        await events.aclose()
        await asyncio.wait_for(backend.cancelled.wait(), 5)
        # The session survives for the next call.
        assert await collect(pool, b"x:2:0") == [b"x-0", b"x-1"]
        pool.close()


async def test_handler_exception_is_an_event_not_a_dead_session(served) -> None:
    _, _, _, target = served
    async with grpc.aio.insecure_channel(target) as channel:
        pool = SessionPool(channel, "/t.S/S", size=1)
        assert await collect(pool, b"boom:0:0") == [b"error:handler bug"]
        assert await collect(pool, b"ok:1:0") == [b"ok-0"]
        pool.close()


async def test_server_going_away_fails_pending_calls(served) -> None:
    _, _, server, target = served
    async with grpc.aio.insecure_channel(target) as channel:
        pool = SessionPool(channel, "/t.S/S")
        events = pool.stream(b"long:1000:50")
        assert await anext(events) == b"long-0"
        await server.stop(0)
        with pytest.raises(TransportError):
            async for _ in events:
                pass


async def test_drain_moves_new_calls_to_a_new_session(served) -> None:
    _, servicer, _, target = served
    async with grpc.aio.insecure_channel(target) as channel:
        pool = SessionPool(channel, "/t.S/S", size=1)
        events = pool.stream(b"inflight:3:30")
        assert await anext(events) == b"inflight-0"
        first = pool.sessions[0]
        servicer.drain()
        rest = [e async for e in events]  # the in-flight call still completes
        assert rest == [b"inflight-1", b"inflight-2"]
        assert not first.accepting
        assert await collect(pool, b"next:1:0") == [b"next-0"]
        assert pool.sessions[0] is not first
        pool.close()


async def test_session_opened_after_drain_is_told_to_drain(served) -> None:
    """A session that reaches a draining server (its proxy had not yet seen
    the health check flip) still runs its call, then closes: nothing holds
    the server's shutdown open for its whole grace period."""
    _, servicer, server, target = served
    servicer.drain()
    async with grpc.aio.insecure_channel(target) as channel:
        pool = SessionPool(channel, "/t.S/S", size=1)
        assert await collect(pool, b"late:2:0") == [b"late-0", b"late-1"]
        [late] = pool.sessions
        assert not late.accepting and late.dead is not None  # closed once its call was over
        # With no session left open the server stops at once, not after its 30 s grace.
        await asyncio.wait_for(server.stop(30), 10)


async def test_idle_session_is_retired(served) -> None:
    _, _, _, target = served
    async with grpc.aio.insecure_channel(target) as channel:
        pool = SessionPool(channel, "/t.S/S", size=1, max_idle_s=0.0)
        await collect(pool, b"a:1:0")
        first = pool.sessions[0]
        await collect(pool, b"b:1:0")
        assert first.dead is not None and pool.sessions[0] is not first
        pool.close()


async def test_deadline_ends_the_call_on_both_sides(served) -> None:
    backend, _, _, target = served
    async with grpc.aio.insecure_channel(target) as channel:
        pool = SessionPool(channel, "/t.S/S")
        started = time.monotonic()
        with pytest.raises(TransportError) as info:
            await collect(pool, b"slow:100:100", timeout_s=0.3)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2
        await asyncio.wait_for(backend.cancelled.wait(), 5)  # the server's work stopped too
        pool.close()
