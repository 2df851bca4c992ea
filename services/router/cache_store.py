"""Where cached answers live: the JetStream key-value bucket SWITCHYARD_CACHE,
shared by every router replica, plus what each replica knows of it locally.

- The bucket is a stream (``KV_SWITCHYARD_CACHE``) with one message per key,
  a size bound (``max_bytes``) beyond which the oldest entries are evicted
  (discard old, unlike a default KV bucket, which refuses new writes), a
  maximum age, and per-message TTLs (``Nats-TTL``, nats-server 2.11+): an
  entry disappears when its own TTL runs out. The expiry is also inside the
  entry and checked on every read, so a hit is never stale.
- Each replica keeps a ``KeyIndex`` of the bucket and the answers it
  recently wrote or fetched in ``LocalEntries`` (``cache_index.py``). The
  index is built when the replica connects, from the bucket's heads (a
  headers-only ordered consumer: expiry and write id ride in headers,
  stopped once caught up), and kept current by announcements: each batch of
  writes is followed by one core NATS message on ``switchyard.cache.index``
  listing them (20 bytes each), which the other replicas apply (the
  connection has no echo, so a writer never reads its own). A lookup of a
  key the complete index does not hold is a miss with no I/O; a key whose
  current write is held locally is a hit with no I/O; otherwise one direct
  get (``$JS.API.DIRECT.GET``) bounded by ``lookup_timeout_s``. An answer
  written by one replica reaches the others within milliseconds (a request
  in between is a miss, answered by the upstream); an announcement lost to
  a disconnect is made up by rebuilding the index after the reconnect.
- The request path never waits for NATS otherwise: until connected, while
  disconnected and for a second after a read timed out, every lookup is an
  immediate miss; writes are queued (bounded) and published by a background
  task without waiting for acknowledgements, and dropped while NATS is
  unreachable. A store outage is a miss, never an error. After a reconnect
  the index is rebuilt from the bucket.
- Values are named ``<tenant token>.<key>``: the token is the first 64
  bits of the tenant's SHA-256, so one tenant's entries are purged with one
  subject filter (``purge``). An entry larger than one NATS message is
  split: the head (``<name>``) carries the metadata and the number of
  continuation values, written first under ``<name>.<part_id>.<n>`` (a
  rewrite uses a new part id, so readers never mix two writes; the index
  follows heads only).
- A purge (the admin API's ``/admin/cache/purge``, one tenant or all)
  removes the values from the bucket, then tells every replica on
  ``switchyard.cache.purged``: each drops its local copies (and queued
  writes) of that tenant, and after a purge of everything its index too. A
  key a replica's index still holds after a tenant's purge costs one fetch,
  which finds nothing: a miss. An answer being written by another replica
  in the same few milliseconds can outlive the purge.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import secrets
import struct
import time
from collections import deque

import nats
import orjson
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js.api import DeliverPolicy, DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from router.cache_index import ABSENT, UNKNOWN, KeyIndex, LocalEntries, slot_of
from switchyard import nats_client
from switchyard.v1 import cache_pb2 as cpb

log = logging.getLogger(__name__)

BUCKET = "SWITCHYARD_CACHE"
STREAM = f"KV_{BUCKET}"
SUBJECT = f"$KV.{BUCKET}."
DIRECT_GET = f"$JS.API.DIRECT.GET.{STREAM}.{SUBJECT}"
INDEX_SUBJECT = "switchyard.cache.index"   # write announcements (core NATS, not stored)
PURGED_SUBJECT = "switchyard.cache.purged"  # purge announcements: a tenant token, or ALL
ALL = b"*"
PURGE_API = f"$JS.API.STREAM.PURGE.{STREAM}"
_RECORD = struct.Struct(">QQI")            # key's first 64 bits, expires_ms, write id
PART_BYTES = 512 * 1024            # one NATS message (the server's default max_payload is 1 MiB)
MAX_QUEUED_WRITES = 1024
MAX_QUEUED_BYTES = 64 * 1024 * 1024
MAX_INDEX_KEYS = 250_000           # ~110 bytes each; beyond it unknown keys are looked up in NATS
PAUSE_AFTER_TIMEOUT_S = 1.0
# After a write goes out, the next waits this long: writes arriving meanwhile leave in one socket write
# (a socket write to NATS costs ~100-200 us of CPU here, the largest part of a miss).
WRITE_INTERVAL_S = 0.005
SWEEP_INTERVAL_S = 60.0
EXPIRES, WRITE_ID = "Sy-Expires", "Sy-Write"


class CachePurgeError(Exception):
    """The bucket could not be purged (NATS unreachable or the request refused)."""


@functools.lru_cache(maxsize=4096)  # per lookup and write: a tenant's token is hashed once
def tenant_token(tenant: str) -> str:
    return hashlib.sha256(tenant.encode()).hexdigest()[:16]


def value_name(tenant: str, key: str) -> str:
    """The bucket key of ``key``'s head, under its tenant."""
    return f"{tenant_token(tenant)}.{key}"


