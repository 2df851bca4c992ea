"""Usage analytics through the real mesh: requests sent with the openai SDK
come back from /v1/analytics as exactly the counts sent, scoped by key —
a client key reads 0 rows of another tenant."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from deploy.local.mesh import SERVICES, Mesh
from tests.e2e.conftest import marker


async def analytics(mesh: Mesh, key: str | None, path: str, params: list[tuple[str, str]],
                    headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    auth = {"authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as session, session.get(
            f"{mesh.base_url}/analytics/{path}", params=params, headers={**auth, **(headers or {})}) as response:
        return response.status, await response.json()


async def wait_for(mesh: Mesh, tag: str, count: int) -> None:
    async with asyncio.timeout(20):
        while True:
            _, body = await analytics(mesh, mesh.api_key, "summary", [("tag.run", tag), ("since", "1h")])
            if body["totals"]["requests"] >= count:
                return
            await asyncio.sleep(0.1)


async def send(client: AsyncOpenAI, tag: str, model: str, times: int, content: str = "hello") -> float:
    cost = 0.0
    for _ in range(times):
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": content}], extra_body={"mlx:tags": {"run": tag}})
        cost += float(raw.headers["x-switchyard-cost-usd"])
    return cost


@pytest.fixture
async def limited_client(mesh: Mesh) -> AsyncOpenAI:
    async with AsyncOpenAI(base_url=mesh.base_url, api_key=mesh.limited_key, max_retries=0, timeout=30) as c:
        yield c


async def test_numbers_equal_what_was_sent_and_tenants_are_isolated(
        mesh: Mesh, client: AsyncOpenAI, limited_client: AsyncOpenAI) -> None:
    run = marker()
    cost = await send(client, run, "gpt-4o-mini", 4) + await send(client, run, "cheap", 2)
    cost += await send(limited_client, run, "gpt-4o-mini", 3)
    with pytest.raises(openai.BadRequestError):
        await send(client, run, "gpt-4o-mini", 1, "[[sim status=400]]")
    await wait_for(mesh, run, 10)

    scope = [("tag.run", run), ("since", "1h")]
    status, body = await analytics(mesh, mesh.api_key, "summary",
                                   [*scope, ("group_by", "tenant,model_requested,model")])
    assert status == 200
    assert body["totals"]["requests"] == 10 and body["totals"]["errors"] == 1
    assert body["totals"]["cost_usd"] == pytest.approx(cost, abs=9 * 5e-7)  # the header has 6 decimals
    assert {tuple(g["key"].values()): g["requests"] for g in body["groups"]} == {
        ("default", "gpt-4o-mini", "gpt-4o-mini"): 4, ("default", "cheap", "gemini-2.5-flash"): 2,
        ("acme", "gpt-4o-mini", "gpt-4o-mini"): 3, ("default", "gpt-4o-mini", ""): 1}  # the failed one

    # The client key of tenant acme: its own 3 requests, nothing of "default".
    key = mesh.limited_key
    forged = {"x-switchyard-role": "admin", "x-switchyard-tenant": "default"}
    for headers in (None, forged):
        status, body = await analytics(mesh, key, "summary", [*scope, ("group_by", "tenant")], headers)
        assert status == 200 and body["totals"]["requests"] == 3
        assert [g["key"]["tenant"] for g in body["groups"]] == ["acme"]
    status, body = await analytics(mesh, key, "requests", [*scope, ("limit", "1000")])
    assert len(body["data"]) == 3 and {r["tenant"] for r in body["data"]} == {"acme"}
    status, body = await analytics(mesh, key, "timeseries", [*scope, ("bucket", "minute")])
    assert sum(body["series"][0]["requests"]) == 3
    status, body = await analytics(mesh, key, "summary", [*scope, ("tenant", "default")])
    assert status == 403 and body["error"]["param"] == "tenant"
    status, body = await analytics(mesh, key, "summary", [("since", "1h"), ("tenant", "acme")])
    assert status == 200 and body["filters"]["tenant"] == ["acme"]
    status, body = await analytics(mesh, None, "summary", scope)
    assert status == 401
    status, body = await analytics(mesh, mesh.api_key, "summary", [*scope, ("group_by", "colour")])
    assert status == 400 and body["error"]["param"] == "group_by"


async def test_openapi_lists_the_analytics_routes(mesh: Mesh) -> None:
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{mesh.public_port}/openapi.json") as response:
        paths = (await response.json())["paths"]
    assert {"/v1/analytics/summary", "/v1/analytics/timeseries", "/v1/analytics/requests",
            "/v1/analytics/dashboard"} <= set(paths)


async def test_cli_usage_by_model(mesh: Mesh, client: AsyncOpenAI) -> None:
    run = marker()
    await send(client, run, "gpt-4o-mini", 3)
    await send(client, run, "cheap", 1)
    await wait_for(mesh, run, 4)
    env = {**os.environ, "PYTHONPATH": str(SERVICES), "SWITCHYARD_API_KEY": mesh.api_key,
           "SWITCHYARD_BASE_URL": mesh.base_url}
    result = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "switchyard", "usage", "--by", "model", "--since", "1h", "--filter", f"tag.run={run}"],
        env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}
    assert rows == {"gpt-4o-mini": "3", "gemini-2.5-flash": "1", "total": "4"}
    env["SWITCHYARD_API_KEY"] = "sy_not_a_key_0123456789"
    result = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "switchyard", "usage"], env=env,
                                     capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "401" in result.stderr
