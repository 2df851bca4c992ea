"""A routing config edited on a running mesh of two routers: both serve the
new version within seconds, a stream in flight finishes on the old one,
pinned versions still answer, and a bad edit changes nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import yaml
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh
from tests.e2e.conftest import marker


async def served(client: AsyncOpenAI, model: str = "@production") -> tuple[int, str]:
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": f"which version {marker()}"}])
    return int(raw.headers["x-modelux-config-version"]), raw.headers["x-modelux-model-used"]


async def all_serve(client: AsyncOpenAI, expected: tuple[int, str], timeout: float = 15.0) -> float:  # noqa: ASYNC109
    """Seconds until ten answers in a row (Envoy round-robins them over both
    routers) come from ``expected``."""
    began = time.monotonic()
    streak = 0
    while streak < 10:
        assert time.monotonic() - began < timeout, f"the routers did not converge on {expected}"
        streak = streak + 1 if await served(client) == expected else 0
    return time.monotonic() - began


def edit(path: Path, change: object) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)  # type: ignore[operator]
    path.write_text(yaml.safe_dump(data, sort_keys=False))


async def test_edit_reaches_both_routers_and_in_flight_stream_keeps_its_version(replicated_mesh: Mesh,
                                                                                fault_client: AsyncOpenAI) -> None:
    mesh = replicated_mesh
    config = mesh.settings.config_path
    await all_serve(fault_client, (1, "gpt-4o-mini"))

    async with fault_client.chat.completions.with_streaming_response.create(
            model="@production", stream=True,
            messages=[{"role": "user", "content": f"slow {marker()} [[sim tokens=30 chunk_delay_ms=100]]"}],
    ) as in_flight:
        assert in_flight.headers["x-modelux-config-version"] == "1"
        stream = await in_flight.parse()
        first = await anext(stream)

        def swap(data: dict) -> None:
            data["routes"]["production"]["targets"] = ["claude-haiku-4-5", "fast"]

        edit(config, swap)
        converged = await all_serve(fault_client, (2, "claude-haiku-4-5"))
        chunks = [first] + [chunk async for chunk in stream]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.model for c in chunks} == {"gpt-4o-mini"}  # finished where it started
    print(f"\nconfig edit served by both routers after {converged:.2f} s")

    assert await served(fault_client, "@production@1") == (1, "gpt-4o-mini")  # pinned

    # A bad edit is refused by both routers; version 2 stays live.
    marker_line = "    bogus_key: 1\n"
    config.write_text(config.read_text().replace("  production:\n", "  production:\n" + marker_line, 1))
    deadline = time.monotonic() + 15
    while not all("config: refused" in mesh.tail(name, 400) for name in mesh.routers):
        assert time.monotonic() < deadline, "a router did not report the refused config"
        await asyncio.sleep(0.1)
    for name in mesh.routers:
        assert "routes.production.bogus_key (line" in mesh.tail(name, 400)
    for _ in range(6):
        assert await served(fault_client) == (2, "claude-haiku-4-5")
