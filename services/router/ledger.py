"""Shared counters in a NATS JetStream key-value bucket, changed only by
compare-and-set on the entry's revision, so that router replicas agree
exactly (rate-limit windows, budget reservations, concurrency leases).

Each entry is a small JSON object. A change is a pure function
``op(state, now) -> (new_state, result)`` (``new_state is state`` when
nothing changes). Ops on one entry from one process are coalesced: whatever
queued while a write was in flight is decided together and written in one
compare-and-set, so a hot key costs one NATS round trip per batch rather
than per request. The last state written or read is cached: an op decided on
it needs no read first; a conflict (another replica wrote) re-reads and
decides again. An op that changes nothing (a refusal) is decided again on a
fresh read unless the cached state is younger than ``fresh_s`` (0 by
default: no refusal comes from a stale cache; a flood of refusals still
costs one read per batch, not per request).

NATS unreachable, or no answer within ``timeout_s``: ``StoreUnavailableError``
(the caller applies its fail-open or fail-closed policy); the entry's cache is
dropped, since a write that timed out may still have landed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import nats
import orjson
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from switchyard import nats_client

log = logging.getLogger(__name__)

State = dict[str, Any] | None
Op = Callable[[State, float], tuple[State, Any]]

CAS_ATTEMPTS = 16
MAX_CACHED = 100_000      # entries whose last state is kept (least recently used dropped first)
MAX_BATCH = 1024          # ops decided in one compare-and-set


class StoreUnavailableError(Exception):
    """The shared store did not answer (NATS unreachable, slow, or contended)."""


class _Entry:
    __slots__ = ("pending", "read_at", "revision", "running", "state")

    def __init__(self) -> None:
        self.state: State = None
        self.revision = -1  # -1: not known
        self.read_at = 0.0
        self.pending: list[tuple[Op, asyncio.Future[Any]]] = []
        self.running = False


class Ledger:
    def __init__(self, kv: Callable[[], KeyValue | None], connected: Callable[[], bool] = lambda: True, *,
                 timeout_s: float = 0.5, fresh_s: float = 0.0, clock: Callable[[], float] = time.time) -> None:
        self._kv = kv
        self._connected = connected
        self.timeout_s = timeout_s
        self.fresh_s = fresh_s
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.writes = 0      # compare-and-sets sent (for benchmarks)
        self.conflicts = 0

    async def apply(self, key: str, op: Op) -> Any:
        """The result of ``op`` applied atomically to the entry ``key``."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            if len(self._entries) > MAX_CACHED:
                self._evict()
        else:
            self._entries.move_to_end(key)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry.pending.append((op, future))
        if not entry.running:
            entry.running = True
            asyncio.create_task(self._drain(key, entry))  # noqa: RUF006 - it resolves every queued future
        return await future

    def _evict(self) -> None:
        for key, entry in self._entries.items():
            if not entry.running:
                del self._entries[key]
                return

    async def _drain(self, key: str, entry: _Entry) -> None:
        try:
            while entry.pending:
                batch, entry.pending = entry.pending[:MAX_BATCH], entry.pending[MAX_BATCH:]
                try:
                    results = await self._commit(key, entry, [op for op, _ in batch])
                except Exception as exc:
                    entry.revision = -1
                    error = exc if isinstance(exc, StoreUnavailableError) else StoreUnavailableError(
                        f"{type(exc).__name__}: {exc}")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            entry.running = False

    async def _commit(self, key: str, entry: _Entry, ops: list[Op]) -> list[Any]:
        kv = self._kv()
        if kv is None or not self._connected():
            raise StoreUnavailableError("NATS is not connected")
        for _ in range(CAS_ATTEMPTS):
            if entry.revision < 0:
                await self._read(kv, key, entry)
            now = self.clock()
            state = entry.state
            results = []
            for op in ops:
                state, result = op(state, now)
                results.append(result)
            if state is entry.state:  # nothing to write (every op refused, or a no-op)
                if time.monotonic() - entry.read_at <= self.fresh_s:
                    return results
                entry.revision = -1
                await self._read(kv, key, entry)
                state = entry.state
                results = []
                for op in ops:
                    state, result = op(state, now)
                    results.append(result)
                if state is entry.state:
                    return results
            try:
                revision = await asyncio.wait_for(kv.update(key, orjson.dumps(state), last=entry.revision),
                                                  self.timeout_s)
            except KeyWrongLastSequenceError:
                self.conflicts += 1
                entry.revision = -1
                continue
            except TimeoutError:
                raise StoreUnavailableError("NATS did not confirm the write in time") from None
            self.writes += 1
            entry.state, entry.revision, entry.read_at = state, revision, time.monotonic()
            return results
        raise StoreUnavailableError(f"{key}: still contended after {CAS_ATTEMPTS} compare-and-sets")

    async def _read(self, kv: KeyValue, key: str, entry: _Entry) -> None:
        try:
            found = await asyncio.wait_for(kv.get(key), self.timeout_s)
        except KeyNotFoundError as exc:
            # Never written, aged out or deleted: a deleted entry's tombstone is the revision to update.
            tomb = getattr(exc, "entry", None)
            entry.state, entry.revision = None, tomb.revision if tomb is not None else 0
        except TimeoutError:
            raise StoreUnavailableError("NATS did not answer a read in time") from None
        else:
            entry.state = orjson.loads(found.value) if found.value else None
            entry.revision = found.revision
        entry.read_at = time.monotonic()

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)


class Buckets:
    """One NATS connection for the router's governance buckets, opened in the
    background (nats-py reconnects forever); ``kv(name)`` is None until open."""

    def __init__(self, url: str, specs: dict[str, dict[str, Any]]) -> None:
        self.url = url
        self.specs = specs
        self._nc: nats.NATS | None = None
        self._kvs: dict[str, KeyValue] = {}
        self._task: asyncio.Task[None] | None = None

    def kv(self, name: str) -> KeyValue | None:
        return self._kvs.get(name)

    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def start(self, wait_s: float = 3.0) -> None:
        self._task = asyncio.create_task(self._open())
        await asyncio.wait([self._task], timeout=wait_s)

    async def _open(self) -> None:
        self._nc = await nats_client.connect(self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                      connect_timeout=2, name="switchyard-router-governance", error_cb=_quiet)
        js = self._nc.jetstream()
        for name, spec in self.specs.items():
            self._kvs[name] = await nats_client.open_bucket(js, name, history=1, **spec)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await nats_client.close(self._nc)


async def _quiet(exc: Exception) -> None:
    log.debug("governance: NATS client error: %s", exc)


class MemoryKV:
    """The two key-value calls the ledger makes, in process memory, with the
    same compare-and-set semantics: for a router without NATS (limits then
    hold per process) and for tests."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, int]] = {}
        self._sequence = 0

    async def get(self, key: str) -> Any:
        if key not in self._data:
            raise KeyNotFoundError
        value, revision = self._data[key]
        return KeyValue.Entry(bucket="memory", key=key, value=value, revision=revision, delta=None, created=None,
                              operation=None)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        current = self._data.get(key, (b"", 0))[1]
        if (last or 0) != current:
            raise KeyWrongLastSequenceError
        self._sequence += 1
        self._data[key] = (value, self._sequence)
        return self._sequence
