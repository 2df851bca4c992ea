"""The durable JetStream consumer: usage events into the store, each request
exactly once.

A pull consumer (durable, explicit acks) fetches up to ``batch`` events, the
store commits them in one transaction (dropping request ids it already
holds), and only then is each message acknowledged. Whatever dies in
between — this process, NATS, the connection — the unacknowledged messages
come back after ``ack_wait`` and the store drops the ones it already has:
nothing lost, nothing counted twice. (Acknowledging "all up to here" in one
message would be cheaper but would also acknowledge a killed predecessor's
batch that never reached the store.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import nats
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Tracer

from analytics.store import Store, row_from_event
from switchyard import attributes, nats_client, telemetry
from switchyard.events import STREAM, SUBJECT_PREFIX
from switchyard.v1 import usage_pb2 as upb

log = logging.getLogger(__name__)

DURABLE = "analytics"


class Consumer:
    def __init__(self, url: str, store: Store, *, batch: int = 1000, ack_wait_s: float = 30.0,
                 fetch_wait_s: float = 0.5, tracer: Tracer | None = None,
                 keep_from: Callable[[], int] | None = None) -> None:
        """``tracer``: one span per batch (a no-op tracer costs nothing worth counting per batch).
        ``keep_from``: the oldest request time (ms) worth storing; older events are acknowledged
        and not stored (past the retention)."""
        self.url = url
        self.store = store
        self.batch = batch
        self.ack_wait_s = ack_wait_s
        self.fetch_wait_s = fetch_wait_s
        self.traced = tracer is not None
        self.tracer = tracer or trace.NoOpTracer()
        self.connected = False
        self.received = 0   # messages fetched (redeliveries included)
        self.stored = 0     # rows the store newly committed
        self.rejected = 0   # messages that are not usage events (acknowledged and dropped)
        self.expired = 0    # usage events older than the retention (acknowledged, not stored)
        self.keep_from = keep_from
        self.pending = 0    # messages the stream holds for this consumer beyond the last batch
        self.last_commit_s = 0.0
        self._nc: nats.NATS | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is finished first."""

        async def disconnected() -> None:
            self.connected = False
            log.warning("analytics: NATS connection lost; waiting for it")

        async def reconnected() -> None:
            self.connected = True
            log.info("analytics: NATS connection back")

        async def error(exc: Exception) -> None:
            log.debug("analytics: NATS client error: %s", exc)

        self._nc = await nats_client.connect(self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                      allow_reconnect=True, connect_timeout=2, name="switchyard-analytics",
                                      disconnected_cb=disconnected, reconnected_cb=reconnected, error_cb=error)
        self.connected = True
        try:
            subscription = await self._subscribe(stop)
            while not stop.is_set() and subscription is not None:
                try:
                    messages = await subscription.fetch(self.batch, timeout=self.fetch_wait_s)
                except TimeoutError:
                    continue
                except Exception as exc:  # NATS restarting, consumer not reachable yet
                    log.debug("analytics: fetch failed (%s); retrying", type(exc).__name__)
                    await wait_or_stop(stop, 0.5)
                    continue
                try:
                    await self.ingest(messages)
                except Exception:  # the store failed: nothing acknowledged, so it all comes back
                    log.exception("analytics: store write failed; the batch will be redelivered")
                    await wait_or_stop(stop, 1.0)
        finally:
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=2)  # the last acks
            await nats_client.close(self._nc)

    async def _subscribe(self, stop: asyncio.Event) -> Any:
        """Create (or update) the durable consumer once the stream exists,
        which the publishers create; then bind to it."""
        assert self._nc is not None
        js = self._nc.jetstream()
        config = ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait_s,
                                deliver_policy=DeliverPolicy.ALL, max_deliver=-1, max_ack_pending=self.batch * 4,
                                filter_subject=f"{SUBJECT_PREFIX}.>")
        waited = False
        while not stop.is_set():
            try:
                await js.add_consumer(STREAM, config)
                log.info("analytics: consuming stream %s as %s", STREAM, DURABLE)
                return await js.pull_subscribe_bind(durable=DURABLE, stream=STREAM)
            except Exception as exc:
                if not waited:
                    log.info("analytics: waiting for stream %s (%s)", STREAM, type(exc).__name__)
                    waited = True
                await wait_or_stop(stop, 1.0)
        return None

    async def ingest(self, messages: list[Msg]) -> int:
        """Store one fetched batch, then acknowledge it; returns the rows newly stored."""
        if not messages:
            return 0
        self.received += len(messages)
        rows = []
        for message in messages:
            try:
                rows.append(row_from_event(upb.UsageEvent.FromString(message.data)))
            except DecodeError:
                self.rejected += 1
                log.warning("analytics: dropped a message that is not a UsageEvent (%d bytes)", len(message.data))
        if self.keep_from is not None and rows:
            cutoff = self.keep_from()
            kept = [row for row in rows if row[1] >= cutoff]  # row[1]: the request's time (ms)
            self.expired += len(rows) - len(kept)
            rows = kept
        span = self._span(messages)
        started = time.perf_counter()
        try:
            stored = await asyncio.to_thread(self.store.insert, rows)
        finally:
            span.end()
        self.stored += stored
        self.last_commit_s = time.perf_counter() - started
        with contextlib.suppress(Exception):  # metadata comes with every JetStream message
            self.pending = messages[-1].metadata.num_pending
        for message in messages:
            with contextlib.suppress(Exception):  # lost acks mean redelivery, which the store absorbs
                await message.ack()
        log.debug("analytics: %d events, %d new, committed in %.1f ms", len(messages), stored,
                  (time.perf_counter() - started) * 1000)
        return stored

    def _span(self, messages: list[Msg]) -> Span:
        """One span per batch, linked to each event's trace (OpenTelemetry's
        convention for batch consumers)."""
        links = []
        for message in messages if self.traced else ():
            if message.headers and "traceparent" in message.headers:
                context = trace.get_current_span(telemetry.extract(message.headers)).get_span_context()
                if context.is_valid:
                    links.append(Link(context))
        span = self.tracer.start_span("switchyard.analytics/Ingest", kind=SpanKind.CONSUMER, links=links)
        span.set_attribute(attributes.MESSAGING_BATCH_MESSAGE_COUNT, len(messages))
        return span


def consumer_metrics(consumer: Consumer) -> Iterator[tuple[str, str, list[str], list[Any]]]:
    """Gauges read when Prometheus scrapes the analytics service."""
    yield ("switchyard_analytics_events", "Usage events since start: received (redeliveries included), newly "
           "stored, rejected (not usage events), expired (older than the retention, not stored)", ["state"],
           [(("received",), consumer.received), (("stored",), consumer.stored),
            (("rejected",), consumer.rejected), (("expired",), consumer.expired)])
    yield ("switchyard_analytics_consumer_pending", "Events waiting in the stream for this consumer (consumer lag)",
           [], [((), consumer.pending)])
    yield ("switchyard_analytics_consumer_connected", "1 while connected to NATS", [],
           [((), 1 if consumer.connected else 0)])
    yield ("switchyard_analytics_last_commit_seconds", "Time the store took to commit the last batch", [],
           [((), consumer.last_commit_s)])


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
