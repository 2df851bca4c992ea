"""The same OpenAI-shaped request against every upstream API family through
the full mesh: OpenAI, Anthropic Messages and Gemini (all simulated)."""

from __future__ import annotations

import base64
import json

import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel

from deploy.local.mesh import Mesh
from tests.e2e.conftest import marker
from tests.e2e.test_chat import WEATHER_TOOL, sim_requests

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}
API = {"openai": "openai", "anthropic": "anthropic", "gemini": "gemini"}
PNG_1PX = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201e2d3a9e90000000049454e44ae426082")).decode()

pytestmark = pytest.mark.parametrize("provider", list(MODELS))


async def test_text_and_usage(client: AsyncOpenAI, mesh: Mesh, provider: str) -> None:
    tag = marker()
    raw = await client.chat.completions.with_raw_response.create(
        model=MODELS[provider], messages=[{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": f"hello {tag}"}])
    completion = raw.parse()
    assert raw.headers["x-switchyard-provider"] == provider
    assert tag in completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 0
    seen = await sim_requests(mesh, tag)
    assert [r["api"] for r in seen] == [API[provider]]


async def test_stream_text(client: AsyncOpenAI, provider: str) -> None:
    tag = marker()
    stream = await client.chat.completions.create(
        model=MODELS[provider], messages=[{"role": "user", "content": f"stream {tag}"}], stream=True,
        stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert tag in text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].choices == []


async def test_streaming_tool_call_with_sdk_helper(client: AsyncOpenAI, provider: str) -> None:
    async with client.chat.completions.stream(
        model=MODELS[provider], messages=[{"role": "user", "content": "please call get_weather"}],
        tools=[WEATHER_TOOL],
    ) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.id and call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str) and isinstance(args["days"], int)


async def test_full_tool_round_trip(client: AsyncOpenAI, provider: str) -> None:
    first = await client.chat.completions.create(
        model=MODELS[provider], messages=[{"role": "user", "content": "call get_weather"}], tools=[WEATHER_TOOL],
        tool_choice="required")
    message = first.choices[0].message
    call = message.tool_calls[0]
    history = [
        {"role": "user", "content": "call get_weather"},
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny-and-21C"},
    ]
    answer = await client.chat.completions.create(model=MODELS[provider], tools=[WEATHER_TOOL], messages=history)
    assert "sunny-and-21C" in answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop"


class Weather(BaseModel):
    city: str
    days: int
    sunny: bool


async def test_json_schema_parsed(client: AsyncOpenAI, provider: str) -> None:
    completion = await client.chat.completions.parse(
        model=MODELS[provider], messages=[{"role": "user", "content": "weather as JSON"}], response_format=Weather)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Weather)


async def test_json_object(client: AsyncOpenAI, provider: str) -> None:
    completion = await client.chat.completions.create(
        model=MODELS[provider], messages=[{"role": "user", "content": "give me JSON"}],
        response_format={"type": "json_object"})
    assert isinstance(json.loads(completion.choices[0].message.content), dict)


async def test_image_input_reaches_upstream(client: AsyncOpenAI, mesh: Mesh, provider: str) -> None:
    tag = marker()
    await client.chat.completions.create(model=MODELS[provider], messages=[{"role": "user", "content": [
        {"type": "text", "text": f"what is this {tag}"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1PX}"}},
    ]}])
    body = json.dumps((await sim_requests(mesh, tag))[0]["body"])
    assert PNG_1PX in body


async def test_n_choices(client: AsyncOpenAI, provider: str) -> None:
    completion = await client.chat.completions.create(
        model=MODELS[provider], messages=[{"role": "user", "content": "two answers"}], n=2)
    assert sorted(c.index for c in completion.choices) == [0, 1]
    assert all(c.message.content for c in completion.choices)


async def test_max_tokens_is_length(client: AsyncOpenAI, provider: str) -> None:
    completion = await client.chat.completions.create(
        model=MODELS[provider], messages=[{"role": "user", "content": "a long answer please with many words"}],
        max_tokens=3)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens <= 3

