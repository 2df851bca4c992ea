"""Signed reasoning survives a round trip through an OpenAI client: the
signature the upstream attached reaches the client and comes back to it."""

from __future__ import annotations

from openai import AsyncOpenAI

from deploy.local.mesh import Mesh
from tests.e2e.conftest import marker
from tests.e2e.test_chat import WEATHER_TOOL, sim_requests


async def test_gemini_thought_signature_round_trips(client: AsyncOpenAI, mesh: Mesh) -> None:
    tag = marker()
    model = "gemini-3-flash-preview"
    first = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"call get_weather {tag}"}], tools=[WEATHER_TOOL],
        tool_choice="required", reasoning_effort="low")
    message = first.choices[0].message
    signature = message.tool_calls[0].model_extra["extra_content"]["google"]["thought_signature"]
    assert signature
    follow = [{"role": "user", "content": f"call get_weather {tag}"}, message.model_dump(exclude_none=True),
              {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "rainy"}]
    answer = await client.chat.completions.create(model=model, tools=[WEATHER_TOOL], messages=follow)
    assert "rainy" in answer.choices[0].message.content
    replayed = (await sim_requests(mesh, tag))[-1]["body"]
    model_turn = next(c for c in replayed["contents"] if c["role"] == "model")
    assert model_turn["parts"][0]["thoughtSignature"] == signature


async def test_anthropic_thinking_blocks_round_trip(client: AsyncOpenAI, mesh: Mesh) -> None:
    tag = marker()
    model = "claude-sonnet-4-5"
    first = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"call get_weather {tag}"}], tools=[WEATHER_TOOL],
        reasoning_effort="low")
    message = first.choices[0].message
    blocks = message.model_extra["thinking_blocks"]
    assert blocks and blocks[0]["signature"]
    assert message.model_extra["reasoning_content"]
    follow = [{"role": "user", "content": f"call get_weather {tag}"}, message.model_dump(exclude_none=True),
              {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "rainy"}]
    answer = await client.chat.completions.create(model=model, tools=[WEATHER_TOOL], messages=follow,
                                                  reasoning_effort="low")
    assert "rainy" in answer.choices[0].message.content
    replayed = (await sim_requests(mesh, tag))[-1]["body"]
    assistant = next(m for m in replayed["messages"] if m["role"] == "assistant")
    assert assistant["content"][0] == {"type": "thinking", "thinking": blocks[0]["thinking"],
                                       "signature": blocks[0]["signature"]}
