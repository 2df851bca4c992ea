"""NATS-OUTAGE and NATS-CRASH from RELIABILITY.md: usage is neither lost nor
counted twice when NATS goes away, even if a router dies meanwhile."""

from __future__ import annotations

import asyncio
import signal

from openai import AsyncOpenAI

from deploy.local.mesh import Mesh
from switchyard.events import Spool
from tests.e2e.test_usage import usage_events


async def request_ids(client: AsyncOpenAI, count: int) -> set[str]:
    ids = set()
    for i in range(count):
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"metered {i}"}])
        assert raw.parse().choices[0].finish_reason == "stop"
        ids.add(raw.headers["x-request-id"])
    return ids


def spooled(mesh: Mesh) -> int:
    return sum(len(Spool(mesh.settings.run_dir / "spool" / f"{name}.usage").read()) for name in mesh.routers)


async def test_nats_outage_and_router_crash(replicated_mesh: Mesh, fault_client: AsyncOpenAI) -> None:
    mesh = replicated_mesh
    before = await request_ids(fault_client, 4)
    await usage_events(mesh, before)  # the stream exists and works

    nats_server = mesh.processes["nats"]
    nats_server.stop(10)  # on purpose: the launcher leaves it down
    during = await request_ids(fault_client, 10)  # requests keep succeeding while NATS is down

    # The routers spool what they could not publish; then one of them dies.
    async with asyncio.timeout(20):
        while spooled(mesh) < len(during):
            await asyncio.sleep(0.05)
    crashed = mesh.processes["router"]
    restarts = mesh.restarts["router"]
    crashed.signal(signal.SIGKILL)
    async with asyncio.timeout(30):  # the launcher restarts it; the new process finds the dead one's spool
        while mesh.restarts["router"] == restarts or not crashed.alive():
            await asyncio.sleep(0.05)

    nats_server.start()
    events = await usage_events(mesh, before | during, wait_s=30)
    ids = [e.request_id for e in events]
    assert sorted(ids) == sorted(before | during)  # nothing lost, nothing twice
