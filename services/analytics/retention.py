"""Retention: requests older than ``analytics.retention_days`` are deleted
from the store, at start-up and then every hour, so the store stops growing
once it holds that many days. The consumer does not store a usage event
already past the retention (one replayed from the stream or a spool late),
so nothing deleted comes back."""

from __future__ import annotations

import asyncio
import logging
import time

from analytics.consumer import wait_or_stop
from analytics.store import Store
from switchyard.metrics import State

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 3600.0
DAY_MS = 86_400_000


class Retention:
    def __init__(self, store: Store, days: int, interval_s: float = SWEEP_INTERVAL_S) -> None:
        self.store = store
        self.days = days
        self.interval_s = interval_s
        self.deleted = 0      # rows deleted since start
        self.last_sweep_ms = 0
        self.failures = 0

    def cutoff_ms(self) -> int:
        """The oldest request time kept now (unix ms)."""
        return int(time.time() * 1000) - self.days * DAY_MS

    async def sweep(self) -> int:
        """Delete what is past the retention now; how many rows."""
        cutoff = self.cutoff_ms()
        deleted = await asyncio.to_thread(self.store.delete_before, cutoff)
        self.deleted += deleted
        self.last_sweep_ms = int(time.time() * 1000)
        if deleted:
            log.info("analytics: deleted %d requests older than %d days", deleted, self.days)
        return deleted

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep now and every ``interval_s`` until ``stop``; a failed sweep is retried at the next."""
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception as exc:  # the store's error: queries and ingestion go on
                self.failures += 1
                log.warning("analytics: retention sweep failed (%s); next in %.0f s", type(exc).__name__,
                            self.interval_s)
            await wait_or_stop(stop, self.interval_s)


def retention_metrics(retention: Retention) -> State:
    """Gauges read when Prometheus scrapes the analytics service."""
    yield ("switchyard_analytics_rows_expired", "Requests deleted by the retention policy since start", [],
           [((), retention.deleted)])
    yield ("switchyard_analytics_retention_failures", "Retention sweeps that failed since start", [],
           [((), retention.failures)])
