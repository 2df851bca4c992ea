"""SSE keep-alives while an upstream is silent, at one timer per stream.

A reasoning model may think for minutes before its first visible token; a
proxy or client between here and the user would time the stream out. The
stream's consumer calls ``touch`` for every event (a float write); one timer
per stream wakes every ``interval_s`` and, when nothing was written for that
long, writes the door's keep-alive (an SSE comment, or Anthropic's ``ping``).
A wait per event with a timeout (a task and a timer handle per event) cost
more than the rest of the edge's per-chunk work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from edge.bounded_writer import SlowReaderError


class Heartbeat:
    __slots__ = ("_beat", "_handle", "_interval_s", "_loop", "_writing", "last")

    def __init__(self, interval_s: float, beat: Callable[[], Awaitable[None]]) -> None:
        self._loop = asyncio.get_running_loop()
        self._interval_s = interval_s
        self._beat = beat
        self._writing: asyncio.Task[None] | None = None
        self.last = self._loop.time()
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self.last + interval_s, self._fire)

    def touch(self) -> None:
        """Something was written: the silence starts again now."""
        self.last = self._loop.time()

    def _fire(self) -> None:
        now = self._loop.time()
        if now - self.last >= self._interval_s and (self._writing is None or self._writing.done()):
            self.last = now
            self._writing = self._loop.create_task(self._write())
        self._handle = self._loop.call_at(self.last + self._interval_s, self._fire)

    async def _write(self) -> None:
        # A client that is not reading or has left is the stream's own
        # business: its next event write fails the same way and ends it.
        with contextlib.suppress(SlowReaderError, ConnectionResetError):
            await self._beat()

    async def close(self) -> None:
        """Stop; a keep-alive being written is finished first (never cut in half)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)
