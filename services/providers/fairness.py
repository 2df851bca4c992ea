"""Fair admission to one provider's upstream connection pool across API keys.

Every key shares a provider's ``max_connections``; without a gate one key's
flood of slow streams holds them all and everyone else queues behind it.
Here each key may hold at most ``per_key`` connections at once. A request
beyond that, or while the pool is full, waits in its key's line; when a
connection frees, the waiting key that holds the fewest goes first, so a key
with little in flight is served ahead of a flooding one. A key's line is
bounded: beyond ``max_waiting`` the request is refused at once
(``KeyBusyError``, a 429 with retry-after) so the router can go elsewhere.
Waiting is also bounded by the attempt's time-to-first-token timeout.

State is per worker process; with several replicas each applies it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator


class KeyBusyError(Exception):
    """The key already holds its share of the pool and its line is full."""


class KeyGate:
    """Connection slots of one provider, shared fairly by keys."""

    def __init__(self, total: int, per_key: int, max_waiting: int) -> None:
        self.total = total
        self.per_key = max(1, min(per_key, total))
        self.max_waiting = max_waiting
        self._used = 0
        self._held: dict[str, int] = {}
        self._lines: dict[str, deque[tuple[int, asyncio.Future[None]]]] = {}
        self._order = itertools.count()

    def held(self, key: str) -> int:
        return self._held.get(key, 0)

    @property
    def used(self) -> int:
        return self._used

    @contextlib.asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        """Hold one connection slot for ``key`` for the body of the block."""
        await self.acquire(key)
        try:
            yield
        finally:
            self.release(key)

    async def acquire(self, key: str) -> None:
        if key not in self._lines and self._used < self.total and self.held(key) < self.per_key:
            self._take(key)
            return
        line = self._lines.get(key)
        if line is not None and len(line) >= self.max_waiting:
            raise KeyBusyError(f"this key already has {self.held(key)} requests in flight and "
                               f"{len(line)} waiting on this provider")
        if line is None:
            line = self._lines[key] = deque()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (next(self._order), waiter)
        line.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(key)  # granted as we were cancelled: pass it on
            else:
                line.remove(entry)
                if not line:
                    del self._lines[key]
            raise

    def release(self, key: str) -> None:
        held = self._held[key] - 1
        if held:
            self._held[key] = held
        else:
            del self._held[key]
        self._used -= 1
        self._grant()

    def _take(self, key: str) -> None:
        self._held[key] = self.held(key) + 1
        self._used += 1

    def _grant(self) -> None:
        """Hand free slots to waiting keys, fewest held first, then oldest."""
        while self._used < self.total and self._lines:
            best: tuple[int, int, str] | None = None
            for key, line in self._lines.items():
                held = self.held(key)
                if held < self.per_key and (best is None or (held, line[0][0]) < best[:2]):
                    best = (held, line[0][0], key)
            if best is None:
                return
            key = best[2]
            line = self._lines[key]
            _, waiter = line.popleft()
            if not line:
                del self._lines[key]
            self._take(key)
            waiter.set_result(None)
