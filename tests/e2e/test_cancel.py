"""A client that leaves cancels the whole chain down to the upstream HTTP
request: the simulator sees its connection closed, and stops generating."""

from __future__ import annotations

import time

import aiohttp
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh
from tests.e2e.conftest import marker


async def wait_finished(mesh: Mesh, tag: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(
            f"{mesh.simulator_url}/_sim/wait", params={"contains": tag, "state": "finished", "timeout": "10"}) as r:
        assert r.status == 200, "the upstream request never finished"
        return await r.json()


async def test_client_disconnect_mid_stream_closes_upstream(client: AsyncOpenAI, mesh: Mesh) -> None:
    tag = marker()
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", stream=True,
        messages=[{"role": "user", "content": f"{tag} [[sim tokens=200 chunk_delay_ms=50]]"}])
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    left_at = time.time()
    await stream.close()
    record = await wait_finished(mesh, tag)
    assert record["disconnected_at"] is not None, "upstream ran to completion for a client that left"
    assert record["disconnected_at"] - left_at < 1.0
    assert record["chunks_sent"] < 200


async def test_client_disconnect_before_first_token_closes_upstream(mesh: Mesh) -> None:
    tag = marker()
    body = {"model": "gpt-4o-mini", "stream": True,
            "messages": [{"role": "user", "content": f"{tag} [[sim delay_ms=3000]]"}]}
    async with aiohttp.ClientSession() as http:
        response_task = http.post(f"{mesh.base_url}/chat/completions", json=body,
                                  headers={"authorization": f"Bearer {mesh.api_key}"})
        import asyncio
        task = asyncio.ensure_future(response_task)
        async with aiohttp.ClientSession() as sim, sim.get(
                f"{mesh.simulator_url}/_sim/wait", params={"contains": tag, "state": "received", "timeout": "10"}) as r:
            assert r.status == 200
        task.cancel()
        left_at = time.time()
    record = await wait_finished(mesh, tag)
    assert record["disconnected_at"] is not None
    assert record["disconnected_at"] - left_at < 1.0
