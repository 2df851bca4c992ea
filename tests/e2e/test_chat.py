"""Chat completions through Envoy → edge → router → provider → simulator,
driven by the official openai SDK."""

from __future__ import annotations

import json

import aiohttp
import grpc
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh
from tests.e2e.conftest import marker


async def sim_requests(mesh: Mesh, contains: str) -> list[dict]:
    async with aiohttp.ClientSession() as http, http.get(f"{mesh.simulator_url}/_sim/requests",
                                                          params={"contains": contains}) as response:
        return await response.json()


async def test_chat_completion(client: AsyncOpenAI, mesh: Mesh) -> None:
    tag = marker()
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"hello {tag}"}])
    completion = raw.parse()
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert tag in choice.message.content
    assert completion.usage.completion_tokens == len(choice.message.content.split())
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert raw.headers["x-switchyard-provider"] == "openai"
    assert raw.headers["x-switchyard-model-used"] == "gpt-4o-mini"
    # gpt-4o-mini list price: $0.15 / $0.60 per million input / output tokens.
    expected = (completion.usage.prompt_tokens * 0.15 + completion.usage.completion_tokens * 0.6) / 1e6
    assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(expected, abs=1e-6)
    seen = await sim_requests(mesh, tag)
    assert len(seen) == 1
    assert seen[0]["body"]["model"] == "gpt-4o-mini"


async def test_stream_without_usage(client: AsyncOpenAI) -> None:
    tag = marker()
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"stream please {tag}"}], stream=True)
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert tag in text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


async def test_stream_with_usage(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "count me"}], stream=True,
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert last.usage.completion_tokens == len(text.split())


async def test_heartbeats_during_upstream_silence(client: AsyncOpenAI, mesh: Mesh) -> None:
    # The test mesh sends a heartbeat after 0.3 s of silence; the upstream
    # pauses 0.9 s between its words.
    prompt = "slow words [[sim tokens=3 chunk_delay_ms=900]]"
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    async with aiohttp.ClientSession() as http, http.post(
            f"{mesh.base_url}/chat/completions", json=body,
            headers={"authorization": f"Bearer {mesh.api_key}"}) as response:
        lines = [line.decode().rstrip("\n") async for line in response.content if line.strip()]
    assert ": keep-alive" in lines
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: {"))
    assert lines.index(": keep-alive") > first_data  # only once the answer has started
    assert lines[-1] == "data: [DONE]"
    # The SDK skips the comments and sees the whole answer.
    stream = await client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                  messages=[{"role": "user", "content": prompt}])
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert len(text.split()) == 3


async def test_n_choices(client: AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "two please"}], n=2)
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.message.content for c in completion.choices)


async def test_stop_sequence(client: AsyncOpenAI, mesh: Mesh) -> None:
    tag = marker()
    completion = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"alpha beta gamma {tag}"}], stop=["gamma"])
    assert "gamma" not in completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    seen = await sim_requests(mesh, tag)
    assert seen[0]["body"]["stop"] == ["gamma"]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer",
                                                                                             "minimum": 1}},
                       "required": ["city", "days"]},
    },
}


async def test_tool_call_passthrough(client: AsyncOpenAI, mesh: Mesh) -> None:
    tag = marker()
    completion = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"call get_weather {tag}"}],
        tools=[WEATHER_TOOL], tool_choice="required")
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str) and isinstance(args["days"], int)
    seen = await sim_requests(mesh, tag)
    # The schema reached the upstream unchanged: integers stay integers.
    assert seen[0]["body"]["tools"][0]["function"]["parameters"] == WEATHER_TOOL["function"]["parameters"]


async def test_streaming_tool_call_accumulated_by_sdk(client: AsyncOpenAI) -> None:
    async with client.chat.completions.stream(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "please call get_weather"}],
        tools=[WEATHER_TOOL],
    ) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.id and call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"city", "days"}


async def test_tool_round_trip(client: AsyncOpenAI) -> None:
    first = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "call get_weather"}], tools=[WEATHER_TOOL],
        tool_choice="required")
    call = first.choices[0].message.tool_calls[0]
    answer = await client.chat.completions.create(model="gpt-4o-mini", tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "call get_weather"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny-and-21C"},
    ])
    assert "sunny-and-21C" in answer.choices[0].message.content


async def test_json_object_passthrough(client: AsyncOpenAI, mesh: Mesh) -> None:
    tag = marker()
    completion = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"json please {tag}"}],
        response_format={"type": "json_object"})
    assert isinstance(json.loads(completion.choices[0].message.content), dict)
    seen = await sim_requests(mesh, tag)
    assert seen[0]["body"]["response_format"] == {"type": "json_object"}


async def test_alias_and_provider_model(client: AsyncOpenAI) -> None:
    by_alias = await client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "hi"}])
    assert by_alias.headers["x-switchyard-model-used"] == "gpt-4o-mini"
    explicit = await client.chat.completions.with_raw_response.create(
        model="local/sim-anything", messages=[{"role": "user", "content": "hi"}])
    assert explicit.headers["x-switchyard-provider"] == "local"
    assert explicit.parse().model == "sim-anything"


async def test_extras_pass_through_to_compatible_upstream(client: AsyncOpenAI, mesh: Mesh) -> None:
    tag = marker()
    await client.chat.completions.create(
        model="local/sim-llama", messages=[{"role": "user", "content": f"extras {tag}"}],
        extra_body={"top_k": 40, "min_p": 0.05, "chat_template_kwargs": {"enable_thinking": False}})
    body = (await sim_requests(mesh, tag))[0]["body"]
    assert body["top_k"] == 40 and body["min_p"] == 0.05
    assert body["chat_template_kwargs"] == {"enable_thinking": False}


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash"])
async def test_extras_refused_by_upstreams_that_do_not_take_them(client: AsyncOpenAI, mesh: Mesh, model: str) -> None:
    tag = marker()
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"extras {tag}"}], extra_body={"min_p": 0.1})
    assert info.value.body["param"] == "min_p"
    assert await sim_requests(mesh, tag) == []


async def test_health_and_readiness(mesh: Mesh) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz"):
            async with http.get(f"http://127.0.0.1:{mesh.public_port}{path}") as response:
                assert response.status == 200, path
        async with http.get(f"http://127.0.0.1:{mesh.public_port}/openapi.json") as response:
            assert "/v1/chat/completions" in (await response.json())["paths"]


async def test_models_listing(client: AsyncOpenAI) -> None:
    models = await client.models.list()
    ids = {m.id for m in models.data}
    assert {"gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash", "fast"} <= ids


@pytest.mark.parametrize(("socket", "service"), [("router", "switchyard.v1.Router"),
                                                  ("providers", "switchyard.v1.Provider")])
async def test_grpc_health_and_reflection(mesh: Mesh, socket: str, service: str) -> None:
    async with grpc.aio.insecure_channel(f"unix:{mesh.sockets[socket]}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = [r async for r in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {service, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
