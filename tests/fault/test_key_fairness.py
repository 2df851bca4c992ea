"""One key's flood of slow streams must not take a provider's whole
connection pool: another key's requests to the same provider keep their
latency (within 2x of a baseline measured here, plus slack for a loaded
2-core machine)."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.e2e.conftest import marker
from tests.fault.provider_worker import Worker, running_worker

MODEL = "gpt-4o-mini"
POOL = 8            # the provider's max_connections
FLOODERS = 24       # concurrent slow streams the flooding key keeps open
SLOW = "[[sim tokens=30 chunk_delay_ms=100]]"  # ~3 s per stream
MEDIAN_SLACK_S = 0.05
MAX_SLACK_S = 0.5


@pytest.fixture(scope="module")
async def worker() -> AsyncIterator[Worker]:
    providers = {"shared": {"type": "openai", "base_url": "{sim}/v1", "max_connections": POOL}}
    with running_worker(providers) as running:
        yield running
        await running.close()


async def victim_request(worker: Worker) -> float:
    outcome = await worker.generate("shared", MODEL, f"{marker()} [[sim tokens=5]]", key_id="victim", deadline_s=60)
    assert outcome.error is None, outcome.error
    return outcome.seconds


async def flood(worker: Worker, stop: asyncio.Event, counts: dict[str, int]) -> None:
    """Slow streams back to back until ``stop``; a refusal is honoured by
    waiting its retry-after (bounded by ``stop``)."""
    while not stop.is_set():
        outcome = await worker.generate("shared", MODEL, f"{marker()} flood {SLOW}", key_id="flood", deadline_s=60)
        error = outcome.error
        counts["refused" if error else "served"] += 1
        if error is not None:
            assert (error.status, error.code) == (429, "key_concurrency_exceeded"), error
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(error.retry_after_ms, 100) / 1000)


async def wait_in_flight(worker: Worker, tag: str, count: int) -> None:
    """Until the upstream holds ``count`` open requests containing ``tag``."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(20):
        while True:
            async with http.get(f"{worker.simulators['sim']}/_sim/requests", params={"contains": tag}) as response:
                if sum(1 for r in await response.json() if r["finished_at"] is None) >= count:
                    return
            await asyncio.sleep(0.05)  # poll interval of a bounded wait-until loop


async def test_flooding_key_leaves_room_for_other_keys(worker: Worker) -> None:
    await victim_request(worker)  # warm the pool
    baseline = [await victim_request(worker) for _ in range(8)]

    stop = asyncio.Event()
    counts = {"served": 0, "refused": 0}
    flooders = [asyncio.create_task(flood(worker, stop, counts)) for _ in range(FLOODERS)]
    try:
        await wait_in_flight(worker, "flood", POOL // 2)
        during = [await victim_request(worker) for _ in range(10)]
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*flooders), 60)

    base_median, base_max = statistics.median(baseline), max(baseline)
    print(f"\nvictim baseline median {base_median * 1000:.1f} ms max {base_max * 1000:.1f} ms; "
          f"under flood median {statistics.median(during) * 1000:.1f} ms max {max(during) * 1000:.1f} ms; "
          f"flood streams served {counts['served']}, refused {counts['refused']}")
    assert statistics.median(during) <= 2 * base_median + MEDIAN_SLACK_S
    assert max(during) <= 2 * base_max + MAX_SLACK_S
