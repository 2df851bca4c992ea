"""One timer for all the waits of a stream.

A stream read event by event needs a timeout on every wait (the next chunk
must come within N seconds). ``asyncio.timeout`` around each wait schedules
and cancels a timer handle per event, plus a context manager's worth of
bookkeeping: on the provider worker that was the largest single cost per
relayed chunk. ``StreamTimer`` keeps one handle for the whole stream: ``arm``
before a wait only records when the wait must end (a float), ``disarm``
after it clears that, and the handle, when it fires early because the end
moved, re-arms itself for the new end. A wait that passes its end is
cancelled and the ``async with`` block raises ``TimeoutError``, with the
same cancellation semantics as ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class StreamTimer:
    __slots__ = ("_cancelling", "_due", "_expired", "_handle", "_loop", "_task")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due: float | None = None
        self._expired = False
        self._cancelling = 0

    @property
    def expired(self) -> bool:
        return self._expired

    def arm(self, seconds: float) -> None:
        """The next wait must end within ``seconds``."""
        due = self._loop.time() + seconds
        self._due = due
        handle = self._handle
        if handle is None:
            self._handle = self._loop.call_at(due, self._fire)
        elif handle.when() > due:  # the end moved earlier (rare: a deadline took over)
            handle.cancel()
            self._handle = self._loop.call_at(due, self._fire)

    def disarm(self) -> None:
        """The wait is over; nothing is timed until the next ``arm``."""
        self._due = None

    def _fire(self) -> None:
        self._handle = None
        due = self._due
        if due is None or self._expired:
            return
        if self._loop.time() < due:  # waits since the handle was set moved the end later
            self._handle = self._loop.call_at(due, self._fire)
            return
        self._expired = True
        assert self._task is not None
        self._task.cancel()

    async def __aenter__(self) -> StreamTimer:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("StreamTimer must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._due = None
        if self._expired and self._task is not None and self._task.uncancel() <= self._cancelling \
                and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc
