"""Governance on a mesh of two routers: keys created, used, rotated and
revoked through the CLI; a requests-per-minute limit and a budget raced by
concurrent requests on both routers (exactly the limit admitted; spend within
the budget); a live stream cut at a hard budget; an upstream without usage
billed by estimate; a reservation released after its router is SIGKILLed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import openai
import pytest
import yaml
from nats.js.errors import KeyNotFoundError
from openai import AsyncOpenAI

from deploy.local.mesh import SERVICES, Mesh, MeshSettings, isolated_environ
from router.budgets import spent_of
from router.governance import BUDGETS_BUCKET
from switchyard import nats_client, tokens
from switchyard.v1 import chat_pb2 as pb
from tests.e2e.conftest import marker, mesh_config_data, running_mesh
from tests.e2e.test_usage import usage_events

PRICE_IN, PRICE_OUT = 0.15e-6, 0.6e-6  # gpt-4o-mini, per token (the catalogue's)


@pytest.fixture
def governed_mesh() -> Iterator[Mesh]:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-g-"))
    data = mesh_config_data("sy_" + "x" * 40)
    data["governance"] = {"reservation_ttl_s": 3}
    config = run_dir / "switchyard.test.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=config, api_key="sy_" + "a" * 40,
                            environ=isolated_environ(), router_replicas=2, provider_replicas=1)
    with running_mesh(settings) as mesh:
        yield mesh


def cli(mesh: Mesh, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(SERVICES), "SWITCHYARD_API_KEY": mesh.api_key,
           "SWITCHYARD_BASE_URL": mesh.base_url}
    done = subprocess.run([sys.executable, "-m", "switchyard", "keys", *args], env=env, capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def client(mesh: Mesh, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=mesh.base_url, api_key=key, max_retries=0, timeout=30)


async def until(check, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def status_of(mesh: Mesh, key: str) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, http.post(
            mesh.base_url + "/chat/completions", headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}) as reply:
        return reply.status


def worst_cost(text: str, max_tokens: int) -> float:
    prompt = tokens.prompt_tokens(pb.ChatRequest(messages=[pb.Message(role="user", text=text)]))
    return prompt * PRICE_IN + max_tokens * PRICE_OUT


async def test_keys_limits_and_budgets_across_two_routers(governed_mesh: Mesh) -> None:
    mesh = governed_mesh
    # A key with a rate limit, created through the CLI on the running mesh.
    created = cli(mesh, "create", "--id", "team-a", "--tenant", "acme", "--rpm", "10", "--metadata", "team=a")
    key = created["key"]
    assert created["limits"]["rpm"] == 10 and "sha256" not in created
    assert cli(mesh, "show", "team-a")["tenant"] == "acme"
    assert "team-a" in [k["id"] for k in cli(mesh, "list", "--json")["data"]]

    # 24 concurrent requests against 10 per minute, spread over both routers: exactly 10 pass.
    async with client(mesh, key) as c:
        async def one(i: int) -> object:
            try:
                return await c.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"hi {i}"}])
            except openai.APIStatusError as exc:
                return exc
        results = await asyncio.gather(*(one(i) for i in range(24)))
    ok = [r for r in results if not isinstance(r, openai.APIStatusError)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert len(ok) == 10 and all(r.status_code == 429 for r in refused) and len(refused) == 14
    # Every answer tells the client where it stands, as OpenAI's API does: each admission took one slot.
    assert {r.headers["x-ratelimit-limit-requests"] for r in ok} == {"10"}
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == list(range(10))
    headers = refused[0].response.headers
    assert headers["x-ratelimit-limit-requests"] == "10" and headers["x-ratelimit-remaining-requests"] == "0"
    assert int(headers["retry-after"]) >= 1 and headers["x-ratelimit-reset-requests"].endswith("s")
    assert refused[0].body["code"] == "rate_limit_exceeded"  # type: ignore[index]

    # Rotation: the old secret stops working, the new one works; revocation: refused everywhere.
    rotated = cli(mesh, "rotate", "team-a")["key"]
    await until(lambda: _is(mesh, key, 401))
    assert await status_of(mesh, rotated) == 429  # authenticated (and still over its limit)
    cli(mesh, "revoke", "team-a")
    await until(lambda: _is(mesh, rotated, 401))
    assert await status_of(mesh, rotated) == 401

    # A budget raced by 20 concurrent requests on both routers: only what fits in it is admitted.
    # The answers take 1.5 s, so every admission is decided while the first four
    # still hold their worst-case reservations (a settled request frees its
    # unused reservation, which would rightly admit a fifth).
    text = "tell me [[sim tokens=5 delay_ms=1500]]"
    worst = worst_cost(text, 100)
    budget = worst * 4.5
    budgeted = cli(mesh, "create", "--id", "team-b", "--budget-usd", f"{budget:.9f}", "--budget-period", "daily")
    async with client(mesh, budgeted["key"]) as c:
        async def spend(i: int) -> object:
            try:
                return await c.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", max_tokens=100, messages=[{"role": "user", "content": text}])
            except openai.APIStatusError as exc:
                return exc
        results = await asyncio.gather(*(spend(i) for i in range(20)))
    ok = [r for r in results if not isinstance(r, openai.APIStatusError)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert len(ok) == 4 and all(r.status_code == 402 for r in refused)
    assert refused[0].body["code"] == "budget_exceeded"  # type: ignore[index]
    spent = sum(float(r.headers["x-switchyard-cost-usd"]) for r in ok)
    assert 0 < spent <= budget

    # The admin API (and `switchyard keys show`) tells where the budget stands, read from the shared ledger
    # (the cost headers summed above are rounded to 6 decimals: 4 answers, at most 0.5e-6 each).
    ROUNDING = 4 * 0.5e-6  # noqa: N806
    async def settled() -> bool:
        [state] = (await asyncio.to_thread(cli, mesh, "show", "team-b"))["spend"]
        return state["reserved_usd"] == 0 and state["spent_usd"] == pytest.approx(spent, abs=ROUNDING)

    await until(settled)
    [state] = cli(mesh, "show", "team-b")["spend"]
    assert (state["scope"], state["period"], state["usd"]) == ("key", "daily", pytest.approx(budget))
    assert cli(mesh, "show", "team-b", "--end-user", "someone")["spend"] == [state]  # no per-user budget on it
    assert state["remaining_usd"] == pytest.approx(budget - spent, abs=ROUNDING)

    # A hard budget cuts a live stream once its running cost would cross it.
    hard = cli(mesh, "create", "--id", "team-c", "--budget-usd", "0.0002", "--budget-period", "daily", "--hard")
    received = 0
    async with client(mesh, hard["key"]) as c:
        stream = await c.chat.completions.create(
            model="gpt-4o-mini", stream=True,
            messages=[{"role": "user", "content": "write [[sim tokens=2000 chunk_delay_ms=1]]"}])
        with pytest.raises(openai.APIError, match="budget"):
            async for chunk in stream:
                received += len(chunk.choices[0].delta.content or "") if chunk.choices else 0
    delivered = tokens.text_tokens("x" * received)
    assert 0 < delivered and delivered * PRICE_OUT <= 0.0002  # cut before the budget, not after 2,000 words
    assert received < 2000 * 3

    # An upstream that reports no usage (llama.cpp) is billed by estimate, marked as such.
    async with client(mesh, mesh.api_key) as c:
        reply = await c.chat.completions.create(
            model="local/llama", messages=[{"role": "user", "content": "count [[sim no_usage=1 tokens=30]]"}])
    assert reply.usage is not None and reply.usage.model_extra.get("estimated") is True
    assert reply.usage.completion_tokens >= 30 and reply.usage.prompt_tokens > 0


async def _is(mesh: Mesh, key: str, status: int) -> bool:
    return await status_of(mesh, key) == status


async def test_a_reservation_is_released_after_its_router_is_killed(governed_mesh: Mesh) -> None:
    mesh = governed_mesh
    text = "a long answer [[sim tokens=400 chunk_delay_ms=50]]"
    worst = worst_cost(text, 500)
    key = cli(mesh, "create", "--id", "team-d", "--budget-usd", f"{worst * 1.5:.9f}")["key"]  # room for one
    async with client(mesh, key) as c:
        stream = await c.chat.completions.create(model="gpt-4o-mini", max_tokens=500, stream=True,
                                                 messages=[{"role": "user", "content": text}])
        first = await anext(aiter(stream))
        assert first is not None
        # The only request allowed holds the budget: a second one is refused.
        with pytest.raises(openai.APIStatusError) as refused:
            await c.chat.completions.create(model="gpt-4o-mini", max_tokens=500,
                                            messages=[{"role": "user", "content": text}])
        assert refused.value.status_code == 402
        # Its router dies (both are killed: the test does not know which one serves it) and restarts.
        killed_at = time.monotonic()
        for name in mesh.routers:
            mesh.processes[name].signal(signal.SIGKILL)
        for name in mesh.routers:
            await asyncio.to_thread(mesh.processes[name].popen.wait, 10)
            mesh.processes[name].start()
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass
        await stream.close()

        async def admitted() -> bool:
            try:
                await c.chat.completions.create(model="gpt-4o-mini", max_tokens=500,
                                                messages=[{"role": "user", "content": "short [[sim tokens=3]]"}])
            except openai.APIStatusError as exc:
                assert exc.status_code in (402, 503), exc  # still reserved, or routers still starting
                return False
            return True

        await until(admitted, timeout=30)
    # Released by its TTL (3 s), not by anyone settling it.
    assert time.monotonic() - killed_at >= 2.0


async def budget_spent(mesh: Mesh, key_id: str, period: str = "daily") -> tuple[float, float]:
    """(spent, reserved) of a key's budget, read from the ledger in NATS."""
    nc = await nats_client.connect(mesh.nats_url_for("router"))  # the ledgers are the routers'
    try:
        kv = await nc.jetstream().key_value(BUDGETS_BUCKET)
        try:
            entry = await kv.get(f"bg.k.{key_id}.{period}")
        except KeyNotFoundError:
            return 0.0, 0.0
        return spent_of(json.loads(entry.value or b"{}"), period, 0, time.time())
    finally:
        await nats_client.close(nc)