class CacheStore:
    def __init__(self, url: str, *, max_bytes: int, max_age_s: int, lookup_timeout_s: float,
                 local_bytes: int = 64 * 1024 * 1024) -> None:
        self.url = url
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.lookup_timeout_s = lookup_timeout_s
        self.index = KeyIndex(MAX_INDEX_KEYS)
        self.local = LocalEntries(local_bytes)
        self._nc: nats.NATS | None = None
        self._ready = False
        self._paused_until = 0.0
        self._queue: deque[tuple[str, bytes, list[bytes], str, dict[str, str], bytes]] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_sub: object | None = None
        self._generation = 0
        self._closed = False
        self.dropped = 0   # writes given up (queue full or NATS unreachable)
        self.written = 0
        self.fetched = 0   # lookups that needed a NATS round trip

    # ----------------------------------------------------------- lifecycle --

    async def start(self) -> None:
        """Connect in the background: requests never wait for NATS."""
        self._tasks = [asyncio.create_task(self._connect()), asyncio.create_task(self._write_loop()),
                       asyncio.create_task(self._sweep_loop())]

    async def close(self) -> None:
        self._closed = True  # no watch is restarted from now on
        if self._watch_task is not None:
            self._tasks.append(self._watch_task)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await nats_client.close(self._nc)

    @property
    def available(self) -> bool:
        nc = self._nc
        return self._ready and nc is not None and nc.is_connected and time.monotonic() >= self._paused_until

    async def _connect(self) -> None:
        self._nc = await nats_client.connect(self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                      connect_timeout=2, name="switchyard-router-cache", error_cb=_quiet,
                                      disconnected_cb=self._disconnected, reconnected_cb=self._reconnected,
                                      no_echo=True)
        await self._nc.subscribe(INDEX_SUBJECT, cb=self._on_announcement)  # before the index is built: no gap
        await self._nc.subscribe(PURGED_SUBJECT, cb=self._on_purged)
        await self._ensure_stream()

    async def _disconnected(self) -> None:
        self.index.complete = False  # writes elsewhere go unseen until the index is rebuilt

    async def _reconnected(self) -> None:
        self._restart()

    def _restart(self) -> None:
        """Open the bucket and rebuild the index again (after a reconnect, or a lost stream)."""
        self._ready = False
        if self._closed:
            return
        if self._watch_task is not None and not self._watch_task.done():
            self._watch_task.cancel()
        self._watch_task = asyncio.create_task(self._ensure_stream())

    async def _ensure_stream(self) -> None:
        """Create the bucket's stream (or give it this replica's limits), then
        build the index from it."""
        assert self._nc is not None
        js = self._nc.jetstream()
        config = StreamConfig(name=STREAM, subjects=[f"{SUBJECT}>"], allow_direct=True, allow_rollup_hdrs=True,
                              allow_msg_ttl=True, deny_delete=True, discard=DiscardPolicy.OLD,
                              max_msgs_per_subject=1, max_bytes=self.max_bytes, max_age=self.max_age_s,
                              max_msg_size=PART_BYTES + 64 * 1024, storage=StorageType.FILE,
                              num_replicas=nats_client.stream_replicas())
        while True:
            try:
                try:
                    await js.add_stream(config)
                except BadRequestError:  # it exists with other limits (another replica's config): ours win
                    await js.update_stream(config)
                self._ready = True
                await self._watch()
                log.info("cache: bucket %s ready (at most %d bytes)", BUCKET, self.max_bytes)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # JetStream not ready yet after a server start
                log.warning("cache: cannot open bucket %s (%s); retrying", BUCKET, type(exc).__name__)
                await asyncio.sleep(1)

    async def _on_announcement(self, msg: Msg) -> None:
        index, data = self.index, msg.data
        if len(data) % _RECORD.size:
            return
        for slot, expires_ms, write_id in _RECORD.iter_unpack(data):
            index.note_slot(slot, expires_ms, write_id)

    async def _watch(self) -> None:
        """Read the bucket's heads into a fresh index; it is complete once
        every head present when the read began has been seen, and then the
        announcements keep it current."""
        assert self._nc is not None
        old, self._watch_sub = self._watch_sub, None
        if old is not None:
            await _unsubscribe(old)
        self._generation += 1
        generation = self._generation
        index = self.index = KeyIndex(MAX_INDEX_KEYS)
        seen = 0
        target: int | None = None

        async def on_head(msg: Msg) -> None:
            nonlocal seen
            if generation != self._generation:
                return
            headers = msg.headers or {}
            with contextlib.suppress(KeyError, ValueError):
                index.note(msg.subject.rpartition(".")[2], int(headers[EXPIRES]), int(headers[WRITE_ID]))
            seen += 1
            if target is not None and seen >= target and not index.complete:
                caught_up()

        def caught_up() -> None:
            index.complete = True
            asyncio.get_running_loop().create_task(_unsubscribe(sub))  # announcements from now on

        sub = await self._nc.jetstream().subscribe(
            f"{SUBJECT}*.*", stream=STREAM, cb=on_head, ordered_consumer=True, headers_only=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
        self._watch_sub = sub
        info = await sub.consumer_info()
        target = info.delivered.consumer_seq + info.num_pending
        if seen >= target and not index.complete:
            caught_up()

    async def _sweep_loop(self) -> None:
        """Forget expired keys now and then, a chunk at a time."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            index = self.index
            slots = index.slots()
            for start in range(0, len(slots), 10_000):
                index.drop_expired(slots[start:start + 10_000], int(time.time() * 1000))
                await asyncio.sleep(0)

    # ---------------------------------------------------------------- read --

    async def get(self, key: str, tenant: str) -> cpb.CacheEntry | None:
        """The entry stored under ``key`` for ``tenant`` with its events, or None (absent,
        incomplete, unreadable, or the store unavailable). Callers must not
        modify it: it may be this replica's local copy."""
        if not self.available:
            return None
        state = self.index.state(key, int(time.time() * 1000))
        if state == ABSENT:
            return None
        if state != UNKNOWN and (local := self.local.get(key, state)) is not None:
            return local
        assert self._nc is not None
        self.fetched += 1
        name = value_name(tenant, key)
        try:
            data = await self._get_raw(name)
            if data is None:
                # Not stored yet (an announcement can overtake the stream's write) or evicted by the size
                # bound: a miss, whose answer is stored again. The index keeps the key meanwhile.
                return None
            entry = cpb.CacheEntry.FromString(data)
            if entry.parts:
                parts = await asyncio.gather(*(self._get_raw(f"{name}.{entry.part_id}.{n}")
                                               for n in range(entry.parts)))
                if any(part is None for part in parts):
                    return None  # evicted before its head: the next write replaces it
                entry.MergeFromString(b"".join(parts))  # type: ignore[arg-type]
            self.local.put(key, entry, len(data) + entry.parts_bytes)
            return entry
        except NoRespondersError:  # the stream is gone (a NATS server with a fresh store): create it again
            self._restart()
            return None
        except (TimeoutError, NatsError) as exc:
            self._paused_until = time.monotonic() + PAUSE_AFTER_TIMEOUT_S
            log.warning("cache: lookup failed (%s); answering without the cache for %.0fs", type(exc).__name__,
                        PAUSE_AFTER_TIMEOUT_S)
            return None
        except Exception as exc:  # a malformed entry (DecodeError): a miss
            log.warning("cache: unreadable entry (%s)", type(exc).__name__)
            return None

    async def _get_raw(self, name: str) -> bytes | None:
        assert self._nc is not None
        msg = await self._nc.request(DIRECT_GET + name, b"", timeout=self.lookup_timeout_s)
        if msg.headers and msg.headers.get("Status"):  # 404: no such key (or expired)
            return None
        return msg.data

    # --------------------------------------------------------------- write --

    def put(self, key: str, entry: cpb.CacheEntry, ttl_s: int) -> bool:
        """Queue ``entry`` (events included; it is kept as this replica's
        local copy, so callers must not modify it afterwards) for writing;
        False when it was dropped (store unavailable or the queue full)."""
        if not self._ready or self._nc is None or not self._nc.is_connected:
            self.dropped += 1
            return False
        entry.write_id = secrets.randbits(32)
        data = entry.SerializeToString()
        head, parts, part_id = data, [], ""
        if len(data) > PART_BYTES:
            body = cpb.CacheEntry(events=entry.events).SerializeToString()
            part_id = secrets.token_hex(4)
            parts = [body[i:i + PART_BYTES] for i in range(0, len(body), PART_BYTES)]
            meta = cpb.CacheEntry()
            meta.CopyFrom(entry)
            del meta.events[:]
            meta.part_id, meta.parts, meta.parts_bytes = part_id, len(parts), len(body)
            head = meta.SerializeToString()
        size = len(head) + sum(len(part) for part in parts)
        if len(self._queue) >= MAX_QUEUED_WRITES or self._queued_bytes + size > MAX_QUEUED_BYTES:
            self.dropped += 1
            return False
        headers = {"Nats-TTL": str(ttl_s), EXPIRES: str(entry.expires_ms), WRITE_ID: str(entry.write_id)}
        record = _RECORD.pack(slot_of(key), entry.expires_ms, entry.write_id)
        self._queue.append((value_name(entry.tenant, key), head, parts, part_id, headers, record))
        self._queued_bytes += size
        self._wake.set()
        self.index.note(key, entry.expires_ms, entry.write_id)
        self.local.put(key, entry, len(data))
        return True

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                continue
            records = []
            while self._queue:
                name, head, parts, part_id, headers, record = self._queue.popleft()
                self._queued_bytes -= len(head) + sum(len(part) for part in parts)
                try:
                    await self._write(name, head, parts, part_id, headers)
                    records.append(record)
                    self.written += 1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # NATS went away meanwhile: the answer is simply not cached
                    self.dropped += 1
                    log.debug("cache: write dropped (%s)", type(exc).__name__)
            if records and self._nc is not None:
                with contextlib.suppress(Exception):  # a lost announcement costs the others a miss, no more
                    await self._nc.publish(INDEX_SUBJECT, b"".join(records))
            await asyncio.sleep(WRITE_INTERVAL_S)  # writes arriving meanwhile leave in one socket write

    async def _write(self, name: str, head: bytes, parts: list[bytes], part_id: str, headers: dict[str, str]) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise ConnectionError("NATS unavailable")
        ttl = {"Nats-TTL": headers["Nats-TTL"]}
        for n, part in enumerate(parts):  # continuation values first: a reader never sees a head without them
            await nc.publish(f"{SUBJECT}{name}.{part_id}.{n}", part, headers=ttl)
        await nc.publish(SUBJECT + name, head, headers=headers)

    # --------------------------------------------------------------- purge --

    async def purge(self, tenant: str | None, timeout_s: float = 10.0) -> int:
        """Remove ``tenant``'s entries (every entry when None) from the bucket
        and from every replica's memory; how many stored values went (an
        answer over ``PART_BYTES`` is several). CachePurgeError when NATS
        cannot do it."""
        nc = self._nc
        if nc is None or not nc.is_connected or not self._ready:
            raise CachePurgeError("the cache store (NATS) is not reachable")
        token = tenant_token(tenant) if tenant is not None else None
        request = {"filter": f"{SUBJECT}{token}.>"} if token is not None else {}
        try:
            reply = orjson.loads((await nc.request(PURGE_API, orjson.dumps(request), timeout=timeout_s)).data)
        except (TimeoutError, NatsError, orjson.JSONDecodeError) as exc:
            raise CachePurgeError(f"the purge request failed ({type(exc).__name__})") from None
        if not isinstance(reply, dict) or not reply.get("success"):
            error = reply.get("error", {}) if isinstance(reply, dict) else {}
            raise CachePurgeError(f"NATS refused the purge: {error.get('description', 'no reason given')}")
        announcement = token.encode() if token is not None else ALL
        self._forget(announcement)
        with contextlib.suppress(Exception):  # a replica that misses it serves its local copies until they age out
            await nc.publish(PURGED_SUBJECT, announcement)
        return int(reply.get("purged", 0))

    async def _on_purged(self, msg: Msg) -> None:
        self._forget(msg.data)

    def _forget(self, announcement: bytes) -> None:
        """Drop what this replica holds of a purged tenant (or of everything)."""
        if announcement == ALL:
            self.local.clear()
            self.index.clear()
            self._queue.clear()
        else:
            token = announcement.decode(errors="replace")
            self.local.drop_if(lambda entry: tenant_token(entry.tenant) == token)
            self._queue = deque(queued for queued in self._queue if not queued[0].startswith(token + "."))
        self._queued_bytes = sum(len(queued[1]) + sum(map(len, queued[2])) for queued in self._queue)


async def _unsubscribe(sub: object) -> None:
    with contextlib.suppress(Exception):
        await sub.unsubscribe()  # type: ignore[attr-defined]


async def _quiet(exc: Exception) -> None:
    log.debug("cache: NATS client error: %s", exc)
