"""StreamTimer: one timer for every wait of a stream, with asyncio.timeout's semantics."""

from __future__ import annotations

import asyncio

import pytest

from switchyard.stream_timer import StreamTimer


async def test_a_wait_past_its_end_raises_timeout() -> None:
    timer = StreamTimer()
    with pytest.raises(TimeoutError):
        async with timer:
            timer.arm(0.05)
            await asyncio.Event().wait()  # never set: only the timer can end this
    assert timer.expired


async def test_each_wait_gets_its_own_window() -> None:
    """Fifteen waits of 0.1 s under a 1 s limit: 1.5 s in all, yet none times out."""
    timer = StreamTimer()
    async with timer:
        for _ in range(15):
            timer.arm(1.0)
            await asyncio.sleep(0.1)
            timer.disarm()
    assert not timer.expired


async def test_time_between_waits_is_not_counted() -> None:
    timer = StreamTimer()
    async with timer:
        timer.arm(0.05)
        await asyncio.sleep(0)
        timer.disarm()
        await asyncio.sleep(0.2)  # the handle fires here, disarmed: nothing is cancelled
    assert not timer.expired


async def test_an_end_moved_earlier_takes_effect() -> None:
    timer = StreamTimer()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(10), timer:  # the outer bound only keeps a broken timer from hanging the test
            timer.arm(60)
            timer.arm(0.05)
            await asyncio.Event().wait()
    assert timer.expired


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    started = asyncio.Event()

    async def waiting() -> None:
        async with StreamTimer() as timer:
            timer.arm(60)
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(waiting())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_an_outer_timeout_is_not_taken_for_its_own() -> None:
    timer = StreamTimer()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05), timer:
            timer.arm(60)
            await asyncio.Event().wait()
    assert not timer.expired  # the caller can tell whose limit it was
