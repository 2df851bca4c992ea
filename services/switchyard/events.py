"""Usage events to NATS JetStream, never lost and never counted twice.

Each event is published with ``Nats-Msg-Id`` = its request id, so JetStream
drops a replayed duplicate inside its window (and the consumer, keyed by
request id, drops any later one). While NATS is unreachable, events go to an
append-only spool file on local disk (written and fsynced off the event
loop) and are replayed in order once the connection is back. The request
path never waits for NATS: ``record()`` only queues.

When the spool cannot be written either (a full disk), events are held in a
bounded memory queue, the ``switchyard.usage`` readiness condition turns
degraded and an error is logged (at most every ``ALARM_INTERVAL_S``); the
publisher retries the spool and publishes the held events as soon as NATS or
the disk allows. Only beyond ``max_held`` events are new ones dropped, and
counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import struct
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import nats
from google.protobuf.message import DecodeError
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError

from switchyard import nats_client, readiness
from switchyard.v1 import usage_pb2 as upb

log = logging.getLogger(__name__)

STREAM = "SWITCHYARD_USAGE"
SUBJECT_PREFIX = "switchyard.usage"
CONDITION = "switchyard.usage"  # the readiness condition (a gRPC health service name)
MAX_HELD_EVENTS = 20_000  # ~6 MB of typical events kept in memory while the spool is unwritable
ALARM_INTERVAL_S = 10.0
REPLAY_CHUNK_EVENTS = 1000  # the spool is replayed in chunks: memory stays bounded after a long outage
MAX_EVENT_BYTES = 1 << 20  # a longer length prefix is a corrupt spool, not an event
_LENGTH = struct.Struct(">I")


def subject_for(event: upb.UsageEvent) -> str:
    tenant = "".join(c if c.isalnum() or c in "-_" else "_" for c in event.tenant) or "default"
    return f"{SUBJECT_PREFIX}.{tenant}"


class Spool:
    """Length-prefixed serialized events in one append-only file. A failed
    append leaves the file as it was (no torn record before later ones)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, payloads: list[bytes]) -> None:
        data = memoryview(b"".join(_LENGTH.pack(len(payload)) + payload for payload in payloads))
        with open(self.path, "ab", buffering=0) as spool:
            start = os.fstat(spool.fileno()).st_size
            try:
                while data:
                    data = data[spool.write(data):]
                os.fsync(spool.fileno())
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(spool.fileno(), start)
                raise

    def read(self) -> list[bytes]:
        return self.read_chunk()[0]

    def read_chunk(self, offset: int = 0, max_events: int | None = None) -> tuple[list[bytes], int]:
        """Up to ``max_events`` payloads from ``offset``, and the offset after them."""
        out: list[bytes] = []
        try:
            spool = open(self.path, "rb")
        except FileNotFoundError:
            return out, offset
        with spool:
            spool.seek(offset)
            while max_events is None or len(out) < max_events:
                head = spool.read(_LENGTH.size)
                if len(head) < _LENGTH.size:
                    break
                (size,) = _LENGTH.unpack(head)
                payload = spool.read(size) if size <= MAX_EVENT_BYTES else b""
                if len(payload) < size:
                    break  # a torn last write: the event was never acknowledged to anyone
                out.append(payload)
                offset += _LENGTH.size + size
        return out, offset

    def drop_before(self, offset: int) -> None:
        """Atomically remove the first ``offset`` bytes (the old file stays if this fails)."""
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            with open(self.path, "rb") as source, open(partial, "wb") as target:
                source.seek(offset)
                shutil.copyfileobj(source, target, 1 << 20)
                target.flush()
                os.fsync(target.fileno())
            os.replace(partial, self.path)
        finally:
            partial.unlink(missing_ok=True)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def probe(self) -> None:
        """Raise OSError unless a small write reaches the disk beside the spool."""
        probe = Spool(self.path.with_name(self.path.name + ".probe"))
        try:
            probe.append([bytes(4096)])
        finally:
            probe.clear()


