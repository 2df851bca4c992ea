"""Analytics figures: ingestion events/s (real nats-server + `python -m
analytics`), query latency over 1 million stored requests (DuckDB and the
ClickHouse engine), and the dashboard's load time in headless chromium.

    .venv/bin/python tests/bench/analytics_bench.py [--rows 1000000] [--events 50000]

Prints figures; never passes or fails on time. Everything on 127.0.0.1,
bounded, and every process it starts is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

import aiohttp  # noqa: E402

from analytics.clickhouse_store import ChdbClient, ClickHouseStore  # noqa: E402
from analytics.duckdb_store import DuckDBStore  # noqa: E402
from analytics.store import Page, Query, Store  # noqa: E402
from tests.fault.test_analytics import ADMIN, AnalyticsProcess, publish  # noqa: E402
from tests.unit.analytics.events import make_events  # noqa: E402
from tests.unit.switchyard.test_events import NatsServer  # noqa: E402

DAY = 86400_000


def rows(count: int, now_ms: int, seed: int = 1) -> list[tuple[Any, ...]]:
    """Stored rows straight away (building 1M protobuf events would dominate)."""
    rng = random.Random(seed)
    models = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"),
              ("gemini", "gemini-2.5-flash")]
    out = []
    for i in range(count):
        provider, model = models[i % 4]
        status = "error" if rng.random() < 0.05 else "ok"
        prompt, completion = rng.randint(5, 3000), rng.randint(0, 800)
        route = "support" if i % 3 == 0 else ""
        out.append((
            f"b{i:09d}", now_ms - rng.randrange(30 * DAY), f"tenant{i % 20}", f"key{i % 200}", f"user{i % 5000}",
            f"s{i % 20000}", {"team": f"t{i % 12}", "feature": ("chat", "search", "summarise")[i % 3]},
            model, model, provider, route, 1 + i % 2, ("a", "b")[i % 2] if route else "", ("", "hit", "miss")[i % 3],
            status, 200 if status == "ok" else 502, "" if status == "ok" else "api_error", bool(i % 2), prompt,
            completion, prompt // 4, 0, completion // 5, False, (prompt * 0.15 + completion * 0.6) / 1e6, 0.0,
            rng.uniform(80, 6000), rng.uniform(20, 900) if status == "ok" else 0.0, 1))
    return out


def timed(fn: Callable[[], Any], runs: int = 5) -> float:
    fn()  # warm
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def query_figures(store: Store, now_ms: int) -> dict[str, float]:
    month = Query(now_ms - 30 * DAY, now_ms + 1)
    day = Query(now_ms - DAY, now_ms + 1)
    tenant = (("tenant", ("tenant3",)),)
    return {
        "totals, 30 days (all rows)": timed(lambda: store.summary(month)),
        "totals, 24 h": timed(lambda: store.summary(day)),
        "group by model, 30 days": timed(lambda: store.summary(Query(month.since_ms, month.until_ms,
                                                                     group_by=("model",)))),
        "group by tag.team, one tenant, 30 days": timed(lambda: store.summary(Query(
            month.since_ms, month.until_ms, filters=tenant, group_by=("tag.team",)))),
        "hourly series by model, 7 days": timed(lambda: store.timeseries(Query(
            now_ms - 7 * DAY, now_ms + 1, group_by=("model",)), 3600_000)),
        "request log, first page of 50, one tenant": timed(lambda: store.requests(
            Query(month.since_ms, month.until_ms, filters=tenant), Page(limit=50))),
    }


async def ingestion(events_count: int) -> float:
    folder = Path(tempfile.mkdtemp(prefix="sy-bench-an-"))
    server = NatsServer()
    await server.start()
    analytics = AnalyticsProcess(folder, server.url)
    try:
        events = make_events(events_count, prefix="i", span_ms=3600_000)
        await publish(server.url, events)  # a backlog, as after an outage
        await analytics.start()
        started = time.perf_counter()
        await analytics.wait_stored(events_count)
        return events_count / (time.perf_counter() - started)
    finally:
        analytics.process.stop(10)
        server.remove()
        shutil.rmtree(folder, ignore_errors=True)


async def dashboard_load(folder: Path) -> tuple[float, float]:
    """First load and a reload of the dashboard over the DuckDB store in
    ``folder`` (usage.duckdb), in headless chromium; the browser sets the
    identity headers the edge would add."""
    from playwright.async_api import async_playwright

    server = NatsServer()
    await server.start()
    analytics = AnalyticsProcess(folder, server.url)
    try:
        await analytics.start()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{analytics.url}/status", headers=ADMIN) as response:
                assert (await response.json())["stored_rows"] > 0
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = await browser.new_page(extra_http_headers=ADMIN)
            times = []
            for visit in range(2):
                started = time.perf_counter()
                if visit == 0:
                    await page.goto(f"{analytics.url}/dashboard#key=bench&")
                else:
                    await page.reload()
                await page.wait_for_selector("body[data-loaded='1']", state="attached", timeout=120_000)
                times.append((time.perf_counter() - started) * 1000)
            await browser.close()
        return times[0], times[1]
    finally:
        analytics.process.stop(10)
        server.remove()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()

    rate = await ingestion(args.events)
    print(f"ingestion (NATS backlog -> DuckDB, batches of 1000): {rate:,.0f} events/s over {args.events:,} events")

    now_ms = int(time.time() * 1000)
    folder = Path(tempfile.mkdtemp(prefix="sy-bench-q-"))
    try:
        data = rows(args.rows, now_ms)
        for name, make in (("duckdb", lambda: DuckDBStore(str(folder / "usage.duckdb"))),
                           ("clickhouse (chdb)", lambda: ClickHouseStore(ChdbClient(str(folder / "ch"))))):
            store = make()
            started = time.perf_counter()
            for start in range(0, len(data), 10_000):
                store.insert(data[start:start + 10_000])
            insert_rate = len(data) / (time.perf_counter() - started)
            print(f"\n{name}: {store.count():,} rows stored ({insert_rate:,.0f} rows/s in batches of 10,000)")
            for label, ms in query_figures(store, now_ms).items():
                print(f"  {label:<45} {ms:8.1f} ms (median of 5)")
            store.close()
        first, again = await dashboard_load(folder)
        print(f"\ndashboard over {args.rows:,} rows (chromium, ~20 API calls): first load {first:,.0f} ms, "
              f"reload {again:,.0f} ms")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
