"""Usage events to NATS JetStream, never lost and never counted twice.

Each event is published with ``Nats-Msg-Id`` = its request id, so JetStream
drops a replayed duplicate inside its window (and the consumer, keyed by
request id, drops any later one). While NATS is unreachable, events go to an
append-only spool file on local disk (written and fsynced off the event
loop) and are replayed in order once the connection is back. The request
path never waits for NATS: ``record()`` only queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import nats
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError

from switchyard.v1 import usage_pb2 as upb

log = logging.getLogger(__name__)

STREAM = "SWITCHYARD_USAGE"
SUBJECT_PREFIX = "switchyard.usage"
_LENGTH = struct.Struct(">I")


def subject_for(event: upb.UsageEvent) -> str:
    tenant = "".join(c if c.isalnum() or c in "-_" else "_" for c in event.tenant) or "default"
    return f"{SUBJECT_PREFIX}.{tenant}"


class Spool:
    """Length-prefixed serialized events in one append-only file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, payloads: list[bytes]) -> None:
        with open(self.path, "ab") as spool:
            for payload in payloads:
                spool.write(_LENGTH.pack(len(payload)) + payload)
            spool.flush()
            os.fsync(spool.fileno())

    def read(self) -> list[bytes]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        out, offset = [], 0
        while offset + _LENGTH.size <= len(data):
            (size,) = _LENGTH.unpack_from(data, offset)
            if offset + _LENGTH.size + size > len(data):
                break  # a torn last write: the event was never acknowledged to anyone
            out.append(data[offset + _LENGTH.size: offset + _LENGTH.size + size])
            offset += _LENGTH.size + size
        return out

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class UsagePublisher:
    def __init__(self, url: str, spool_path: Path, *, publish_timeout_s: float = 2.0,
                 replay_interval_s: float = 1.0) -> None:
        self.url = url
        self.spool = Spool(spool_path)
        self.publish_timeout_s = publish_timeout_s
        self.replay_interval_s = replay_interval_s
        # Events spooled by an earlier process (it died while NATS was down) are replayed too.
        self._spool_pending = spool_path.exists()
        self._queue: asyncio.Queue[upb.UsageEvent | None] = asyncio.Queue()
        self._headers: dict[str, dict[str, str]] = {}
        self._nc: nats.NATS | None = None
        self._task: asyncio.Task[None] | None = None
        self._connector: asyncio.Task[None] | None = None
        self._js: JetStreamContext | None = None
        self.published = 0
        self.spooled = 0

    def record(self, event: upb.UsageEvent, headers: Mapping[str, str] | None = None) -> None:
        """Queue an event; ``headers`` (trace context) ride along in NATS
        headers when it is published live (a spooled replay carries only the
        event)."""
        if headers:
            self._headers[event.request_id] = dict(headers)
        self._queue.put_nowait(event)

    async def start(self) -> None:
        # Connecting never blocks publishing: until NATS answers, events spool.
        self._connector = asyncio.create_task(self._connect())
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Flush what is queued (to NATS or the spool), then disconnect."""
        self._queue.put_nowait(None)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connector is not None and not self._connector.done():
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def _connect(self) -> None:
        """Connect (retrying forever: nats-py's own loop with unlimited
        attempts) and make sure the stream exists; then nats-py reconnects by
        itself after any later outage."""

        async def disconnected() -> None:
            log.warning("usage: NATS connection lost; spooling")

        async def error(exc: Exception) -> None:
            log.debug("usage: NATS client error: %s", exc)

        nc = await nats.connect(self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, allow_reconnect=True,
                                connect_timeout=2, disconnected_cb=disconnected, error_cb=error,
                                name="switchyard-usage")
        config = StreamConfig(name=STREAM, subjects=[f"{SUBJECT_PREFIX}.>"], duplicate_window=120.0)
        js = nc.jetstream()
        while True:
            try:
                try:
                    await js.add_stream(config)
                except BadRequestError:
                    await js.update_stream(config)
                break
            except Exception as exc:  # JetStream not ready yet after a server start
                log.warning("usage: cannot create stream %s (%s); retrying", STREAM, type(exc).__name__)
                await asyncio.sleep(1)
        self._js = js  # one context: it owns the subscription that receives publish acks
        self._nc = nc
        log.info("usage: publishing to NATS stream %s", STREAM)

    async def _run(self) -> None:
        closing = False
        while not closing:
            batch: list[upb.UsageEvent] = []
            try:
                # With a spool to replay, wake up periodically even without traffic.
                timeout = self.replay_interval_s if self._spool_pending else None
                item: upb.UsageEvent | bool | None = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                item = False
            while item is not False:
                if item is None:
                    closing = True
                else:
                    batch.append(item)  # type: ignore[arg-type]
                item = False if self._queue.empty() else self._queue.get_nowait()
            if not await self._ready():
                if batch:
                    await self._to_spool(batch)
                continue
            if self._spool_pending:
                await self._replay_spool()
            if self._spool_pending:  # still down after all: keep the order
                if batch:
                    await self._to_spool(batch)
                continue
            failed = await self._publish_batch(batch)
            if failed:
                await self._to_spool(failed)

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
        return failed

    async def _publish(self, event: upb.UsageEvent, payload: bytes | None = None) -> bool:
        assert self._js is not None
        try:
            await self._js.publish(
                subject_for(event), payload or event.SerializeToString(), timeout=self.publish_timeout_s,
                headers={"Nats-Msg-Id": event.request_id})
        except Exception as exc:  # timeouts, no responders while the server restarts
            log.warning("usage: publish failed (%s); spooling", type(exc).__name__)
            return False
        self.published += 1
        return True

    async def _to_spool(self, events: list[upb.UsageEvent]) -> None:
        for event in events:
            self._headers.pop(event.request_id, None)
        await asyncio.to_thread(self.spool.append, [e.SerializeToString() for e in events])
        self.spooled += len(events)
        self._spool_pending = True

    async def _replay_spool(self) -> None:
        payloads = await asyncio.to_thread(self.spool.read)
        if not payloads:
            self._spool_pending = False
            return
        for index, payload in enumerate(payloads):
            if not await self._publish(upb.UsageEvent.FromString(payload), payload):
                # Keep the rest, in order, for the next attempt.
                rest = payloads[index:]
                await asyncio.to_thread(self._rewrite, rest)
                return
        await asyncio.to_thread(self.spool.clear)
        self._spool_pending = False
        log.info("usage: replayed %d spooled events", len(payloads))

    def _rewrite(self, payloads: list[bytes]) -> None:
        self.spool.clear()
        self.spool.append(payloads)
