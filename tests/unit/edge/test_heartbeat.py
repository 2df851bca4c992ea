"""Heartbeat: a keep-alive after each silence of interval_s, none while events flow."""

from __future__ import annotations

import asyncio

from edge.bounded_writer import SlowReaderError
from edge.heartbeat import Heartbeat


async def test_silence_gets_keep_alives() -> None:
    written: list[float] = []
    two = asyncio.Event()

    async def beat() -> None:
        # When the heartbeat decided to write (its ``last``), not when this task got to run: a busy
        # loop may start one keep-alive's task later than the next one's, which says nothing of the
        # silences the heartbeat waited for.
        written.append(heartbeat.last)
        if len(written) == 2:
            two.set()

    heartbeat = Heartbeat(0.05, beat)
    start = heartbeat.last
    await asyncio.wait_for(two.wait(), 10)
    await heartbeat.close()
    assert written[0] - start >= 0.05 and written[1] - written[0] >= 0.05  # never before a full silence


async def test_no_keep_alive_while_events_flow() -> None:
    written = []

    async def beat() -> None:
        written.append(1)

    heartbeat = Heartbeat(0.2, beat)
    for _ in range(30):  # 0.6 s of events, never 0.2 s apart
        await asyncio.sleep(0.02)
        heartbeat.touch()
    await heartbeat.close()
    assert written == []


async def test_close_finishes_the_keep_alive_being_written() -> None:
    release = asyncio.Event()
    began = asyncio.Event()
    finished = []

    async def beat() -> None:
        began.set()
        await release.wait()
        finished.append(True)

    heartbeat = Heartbeat(0.01, beat)
    await asyncio.wait_for(began.wait(), 10)
    closing = asyncio.create_task(heartbeat.close())
    await asyncio.sleep(0)
    assert not closing.done()  # waits for the write in progress
    release.set()
    await asyncio.wait_for(closing, 10)
    assert finished == [True]


async def test_a_client_not_reading_does_not_break_the_timer() -> None:
    calls = []
    two = asyncio.Event()

    async def beat() -> None:
        calls.append(1)
        if len(calls) == 2:
            two.set()
        raise SlowReaderError

    heartbeat = Heartbeat(0.02, beat)
    await asyncio.wait_for(two.wait(), 10)  # it kept going after the first failure
    await heartbeat.close()
