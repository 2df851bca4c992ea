"""The response cache across router replicas and through a NATS outage,
each test on its own mesh (two routers, two provider workers)."""

from __future__ import annotations

import asyncio
import time

from openai import AsyncOpenAI

from deploy.local.mesh import Mesh, load_envoy_renderer
from deploy.local.probes import grpc_serving
from tests.e2e.conftest import marker
from tests.e2e.test_cache import ask, status, upstream_count


async def stop(mesh: Mesh, name: str) -> None:
    """Drain a router replica and wait until Envoy no longer routes to it."""
    assert await asyncio.to_thread(mesh.processes[name].stop, 30) == 0  # drained and exited cleanly
    async with asyncio.timeout(30):
        while await envoy_healthy(mesh, name):
            await asyncio.sleep(0.1)


async def start(mesh: Mesh, name: str) -> None:
    """Start a router replica and wait until Envoy routes to it again."""
    mesh.processes[name].start()
    async with asyncio.timeout(30):
        while not await asyncio.to_thread(grpc_serving, f"unix:{mesh.sockets[name]}"):
            await asyncio.sleep(0.1)
        while not await envoy_healthy(mesh, name):
            await asyncio.sleep(0.1)


async def envoy_healthy(mesh: Mesh, name: str) -> bool:
    """Whether Envoy's health checks count the replica ``name`` healthy."""
    _, body = await asyncio.to_thread(load_envoy_renderer().admin_request, mesh.admin, "/clusters")
    return f"{mesh.sockets[name]}::health_flags::healthy" in body.decode()


async def test_a_hit_is_served_by_the_other_replica(replicated_mesh: Mesh, fault_client: AsyncOpenAI) -> None:
    mesh = replicated_mesh
    tag = marker()
    await stop(mesh, "router-2")
    assert status(await ask(fault_client, f"shared {tag}")) == "MISS"  # answered and stored by `router`
    await start(mesh, "router-2")
    await stop(mesh, "router")
    raw = await ask(fault_client, f"shared {tag}")  # only `router-2`, a fresh process, is left
    assert status(raw) == "HIT"
    assert tag in raw.parse().choices[0].message.content
    assert await upstream_count(mesh, tag) == 1
    await start(mesh, "router")
    for _ in range(10):  # both replicas serve it now
        assert status(await ask(fault_client, f"shared {tag}")) == "HIT"
    assert await upstream_count(mesh, tag) == 1


async def test_a_store_outage_is_a_miss(replicated_mesh: Mesh, fault_client: AsyncOpenAI) -> None:
    mesh = replicated_mesh
    tag = marker()
    assert [status(await ask(fault_client, f"outage {tag}")) for _ in range(2)] == ["MISS", "HIT"]
    nats_server = mesh.processes["nats"]
    nats_server.stop(10)
    # NATS is down: every request is answered by the upstream, none fails or waits for the store.
    for prompt in (f"outage {tag}", f"outage {tag}", f"during {tag}", f"during {tag}"):
        began = time.monotonic()
        raw = await ask(fault_client, prompt, extra_body={"mlx:trace": True})
        assert status(raw) == "MISS" and raw.parse().choices[0].finish_reason == "stop"
        assert raw.parse().model_extra["trace"]["cache"]["reason"] == "the cache store is unavailable"
        assert time.monotonic() - began < 5
    assert await upstream_count(mesh, f"outage {tag}") == 3 and await upstream_count(mesh, f"during {tag}") == 2
    nats_server.start()  # same storage: the entry written before the outage is still there
    async with asyncio.timeout(30):
        while status(await ask(fault_client, f"outage {tag}")) != "HIT":
            await asyncio.sleep(0.2)
    after = marker()
    async with asyncio.timeout(30):  # and new answers are stored again
        while status(await ask(fault_client, f"after {after}")) != "HIT":
            await asyncio.sleep(0.2)
