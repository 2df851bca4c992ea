"""The response cache end to end: the real mesh with two router replicas
sharing the NATS bucket, driven by the openai SDK; the simulator's record
says how many requests reached the upstream.

An answer stored by one replica reaches the other's index within
milliseconds, so before a test expects a hit wherever its request lands it
waits until `Cache-Control: only-if-cached` probes (which never reach the
upstream) are answered from the cache (`settled`)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from deploy.local.mesh import SERVICES, Mesh, MeshSettings, isolated_environ
from tests.e2e.conftest import marker, running_mesh, write_test_config
from tests.e2e.test_chat import sim_requests
from tests.e2e.test_server_timing import HOPS, hops
from tests.e2e.test_usage import usage_events

GREEDY: dict[str, Any] = {"temperature": 0}


@pytest.fixture(scope="module")
def cache_mesh() -> Iterator[Mesh]:
    """Two routers and two provider workers, the shipped config (cache on)."""
    run_dir = Path(tempfile.mkdtemp(prefix="sy-c-"))
    limited = "sy_" + secrets.token_hex(20)
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=write_test_config(run_dir, limited),
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ(), router_replicas=2,
                            provider_replicas=2)
    with running_mesh(settings) as mesh:
        mesh.limited_key = limited  # type: ignore[attr-defined]
        yield mesh


@pytest.fixture
async def client(cache_mesh: Mesh) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=cache_mesh.base_url, api_key=cache_mesh.api_key, max_retries=0,
                           timeout=30) as c:
        yield c


def status(raw: Any) -> str:
    assert raw.headers["x-switchyard-cache"] == raw.headers["x-muxx-cache"]
    return raw.headers["x-muxx-cache"]


async def ask(client: AsyncOpenAI, prompt: str, **kwargs: Any) -> Any:
    """The raw response of a non-streaming request."""
    params = {"model": "gpt-4o-mini", **GREEDY, **kwargs}
    return await client.chat.completions.with_raw_response.create(
        messages=[{"role": "user", "content": prompt}], **params)


async def ask_stream(client: AsyncOpenAI, prompt: str, **kwargs: Any) -> tuple[str, list[Any]]:
    """Cache status and every chunk of a streaming request."""
    params = {"model": "gpt-4o-mini", **GREEDY, **kwargs}
    raw = await client.chat.completions.with_raw_response.create(
        messages=[{"role": "user", "content": prompt}], stream=True, stream_options={"include_usage": True},
        **params)
    return status(raw), [chunk async for chunk in raw.parse()]


async def settled(client: AsyncOpenAI, prompt: str, **kwargs: Any) -> None:
    """Wait until the cached answer to this request is visible to the replicas
    (four only-if-cached probes in a row answered from the cache)."""
    headers = {**kwargs.pop("extra_headers", {}), "Cache-Control": "only-if-cached"}
    in_a_row = 0
    async with asyncio.timeout(10):
        while in_a_row < 4:
            try:
                in_a_row = in_a_row + 1 if status(await ask(client, prompt, extra_headers=headers, **kwargs)) \
                    == "HIT" else 0
            except openai.InternalServerError as exc:
                assert exc.status_code == 504 and exc.body["code"] == "cache_miss"  # type: ignore[index]
                in_a_row = 0
                await asyncio.sleep(0.02)


async def forgotten(client: AsyncOpenAI, prompt: str) -> None:
    """Wait until no replica answers this request from the cache (four
    only-if-cached probes in a row miss)."""
    in_a_row = 0
    async with asyncio.timeout(10):
        while in_a_row < 4:
            try:
                await ask(client, prompt, extra_headers={"Cache-Control": "only-if-cached"})
                in_a_row = 0
                await asyncio.sleep(0.02)
            except openai.InternalServerError as exc:
                assert exc.status_code == 504 and exc.body["code"] == "cache_miss"  # type: ignore[index]
                in_a_row += 1


async def upstream_count(mesh: Mesh, tag: str) -> int:
    return len(await sim_requests(mesh, tag))


def comparable(chunk: Any) -> dict[str, Any]:
    """A chunk without what differs per request by design (id, created, the
    Bifrost extra_fields carrying latency and cost)."""
    return chunk.model_dump(exclude={"id", "created", "extra_fields"})


async def test_miss_then_hit(client: AsyncOpenAI, cache_mesh: Mesh) -> None:
    tag = marker()
    first = await ask(client, f"cache me {tag}")
    await settled(client, f"cache me {tag}")
    second = await ask(client, f"cache me {tag}")
    assert (status(first), status(second)) == ("MISS", "HIT")
    a, b = first.parse(), second.parse()
    assert b.choices[0].message.content == a.choices[0].message.content and tag in a.choices[0].message.content
    assert b.id != a.id and b.id == "chatcmpl-" + second.headers["x-request-id"]  # a new request id
    assert b.created >= a.created and b.model == a.model == "gpt-4o-mini"
    assert b.usage.completion_tokens == a.usage.completion_tokens
    assert float(second.headers["x-switchyard-cost-usd"]) == 0 < float(first.headers["x-switchyard-cost-usd"])
    assert second.headers["x-switchyard-model-used"] == "gpt-4o-mini"
    assert await upstream_count(cache_mesh, tag) == 1  # the hit never reached the upstream
    assert list(hops(first.headers)) == HOPS  # the hit's time went to the edge and router only
    assert list(hops(second.headers)) == ["edge", "edge-router", "router", "total"]
    # The usage events: a hit costs nothing and records what it saved.
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    events = {e.request_id: e for e in await usage_events(cache_mesh, ids)}
    miss, hit = events[first.headers["x-request-id"]], events[second.headers["x-request-id"]]
    assert (miss.cache_status, miss.cache_hit, hit.cache_status, hit.cache_hit) == ("miss", False, "hit", True)
    assert hit.usage.cost_usd == 0 and miss.usage.cost_usd > 0
    assert hit.cost_saved_usd == pytest.approx(miss.usage.cost_usd)
    assert hit.model == "gpt-4o-mini" and len(hit.attempts) == 0


async def test_aliases_and_json_order_share_an_entry(client: AsyncOpenAI, cache_mesh: Mesh) -> None:
    tag = marker()
    tool = {"type": "function", "function": {"name": "never_called", "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}}}
    reordered = {"function": {"parameters": {"properties": {"b": {"type": "integer"}, "a": {"type": "string"}},
                                             "type": "object"}, "name": "never_called"}, "type": "function"}
    first = await ask(client, f"order {tag}", model="fast", tools=[tool], extra_headers={"X-Muxx-Metadata": "{}"})
    await settled(client, f"order {tag}", tools=[tool])
    second = await ask(client, f"order {tag}", tools=[reordered], n=1, presence_penalty=0, tool_choice="auto",
                       user="someone", extra_body={"mlx:tags": {"team": "x"}})
    assert (status(first), status(second)) == ("MISS", "HIT")
    assert await upstream_count(cache_mesh, tag) == 1


async def test_streaming_hit_replays_the_same_chunks(client: AsyncOpenAI, cache_mesh: Mesh) -> None:
    # The compat upstream streams reasoning; the prompt names the tool, so the answer calls it.
    tag = marker()
    prompt = f"please lookup the weather {tag} [[sim reasoning=4]]"
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]
    first_status, first = await ask_stream(client, prompt, model="sim-backup", tools=tools)
    await settled(client, prompt, model="sim-backup", tools=tools)
    second_status, second = await ask_stream(client, prompt, model="sim-backup", tools=tools)
    assert (first_status, second_status) == ("MISS", "HIT")
    assert [comparable(c) for c in second] == [comparable(c) for c in first]
    assert len({c.id for c in second}) == 1 and second[0].id != first[0].id
    deltas = [c.choices[0].delta for c in first if c.choices]
    assert any(d.model_extra.get("reasoning_content") for d in deltas)  # reasoning, replayed too
    assert any(d.tool_calls for d in deltas) and first[-1].usage.completion_tokens > 0
    assert await upstream_count(cache_mesh, tag) == 1
    # The SDK's stream helper assembles the replayed chunks into the same answer.
    async with client.chat.completions.stream(model="sim-backup", temperature=0, tools=tools,
                                              messages=[{"role": "user", "content": prompt}]) as stream:
        final = await stream.get_final_completion()
    message = final.choices[0].message
    calls = [d.tool_calls[0] for d in deltas if d.tool_calls]
    assert message.tool_calls[0].function.name == "lookup" and message.tool_calls[0].id == calls[0].id
    assert message.tool_calls[0].function.arguments == "".join(c.function.arguments or "" for c in calls)
    assert final.choices[0].finish_reason == "tool_calls"
    assert await upstream_count(cache_mesh, tag) == 1


async def test_streamed_and_whole_answers_serve_each_other(client: AsyncOpenAI, cache_mesh: Mesh) -> None:
    tag = marker()
    miss, chunks = await ask_stream(client, f"streamed first {tag}")
    await settled(client, f"streamed first {tag}")
    whole = await ask(client, f"streamed first {tag}")
    assert (miss, status(whole)) == ("MISS", "HIT")
    streamed_text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert whole.parse().choices[0].message.content == streamed_text
    assert whole.parse().usage.completion_tokens == chunks[-1].usage.completion_tokens

    tag = marker()
    whole = await ask(client, f"whole first {tag}")
    await settled(client, f"whole first {tag}")
    hit, chunks = await ask_stream(client, f"whole first {tag}")
    assert (status(whole), hit) == ("MISS", "HIT")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        whole.parse().choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.parse().usage.completion_tokens
    assert await upstream_count(cache_mesh, tag) == 1


BYPASS_READ = [
    {"extra_headers": {"X-Muxx-Cache-Control": "no-cache"}},
    {"extra_headers": {"Cache-Control": "no-cache"}},
    {"extra_body": {"mlx:cache": {"skip": True}}},
]
NO_STORE = [
    {"extra_headers": {"X-Muxx-Cache-Control": "no-store"}},
    {"extra_headers": {"Cache-Control": "no-store"}},
    {"extra_body": {"mlx:cache": {"no_store": True}}},
]


@pytest.mark.parametrize("control", BYPASS_READ, ids=["muxx", "http", "modelux"])
async def test_no_cache_controls_answer_fresh(client: AsyncOpenAI, cache_mesh: Mesh, control: dict) -> None:
    tag = marker()
    assert status(await ask(client, f"fresh {tag}")) == "MISS"
    assert status(await ask(client, f"fresh {tag}", **control)) == "BYPASS"
    assert await upstream_count(cache_mesh, tag) == 2
    await settled(client, f"fresh {tag}")
    assert status(await ask(client, f"fresh {tag}")) == "HIT"  # the fresh answer was stored
    assert await upstream_count(cache_mesh, tag) == 2


@pytest.mark.parametrize("control", NO_STORE, ids=["muxx", "http", "modelux"])
async def test_no_store_controls_store_nothing(client: AsyncOpenAI, cache_mesh: Mesh, control: dict) -> None:
    tag = marker()
    raw = await ask(client, f"private {tag}", extra_body={"mlx:trace": True, **control.get("extra_body", {})},
                    extra_headers=control.get("extra_headers"))
    assert status(raw) == "MISS"
    assert raw.parse().model_extra["trace"]["cache"]["stored"] is False
    assert status(await ask(client, f"private {tag}")) == "MISS"
    assert await upstream_count(cache_mesh, tag) == 2


async def test_tenants_never_share_an_entry(client: AsyncOpenAI, cache_mesh: Mesh) -> None:
    tag = marker()
    async with AsyncOpenAI(base_url=cache_mesh.base_url, api_key=cache_mesh.limited_key,  # type: ignore[attr-defined]
                           max_retries=0, timeout=30) as other:
        assert status(await ask(client, f"tenant {tag}")) == "MISS"
        assert status(await ask(other, f"tenant {tag}")) == "MISS"  # tenant acme, same request
        assert await upstream_count(cache_mesh, tag) == 2
        await settled(client, f"tenant {tag}")
        await settled(other, f"tenant {tag}")
        assert status(await ask(other, f"tenant {tag}")) == "HIT"
        assert status(await ask(client, f"tenant {tag}")) == "HIT"
    assert await upstream_count(cache_mesh, tag) == 2


@pytest.mark.parametrize(("directive", "kwargs", "outcome"), [
    ("[[sim status=500]]", {}, "error"),
    ("[[sim finish=length]]", {}, "length"),
    ("", {"max_tokens": 2}, "length"),
    ("[[sim finish=content_filter]]", {}, "content_filter"),
])
async def test_errors_and_truncations_are_not_cached(client: AsyncOpenAI, cache_mesh: Mesh, directive: str,
                                                     kwargs: dict, outcome: str) -> None:
    tag = marker()
    for _ in range(2):
        try:
            raw = await ask(client, f"not cached {tag} {directive}", extra_body={"mlx:trace": True}, **kwargs)
        except openai.InternalServerError:
            assert outcome == "error"
            continue
        assert status(raw) == "MISS" and raw.parse().choices[0].finish_reason == outcome
        assert raw.parse().model_extra["trace"]["cache"]["reason"] == f"finish_reason {outcome}"
    assert await upstream_count(cache_mesh, tag) == 2


@pytest.mark.parametrize("directive", ["[[sim cut_after=2 tokens=6]]", "[[sim error_after=2 tokens=6]]"])
async def test_cut_streams_are_not_cached(client: AsyncOpenAI, cache_mesh: Mesh, directive: str) -> None:
    tag = marker()
    for _ in range(2):
        with pytest.raises(openai.APIError):
            await ask_stream(client, f"cut {tag} {directive}")
    assert await upstream_count(cache_mesh, tag) == 2


async def test_sampled_requests_bypass_the_cache(client: AsyncOpenAI, cache_mesh: Mesh) -> None:
    tag = marker()
    for _ in range(2):  # no temperature, no seed: the upstream samples at its default temperature
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"sampled {tag}"}],
            extra_body={"mlx:trace": True})
        assert status(raw) == "BYPASS"
        assert "temperature" in raw.parse().model_extra["trace"]["cache"]["reason"]
    assert await upstream_count(cache_mesh, tag) == 2
    assert status(await ask(client, f"seeded {tag}", temperature=0.9, seed=42)) == "MISS"
    await settled(client, f"seeded {tag}", temperature=0.9, seed=42)
    assert status(await ask(client, f"seeded {tag}", temperature=0.9, seed=42)) == "HIT"


async def test_ttl_expiry(client: AsyncOpenAI, cache_mesh: Mesh) -> None:
    tag = marker()
    began = time.monotonic()
    assert status(await ask(client, f"brief {tag}", extra_body={"mlx:cache": {"ttl": 2}})) == "MISS"
    await settled(client, f"brief {tag}")  # served from the cache while young
    only = {"extra_headers": {"Cache-Control": "only-if-cached"}}
    async with asyncio.timeout(15):  # then it expires
        while True:
            try:
                assert status(await ask(client, f"brief {tag}", **only)) == "HIT"
            except openai.InternalServerError as exc:
                assert exc.status_code == 504
                break
            await asyncio.sleep(0.1)
    assert time.monotonic() - began >= 2.0
    assert status(await ask(client, f"brief {tag}")) == "MISS"  # and the upstream answers again
    assert await upstream_count(cache_mesh, tag) == 2


async def test_max_age_refuses_older_entries(client: AsyncOpenAI, cache_mesh: Mesh) -> None:
    tag = marker()
    assert status(await ask(client, f"aged {tag}")) == "MISS"
    stored = time.monotonic()
    async with asyncio.timeout(10):
        while time.monotonic() - stored < 1.5:  # the condition is the entry's age itself
            await asyncio.sleep(0.1)
    traced = await ask(client, f"aged {tag}", extra_headers={"Cache-Control": "max-age=1"},
                       extra_body={"mlx:trace": True})
    assert status(traced) == "MISS" and traced.parse().model_extra["trace"]["cache"]["ttl_s"] == 1
    assert await upstream_count(cache_mesh, tag) == 2


async def test_decision_trace_says_what_the_cache_did(client: AsyncOpenAI, cache_mesh: Mesh) -> None:
    tag = marker()
    traced = {"extra_body": {"mlx:trace": True}}
    miss = (await ask(client, f"traced {tag}", **traced)).parse().model_extra["trace"]["cache"]
    hit = (await ask(client, f"traced {tag}", **traced)).parse().model_extra["trace"]["cache"]
    assert (miss["status"], miss["stored"], miss["ttl_s"]) == ("miss", True, 3600)
    assert (hit["status"], hit["stored"], hit["key"]) == ("hit", False, miss["key"]) and hit["age_s"] >= 0
    assert tag not in str(hit) and len(hit["key"]) == 16


async def test_bad_cache_controls_are_400s(client: AsyncOpenAI, cache_mesh: Mesh) -> None:
    tag = marker()
    for kwargs, param in (({"extra_headers": {"Cache-Control": "max-age=soon"}}, "Cache-Control"),
                          ({"extra_headers": {"X-Muxx-Cache-Control": "max-age=-5"}}, "X-Muxx-Cache-Control"),
                          ({"extra_body": {"mlx:cache": {"ttl": "long"}}}, "mlx:cache.ttl")):
        with pytest.raises(openai.BadRequestError) as info:
            await ask(client, f"bad {tag}", **kwargs)
        assert info.value.body["param"] == param  # type: ignore[index]
    assert await upstream_count(cache_mesh, tag) == 0


async def test_only_if_cached_never_reaches_the_upstream(client: AsyncOpenAI, cache_mesh: Mesh) -> None:
    tag = marker()
    with pytest.raises(openai.InternalServerError) as info:
        await ask(client, f"probe {tag}", extra_headers={"Cache-Control": "only-if-cached"})
    assert info.value.status_code == 504 and info.value.body["code"] == "cache_miss"  # type: ignore[index]
    assert await upstream_count(cache_mesh, tag) == 0


async def test_purging_a_tenant_forgets_its_answers_on_every_replica(client: AsyncOpenAI, cache_mesh: Mesh) -> None:
    tag = marker()
    prompt = f"purge {tag}"
    async with AsyncOpenAI(base_url=cache_mesh.base_url, api_key=cache_mesh.limited_key,  # type: ignore[attr-defined]
                           max_retries=0, timeout=30) as acme:
        for who in (client, acme):
            await ask(who, prompt)
            await settled(who, prompt)
        code, _, err = await purge_cli(cache_mesh, cache_mesh.limited_key)  # type: ignore[attr-defined]
        assert code != 0 and "403" in err  # a client key cannot purge
        code, out, err = await purge_cli(cache_mesh, cache_mesh.api_key)
        assert code == 0, err
        purged = re.fullmatch(r"purged ([\d,]+) stored values? of cached answers \(tenant acme\)\n", out)
        assert purged and int(purged[1].replace(",", "")) >= 1
        await forgotten(acme, prompt)  # on both router replicas
        assert status(await ask(client, prompt)) == "HIT"  # another tenant's answer is kept
        assert status(await ask(acme, prompt)) == "MISS"
    assert await upstream_count(cache_mesh, tag) == 3


async def purge_cli(mesh: Mesh, key: str) -> tuple[int, str, str]:
    """``switchyard cache purge --tenant acme`` with ``key``: exit code, stdout, stderr."""
    env = {**os.environ, "PYTHONPATH": str(SERVICES), "SWITCHYARD_API_KEY": key, "SWITCHYARD_BASE_URL": mesh.base_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchyard", "cache", "purge", "--tenant", "acme", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()
