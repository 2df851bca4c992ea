"""The retention sweep against a real DuckDB store: requests past the
retention go, the rest stay; a failing store is counted and retried at the
next sweep; the loop ends when told to stop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from analytics.duckdb_store import DuckDBStore
from analytics.retention import DAY_MS, Retention
from analytics.store import row_from_event
from tests.unit.analytics.events import make_events


def store_with_days(path: Path, *ages_days: float) -> DuckDBStore:
    """A store holding ten requests of each age."""
    store = DuckDBStore(str(path))
    now = int(time.time() * 1000)
    for n, age in enumerate(ages_days):
        events = make_events(10, prefix=f"d{n}-", seed=n, start_ms=now - int(age * DAY_MS), span_ms=60_000)
        store.insert([row_from_event(e) for e in events])
    return store


async def test_a_sweep_deletes_what_is_past_the_retention(tmp_path: Path) -> None:
    store = store_with_days(tmp_path / "usage.duckdb", 40, 8, 6, 0.01)
    retention = Retention(store, days=7)
    try:
        assert await retention.sweep() == 20
        assert store.count() == 20 and retention.deleted == 20 and retention.last_sweep_ms > 0
        assert await retention.sweep() == 0
        assert abs(retention.cutoff_ms() - (int(time.time() * 1000) - 7 * DAY_MS)) < 1000
    finally:
        store.close()


class Failing:
    def __init__(self) -> None:
        self.calls = 0

    def delete_before(self, ts_ms: int) -> int:
        self.calls += 1
        raise RuntimeError("disk full")


async def test_a_failed_sweep_is_counted_and_retried_until_stopped() -> None:
    failing = Failing()
    retention = Retention(failing, days=1, interval_s=0.01)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(retention.run(stop))
    async with asyncio.timeout(5):
        while failing.calls < 3:
            await asyncio.sleep(0.01)
    stop.set()
    async with asyncio.timeout(5):
        await task
    assert retention.failures >= 3 and retention.deleted == 0
