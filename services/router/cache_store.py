"""Where cached answers live: the JetStream key-value bucket SWITCHYARD_CACHE,
shared by every router replica.

- The bucket is a stream (``KV_SWITCHYARD_CACHE``) with one message per key,
  a size bound (``max_bytes``) beyond which the oldest entries are evicted
  (discard old, unlike a default KV bucket, which refuses new writes), a
  maximum age, and per-message TTLs (``Nats-TTL``, nats-server 2.11+): an
  entry disappears when its own TTL runs out. The expiry is also inside the
  entry and checked on every read, so a hit is never stale.
- A read is one direct get (``$JS.API.DIRECT.GET``) bounded by
  ``lookup_timeout_s``. The request path never waits for NATS otherwise:
  until connected, while disconnected and for a second after a read timed
  out, every lookup is an immediate miss; writes are queued (bounded) and
  published by a background task without waiting for acknowledgements, and
  dropped while NATS is unreachable. A store outage is a miss, never an
  error.
- An entry larger than one NATS message is split: the head (``<key>``)
  carries the metadata and the number of continuation values, written first
  under ``<key>.<part_id>.<n>`` (a rewrite uses a new part id, so readers
  never mix two writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque

import nats
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from switchyard.v1 import cache_pb2 as cpb

log = logging.getLogger(__name__)

BUCKET = "SWITCHYARD_CACHE"
STREAM = f"KV_{BUCKET}"
SUBJECT = f"$KV.{BUCKET}."
DIRECT_GET = f"$JS.API.DIRECT.GET.{STREAM}.{SUBJECT}"
PART_BYTES = 512 * 1024            # one NATS message (the server's default max_payload is 1 MiB)
MAX_QUEUED_WRITES = 1024
MAX_QUEUED_BYTES = 64 * 1024 * 1024
PAUSE_AFTER_TIMEOUT_S = 1.0


class CacheStore:
    def __init__(self, url: str, *, max_bytes: int, max_age_s: int, lookup_timeout_s: float) -> None:
        self.url = url
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.lookup_timeout_s = lookup_timeout_s
        self._nc: nats.NATS | None = None
        self._ready = False
        self._paused_until = 0.0
        self._queue: deque[tuple[str, bytes, list[bytes], str, int]] = deque()
        self._ensuring: asyncio.Task[None] | None = None
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0   # writes given up (queue full or NATS unreachable)
        self.written = 0

    # ----------------------------------------------------------- lifecycle --

    async def start(self) -> None:
        """Connect in the background: requests never wait for NATS."""
        self._tasks = [asyncio.create_task(self._connect()), asyncio.create_task(self._write_loop())]

    async def close(self) -> None:
        if self._ensuring is not None:
            self._tasks.append(self._ensuring)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    @property
    def available(self) -> bool:
        nc = self._nc
        return self._ready and nc is not None and nc.is_connected and time.monotonic() >= self._paused_until

    async def _connect(self) -> None:
        self._nc = await nats.connect(self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                      connect_timeout=2, name="switchyard-router-cache", error_cb=_quiet)
        await self._ensure_stream()

    async def _ensure_stream(self) -> None:
        """Create the bucket's stream, or give it this replica's limits."""
        assert self._nc is not None
        js = self._nc.jetstream()
        config = StreamConfig(name=STREAM, subjects=[f"{SUBJECT}>"], allow_direct=True, allow_rollup_hdrs=True,
                              allow_msg_ttl=True, deny_delete=True, discard=DiscardPolicy.OLD,
                              max_msgs_per_subject=1, max_bytes=self.max_bytes, max_age=self.max_age_s,
                              max_msg_size=PART_BYTES + 64 * 1024, storage=StorageType.FILE)
        while True:
            try:
                try:
                    await js.add_stream(config)
                except BadRequestError:  # it exists with other limits (another replica's config): ours win
                    await js.update_stream(config)
                self._ready = True
                log.info("cache: bucket %s ready (at most %d bytes)", BUCKET, self.max_bytes)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # JetStream not ready yet after a server start
                log.warning("cache: cannot open bucket %s (%s); retrying", BUCKET, type(exc).__name__)
                await asyncio.sleep(1)

    # ---------------------------------------------------------------- read --

    async def get(self, key: str) -> cpb.CacheEntry | None:
        """The entry stored under ``key`` with its events, or None (absent,
        incomplete, unreadable, or the store unavailable)."""
        if not self.available:
            return None
        assert self._nc is not None
        try:
            head = await self._get(key)
            if head is None or not head.parts:
                return head
            parts = await asyncio.gather(*(self._get_raw(f"{key}.{head.part_id}.{n}") for n in range(head.parts)))
            if any(part is None for part in parts):
                return None  # evicted before its head: the next write replaces it
            head.MergeFromString(b"".join(parts))  # type: ignore[arg-type]
            return head
        except NoRespondersError:  # the stream is gone (a NATS server with a fresh store): create it again
            self._ready = False
            if self._ensuring is None or self._ensuring.done():
                self._ensuring = asyncio.create_task(self._ensure_stream())
            return None
        except (TimeoutError, NatsError) as exc:
            self._paused_until = time.monotonic() + PAUSE_AFTER_TIMEOUT_S
            log.warning("cache: lookup failed (%s); answering without the cache for %.0fs", type(exc).__name__,
                        PAUSE_AFTER_TIMEOUT_S)
            return None
        except Exception as exc:  # a malformed entry (DecodeError): a miss
            log.warning("cache: unreadable entry (%s)", type(exc).__name__)
            return None

    async def _get(self, key: str) -> cpb.CacheEntry | None:
        data = await self._get_raw(key)
        return None if data is None else cpb.CacheEntry.FromString(data)

    async def _get_raw(self, key: str) -> bytes | None:
        assert self._nc is not None
        msg = await self._nc.request(DIRECT_GET + key, b"", timeout=self.lookup_timeout_s)
        if msg.headers and msg.headers.get("Status"):  # 404: no such key (or expired)
            return None
        return msg.data

    # --------------------------------------------------------------- write --

    def put(self, key: str, entry: cpb.CacheEntry, ttl_s: int) -> bool:
        """Queue ``entry`` (events included) for writing; False when it was
        dropped (store unavailable or the write queue full)."""
        if not self._ready or self._nc is None or not self._nc.is_connected:
            self.dropped += 1
            return False
        head = entry.SerializeToString()
        parts: list[bytes] = []
        part_id = ""
        if len(head) > PART_BYTES:
            body = cpb.CacheEntry(events=entry.events).SerializeToString()
            del entry.events[:]
            entry.part_id = part_id = secrets.token_hex(4)
            parts = [body[i:i + PART_BYTES] for i in range(0, len(body), PART_BYTES)]
            entry.parts, entry.parts_bytes = len(parts), len(body)
            head = entry.SerializeToString()
        size = len(head) + sum(len(part) for part in parts)
        if len(self._queue) >= MAX_QUEUED_WRITES or self._queued_bytes + size > MAX_QUEUED_BYTES:
            self.dropped += 1
            return False
        self._queue.append((key, head, parts, part_id, ttl_s))
        self._queued_bytes += size
        self._wake.set()
        return True

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                key, head, parts, part_id, ttl_s = self._queue.popleft()
                self._queued_bytes -= len(head) + sum(len(part) for part in parts)
                try:
                    await self._write(key, head, parts, part_id, ttl_s)
                    self.written += 1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # NATS went away meanwhile: the answer is simply not cached
                    self.dropped += 1
                    log.debug("cache: write dropped (%s)", type(exc).__name__)

    async def _write(self, key: str, head: bytes, parts: list[bytes], part_id: str, ttl_s: int) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise ConnectionError("NATS unavailable")
        headers = {"Nats-TTL": str(ttl_s)}
        if parts:
            for n, part in enumerate(parts):  # continuation values first: a reader never sees a head without them
                await nc.publish(f"{SUBJECT}{key}.{part_id}.{n}", part, headers=headers)
        await nc.publish(SUBJECT + key, head, headers=headers)


async def _quiet(exc: Exception) -> None:
    log.debug("cache: NATS client error: %s", exc)