async def test_an_orphaned_answer_is_charged_to_its_budget(governed_mesh: Mesh) -> None:
    """Every router dies mid-answer: the edge bills what it relayed in the
    usage event and, through a restarted router, to the key's budget."""
    mesh = governed_mesh
    key = cli(mesh, "create", "--id", "team-e", "--budget-usd", "5", "--budget-period", "daily")["key"]
    request_id = "orphan-budget-" + marker()
    received = 0
    async with client(mesh, key) as c:
        stream = await c.chat.completions.create(
            model="gpt-4o-mini", stream=True, extra_headers={"X-Request-Id": request_id},
            messages=[{"role": "user", "content": f"long {marker()} [[sim tokens=400 chunk_delay_ms=20]]"}])
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    received += 1
                    if received == 20:
                        for name in mesh.routers:
                            mesh.processes[name].signal(signal.SIGKILL)
                        for name in mesh.routers:
                            await asyncio.to_thread(mesh.processes[name].popen.wait, 10)
                            mesh.processes[name].start()
    [event] = await usage_events(mesh, {request_id}, wait_s=30)
    assert event.usage_estimated and event.usage.cost_usd > 0

    async def charged() -> bool:
        return (await budget_spent(mesh, "team-e"))[0] > 0

    await until(charged, timeout=30)
    spent, reserved = await budget_spent(mesh, "team-e")
    assert spent == pytest.approx(event.usage.cost_usd) and reserved == 0  # the estimate, once; nothing held
