"""FUZZ-UPSTREAM from RELIABILITY.md: one hostile upstream answer costs only
its own request a clean error. While a provider worker serves it, requests
to another provider keep their latency (within 2x of a baseline measured
here, plus slack for a loaded 2-core machine) and the worker's memory stays
bounded."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.e2e.conftest import marker
from tests.fault.provider_worker import Worker, running_worker

MODEL = "gpt-4o-mini"
CALM = "[[sim tokens=20]]"
# Peak RSS growth allowed while one hostile answer is served: the SSE caps
# (4 MiB line, 8 MiB event) plus aiohttp's read buffers and allocator slack.
MEMORY_BOUND_KIB = 32 * 1024
# Absolute slack on top of 2x baseline for a loaded 2-core machine: for the
# median, and for the slowest request (one scheduling hiccup). Before the
# decoder was bounded, requests here waited 9.8 s, 10.9 s and forever.
MEDIAN_SLACK_S = 0.05
MAX_SLACK_S = 0.5

# Hostile scenario (simulator directive) -> (error code, status) the client must get.
CASES = {
    "newlines": ("upstream_stream_truncated", 502),             # 1 MiB of bare newlines, no terminator
    "newlines hostile_kib=1048576": ("upstream_timeout", 504),  # 1 GiB of them: a flood, paced until a timeout
    "gzip_newlines": ("upstream_decompression_bomb", 502),      # 1 GiB of them from ~1 MiB of gzip
    "endless_data": ("upstream_event_too_large", 502),          # data: lines without a blank line
    "endless_line": ("upstream_line_too_long", 502),
    "bad_utf8": ("upstream_protocol_error", 502),
    "error_body_200": ("internal_error", 502),                  # the upstream's own code, its text sanitised
    "html_error": ("upstream_error", 502),                      # a 502 HTML page naming internal hosts
}
# Bodies the upstream would go on sending for 1 GiB: the worker must hang up.
# (The gzip bomb is ~1 MiB on the wire: socket buffers may take all of it.)
ENDLESS = {"newlines hostile_kib=1048576", "endless_data", "endless_line"}
# What must never reach a client from an upstream's error (see simulator/hostile.py).
LEAKS = ("corp.internal", "10.12.3.4", "Traceback", "/srv/app", "<", "aiohttp", "Error:", "TransferEncoding")


@pytest.fixture(scope="module")
async def worker() -> AsyncIterator[Worker]:
    providers = {"hostile": {"type": "openai", "base_url": "{hostile}/v1",
                             "timeouts": {"first_token_s": 3, "between_chunks_s": 3, "total_s": 6}},
                 "calm": {"type": "openai", "base_url": "{calm}/v1"}}
    with running_worker(providers, simulators=("hostile", "calm")) as running:
        yield running
        await running.close()


async def calm_request(worker: Worker) -> float:
    outcome = await worker.generate("calm", MODEL, f"{marker()} {CALM}", deadline_s=60)
    assert outcome.error is None and outcome.finish_reasons() == {0: "stop"}
    return outcome.seconds


async def wait_upstream(worker: Worker, tag: str, state: str) -> dict:
    """The hostile upstream's record of the request once it is ``received``/``finished``."""
    async with aiohttp.ClientSession() as http, http.get(
            f"{worker.simulators['hostile']}/_sim/wait",
            params={"contains": tag, "state": state, "timeout": "20"}) as response:
        assert response.status == 200, f"the hostile upstream never saw the request {state}"
        return await response.json()


@pytest.mark.parametrize("scenario", list(CASES), ids=[c.replace(" hostile_kib=", "-") for c in CASES])
async def test_hostile_upstream_costs_only_its_own_request(worker: Worker, scenario: str) -> None:
    await worker.close()  # a fresh channel per case
    await calm_request(worker)  # warm the pool
    baseline = [await calm_request(worker) for _ in range(8)]

    worker.reset_peak()
    rss_before = worker.status_kib("VmRSS")
    tag = marker()
    hostile = asyncio.create_task(worker.generate("hostile", MODEL, f"{tag} [[sim hostile={scenario}]]",
                                                  deadline_s=60))
    await wait_upstream(worker, tag, "received")
    during: list[float] = []
    while len(during) < 5 or (not hostile.done() and len(during) < 1000):
        during.append(await calm_request(worker))
    outcome = await asyncio.wait_for(hostile, 60)
    growth = worker.status_kib("VmHWM") - rss_before

    base_median, base_max = statistics.median(baseline), max(baseline)
    print(f"\n{scenario}: baseline median {base_median * 1000:.1f} ms max {base_max * 1000:.1f} ms; "
          f"during median {statistics.median(during) * 1000:.1f} ms max {max(during) * 1000:.1f} ms "
          f"({len(during)} requests); hostile request {outcome.seconds:.2f} s -> "
          f"{outcome.error.code if outcome.error else 'no error'}; peak RSS growth {growth / 1024:.1f} MiB")

    error = outcome.error
    assert error is not None, "a hostile answer must end in an error, never a clean finish"
    assert (error.code, error.status) == CASES[scenario], error
    assert not outcome.text
    assert all(leak not in error.message for leak in LEAKS), error.message
    assert statistics.median(during) <= 2 * base_median + MEDIAN_SLACK_S
    assert max(during) <= 2 * base_max + MAX_SLACK_S
    assert growth <= MEMORY_BOUND_KIB
    if scenario in ENDLESS:  # the worker hung up instead of reading on
        assert (await wait_upstream(worker, tag, "finished"))["disconnected_at"] is not None