class UsagePublisher:
    def __init__(self, url: str, spool_path: Path, *, publish_timeout_s: float = 2.0,
                 replay_interval_s: float = 1.0, max_held: int = MAX_HELD_EVENTS,
                 observe_lag: Callable[[float], None] | None = None) -> None:
        self.url = url
        self.observe_lag = observe_lag  # seconds from each event's timestamp to its ack
        self.spool = Spool(spool_path)
        self.publish_timeout_s = publish_timeout_s
        self.replay_interval_s = replay_interval_s
        self.max_held = max_held
        # Events spooled by an earlier process (it died while NATS was down) are replayed too.
        self._spool_pending = spool_path.exists()
        self._queue: asyncio.Queue[upb.UsageEvent | None] = asyncio.Queue(maxsize=max_held)
        self._held: list[upb.UsageEvent] = []  # neither published nor spooled: the spool cannot be written
        self._next_write_try = 0.0
        self._last_alarm = -ALARM_INTERVAL_S
        self._headers: dict[str, dict[str, str]] = {}
        self._nc: nats.NATS | None = None
        self._task: asyncio.Task[None] | None = None
        self._connector: asyncio.Task[None] | None = None
        self._js: JetStreamContext | None = None
        self._closing = False
        self.condition = readiness.condition(CONDITION)
        self.condition.set(False)  # one publisher per process; a new one starts healthy
        # Counters (read by the metrics endpoint).
        self.published = 0
        self.spooled = 0
        self.write_errors = 0
        self.dropped = 0

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def degraded(self) -> bool:
        return self.condition.degraded

    def record(self, event: upb.UsageEvent, headers: Mapping[str, str] | None = None) -> None:
        """Queue an event; ``headers`` (trace context) ride along in NATS
        headers when it is published live (a spooled replay carries only the
        event)."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._drop([event], "the publisher's queue is full")
            return
        if headers:
            self._headers[event.request_id] = dict(headers)

    async def start(self) -> None:
        # Connecting never blocks publishing: until NATS answers, events spool.
        self._connector = asyncio.create_task(self._connect())
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Flush what is queued (to NATS or the spool), then disconnect."""
        self._closing = True
        with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes the loop by itself
            self._queue.put_nowait(None)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._held:
            log.error("usage: %d events could be neither published nor spooled before exit; they are lost",
                      len(self._held))
        if self._connector is not None and not self._connector.done():
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
        await nats_client.close(self._nc)

    async def _connect(self) -> None:
        """Connect (retrying forever: nats-py's own loop with unlimited
        attempts) and make sure the stream exists; then nats-py reconnects by
        itself after any later outage."""

        async def disconnected() -> None:
            if not self._closing:
                log.warning("usage: NATS connection lost; spooling")

        async def error(exc: Exception) -> None:
            text = str(exc).lower()
            if "permission" in text or "authorization" in text:  # a credentials problem, not an outage
                log.error("usage: NATS refused %s: %s", nats_client.redacted(self.url), exc)
            else:
                log.debug("usage: NATS client error: %s", exc)

        nc = await nats_client.connect(self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                       allow_reconnect=True, connect_timeout=2, disconnected_cb=disconnected,
                                       error_cb=error, name="switchyard-usage")
        config = StreamConfig(name=STREAM, subjects=[f"{SUBJECT_PREFIX}.>"], duplicate_window=120.0,
                              num_replicas=nats_client.stream_replicas())
        js = nc.jetstream()
        while True:
            try:
                await js.add_stream(config)
                break
            except BadRequestError as exc:
                # It exists with another configuration: changing a stream's
                # limits is an operator's job (the router's NATS user may not).
                log.warning("usage: stream %s exists with another configuration (%s); publishing to it as it is",
                            STREAM, exc.description)
                break
            except Exception as exc:  # JetStream not ready yet after a server start
                log.warning("usage: cannot create stream %s (%s); retrying", STREAM, type(exc).__name__)
                await asyncio.sleep(1)
        self._js = js  # one context: it owns the subscription that receives publish acks
        self._nc = nc
        log.info("usage: publishing to NATS stream %s", STREAM)

    async def _run(self) -> None:
        while True:
            batch, closing = await self._next_batch()
            try:
                await self._handle(batch)
            except Exception:  # a bug must not end metering: keep the events and go on
                log.exception("usage: publisher error; holding %d events", len(batch))
                self._hold(batch)
            if closing:
                return

    async def _next_batch(self) -> tuple[list[upb.UsageEvent], bool]:
        """Whatever is queued (waiting for the first event, or for the next
        retry while something is spooled, held or degraded)."""
        retrying = self._spool_pending or self._held or self.degraded
        try:
            item = await asyncio.wait_for(self._queue.get(), self.replay_interval_s if retrying else None)
        except TimeoutError:
            return [], self._closing
        batch: list[upb.UsageEvent] = []
        while True:
            if item is not None:
                batch.append(item)
            if self._queue.empty():
                return batch, self._closing
            item = self._queue.get_nowait()

    async def _handle(self, batch: list[upb.UsageEvent]) -> None:
        if not await self._ready():
            await self._spool_or_hold(batch)
            return
        if self._spool_pending:
            await self._replay_spool()
        if self._spool_pending:  # still down after all: keep the order
            await self._spool_or_hold(batch)
            return
        events, self._held = [*self._held, *batch], []
        failed = await self._publish_batch(events) if events else []
        if failed:
            await self._spool_or_hold(failed)
        elif self.degraded and time.monotonic() >= self._next_write_try:
            await self._probe_spool()  # nothing at risk now; is the disk back?

    async def _ready(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def _publish_batch(self, batch: list[upb.UsageEvent]) -> list[upb.UsageEvent]:
        """Publish without waiting per event (one ack future each); return the
        events whose ack did not come."""
        js = self._js
        assert js is not None
        futures: list[asyncio.Future[object] | None] = []
        for event in batch:
            try:
                headers = {**self._headers.pop(event.request_id, {}), "Nats-Msg-Id": event.request_id}
                futures.append(await js.publish_async(subject_for(event), event.SerializeToString(),
                                                      headers=headers))
            except Exception:  # the connection dropped mid-batch
                futures.append(None)
        pending = [f for f in futures if f is not None]
        if pending:
            await asyncio.wait(pending, timeout=self.publish_timeout_s)
        failed = [event for event, future in zip(batch, futures, strict=True)
                  if future is None or not future.done() or future.cancelled() or future.exception() is not None]
        for future in pending:
            if not future.done():
                future.cancel()
        if failed:
            log.warning("usage: %d of %d events not acknowledged; spooling", len(failed), len(batch))
        self.published += len(batch) - len(failed)
        if self.observe_lag is not None:
            now_ms = time.time() * 1000
            for event, future in zip(batch, futures, strict=True):
                if future is not None and future.done() and not future.cancelled() and future.exception() is None:
                    self.observe_lag(max(now_ms - event.timestamp_ms, 0) / 1000)
        return failed

    async def _spool_or_hold(self, events: list[upb.UsageEvent]) -> None:
        """Append the held events and ``events`` to the spool, in order; keep
        them in memory if the disk refuses (retrying once per interval)."""
        events, self._held = [*self._held, *events], []
        if not events:
            if self.degraded and time.monotonic() >= self._next_write_try:
                await self._probe_spool()
            return
        if self.degraded and time.monotonic() < self._next_write_try:
            self._hold(events)
            return
        try:
            await asyncio.to_thread(self.spool.append, [e.SerializeToString() for e in events])
        except OSError as exc:
            self._hold(events)
            self._write_failed(exc)
            return
        for event in events:
            self._headers.pop(event.request_id, None)
        self.spooled += len(events)
        self._spool_pending = True
        self._write_recovered()

    async def _probe_spool(self) -> None:
        try:
            await asyncio.to_thread(self.spool.probe)
        except OSError as exc:
            self._write_failed(exc)
            return
        self._write_recovered()

    def _write_failed(self, exc: OSError) -> None:
        self.write_errors += 1
        self._next_write_try = time.monotonic() + self.replay_interval_s
        self.condition.set(True, f"usage spool not writable: {exc.strerror or exc}")
        self._alarm("usage: cannot write the spool %s (%s); holding %d events in memory (at most %d), "
                    "%d dropped so far", self.spool.path, exc.strerror or exc, len(self._held), self.max_held,
                    self.dropped)

    def _write_recovered(self) -> None:
        if self.degraded:
            self.condition.set(False)
            log.warning("usage: the spool %s is writable again", self.spool.path)

    def _hold(self, events: list[upb.UsageEvent]) -> None:
        room = self.max_held - len(self._held)
        self._held.extend(events[:room])
        if len(events) > room:
            self._drop(events[room:], "the memory queue for an unwritable spool is full")

    def _drop(self, events: list[upb.UsageEvent], why: str) -> None:
        self.dropped += len(events)
        for event in events:
            self._headers.pop(event.request_id, None)
        self._alarm("usage: %d events LOST (%s); %d dropped so far", len(events), why, self.dropped)

    def _alarm(self, message: str, *args: object) -> None:
        """An error log line, at most once per ALARM_INTERVAL_S."""
        now = time.monotonic()
        if now - self._last_alarm >= ALARM_INTERVAL_S:
            self._last_alarm = now
            log.error(message, *args)

    async def _replay_spool(self) -> None:
        """Publish the spool chunk by chunk, in order. On a failure the
        unacknowledged chunk and the rest stay (events of that chunk that did
        get through come back once more and are dropped as duplicates by
        request id)."""
        offset = replayed = 0
        while True:
            try:
                payloads, next_offset = await asyncio.to_thread(self.spool.read_chunk, offset, REPLAY_CHUNK_EVENTS)
            except OSError as exc:
                self._alarm("usage: cannot read the spool %s (%s); retrying", self.spool.path, exc.strerror or exc)
                await self._keep_spool_from(offset)
                return
            if not payloads:
                await asyncio.to_thread(self.spool.clear)
                self._spool_pending = False
                if replayed:
                    log.info("usage: replayed %d spooled events", replayed)
                return
            if await self._publish_batch(self._decode(payloads)):
                await self._keep_spool_from(offset)
                return
            replayed += len(payloads)
            offset = next_offset

    async def _keep_spool_from(self, offset: int) -> None:
        if offset:
            try:
                await asyncio.to_thread(self.spool.drop_before, offset)
            except OSError as exc:  # the whole file stays: more duplicates, nothing lost
                self._write_failed(exc)

    def _decode(self, payloads: list[bytes]) -> list[upb.UsageEvent]:
        events = []
        for payload in payloads:
            try:
                events.append(upb.UsageEvent.FromString(payload))
            except DecodeError:
                self.dropped += 1
                self._alarm("usage: skipped an unreadable record in the spool %s", self.spool.path)
        return events
