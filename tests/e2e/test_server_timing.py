"""Server-Timing through the real mesh: every hop's share of the time to
first output, measured inside each process and carried on the request's
started event, adds up to the total the edge measured; the upstream's own
delay shows up as `upstream`, not as Switchyard's overhead."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from tests.e2e.conftest import marker

HOPS = ["edge", "edge-router", "router", "router-provider", "provider", "upstream", "total"]


def hops(headers: Any) -> dict[str, float]:
    """The Server-Timing header as {name: milliseconds}, in order."""
    out = {}
    for part in headers["server-timing"].split(", "):
        name, _, dur = part.partition(";dur=")
        out[name] = float(dur)
    return out


@pytest.mark.parametrize("stream", [False, True])
async def test_every_hop_is_timed_and_the_upstream_delay_is_not_overhead(client: AsyncOpenAI, stream: bool) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", stream=stream, messages=[{"role": "user", "content": f"[[sim delay_ms=300]] {marker()}"}])
    if stream:
        _ = [chunk async for chunk in raw.parse()]
    timing = hops(raw.headers)
    assert list(timing) == HOPS
    assert all(ms >= 0 for ms in timing.values())
    # Nested intervals: the parts add up to what the edge measured (each is rounded to a microsecond).
    assert sum(ms for name, ms in timing.items() if name != "total") == pytest.approx(timing["total"], abs=0.01)
    assert timing["upstream"] >= 300  # the simulator's own delay...
    overhead = float(raw.headers["x-switchyard-overhead-ms"])
    assert overhead == pytest.approx(timing["total"] - timing["upstream"], abs=0.002)  # ...is not Switchyard's
    assert overhead < 300


async def test_an_answer_that_fails_before_output_has_no_timing(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="gpt-4o-mini",
                                             messages=[{"role": "user", "content": f"[[sim status=400]] {marker()}"}])
    assert "server-timing" not in info.value.response.headers
    assert info.value.response.headers["x-request-id"]
