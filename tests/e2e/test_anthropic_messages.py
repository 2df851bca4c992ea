"""The Anthropic Messages API as a second front door, driven by the official
``anthropic`` SDK through the real mesh, against every upstream type."""

from __future__ import annotations

import json

import aiohttp
import anthropic
import pytest
from anthropic import AsyncAnthropic

from deploy.local.mesh import Mesh
from tests.e2e.conftest import marker
from tests.e2e.test_chat import sim_requests
from tests.e2e.test_usage import usage_events

# upstream type -> (model through Switchyard, the simulator API that answers it)
UPSTREAMS = {"anthropic": ("claude-sonnet-4-6", "anthropic"), "openai": ("gpt-4o-mini", "openai"),
             "gemini": ("gemini-2.5-flash", "gemini"), "openai_compat": ("sim-backup", "openai")}
# A model of each type that can think.
THINKERS = {"anthropic": "claude-sonnet-4-6", "openai": "o4-mini", "gemini": "gemini-2.5-flash",
            "openai_compat": "sim-backup"}
WEATHER = {"name": "get_weather", "description": "Weather for a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                            "required": ["city", "days"]}}

upstreams = pytest.mark.parametrize("upstream", list(UPSTREAMS))


@pytest.fixture
async def claude(mesh: Mesh) -> AsyncAnthropic:
    # The SDK appends /v1/messages to the base URL.
    async with AsyncAnthropic(base_url=mesh.base_url.removesuffix("/v1"), api_key=mesh.api_key, max_retries=0,
                              timeout=30) as c:
        yield c


@upstreams
async def test_message(claude: AsyncAnthropic, mesh: Mesh, upstream: str) -> None:
    model, api = UPSTREAMS[upstream]
    tag = marker()
    raw = await claude.messages.with_raw_response.create(
        model=model, max_tokens=200, system="Be brief.", messages=[{"role": "user", "content": f"hello {tag}"}])
    message = await raw.parse()
    assert message.type == "message" and message.role == "assistant"
    request_id = raw.headers["x-request-id"]
    assert message.id == "msg_" + request_id and raw.headers["request-id"] == request_id
    [block] = message.content
    assert block.type == "text" and tag in block.text
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["x-switchyard-provider"] == ("backup" if upstream == "openai_compat" else upstream)
    seen = await sim_requests(mesh, tag)
    assert [r["api"] for r in seen] == [api]


@upstreams
async def test_stream_helper(claude: AsyncAnthropic, upstream: str) -> None:
    model, _ = UPSTREAMS[upstream]
    tag = marker()
    async with claude.messages.stream(model=model, max_tokens=200,
                                      messages=[{"role": "user", "content": f"stream {tag}"}]) as stream:
        texts = [text async for text in stream.text_stream]
        message = await stream.get_final_message()
    assert tag in "".join(texts)
    assert message.content[0].text == "".join(texts)
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0 and message.usage.input_tokens > 0


@upstreams
async def test_raw_event_sequence(mesh: Mesh, upstream: str) -> None:
    """The wire itself (the SDK hides pings): Anthropic's event names and order."""
    model, _ = UPSTREAMS[upstream]
    body = {"model": model, "max_tokens": 200, "stream": True, "messages": [{"role": "user", "content": "events"}]}
    headers = {"x-api-key": mesh.api_key, "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as http, http.post(f"{mesh.base_url}/messages", json=body,
                                                          headers=headers) as response:
        assert response.content_type == "text/event-stream"
        text = (await response.read()).decode()
    frames = [frame.split("\n") for frame in text.strip().split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in frames]
    payloads = [json.loads(lines[1].removeprefix("data: ")) for lines in frames]
    assert [p["type"] for p in payloads] == names
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert payloads[0]["message"]["content"] == [] and payloads[0]["message"]["stop_reason"] is None
    assert payloads[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert payloads[-2]["usage"]["output_tokens"] > 0


@upstreams
async def test_tools_round_trip(claude: AsyncAnthropic, upstream: str) -> None:
    model, _ = UPSTREAMS[upstream]
    question = {"role": "user", "content": "please call get_weather"}
    async with claude.messages.stream(model=model, max_tokens=300, tools=[WEATHER], messages=[question],
                                      tool_choice={"type": "any"}) as stream:
        first = await stream.get_final_message()
    assert first.stop_reason == "tool_use"
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.id
    assert isinstance(call.input["city"], str) and isinstance(call.input["days"], int)
    answer = await claude.messages.create(model=model, max_tokens=300, tools=[WEATHER], messages=[
        question, {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny-and-21C"}]},
    ])
    assert answer.stop_reason == "end_turn"
    assert "sunny-and-21C" in answer.content[-1].text


@upstreams
async def test_thinking(claude: AsyncAnthropic, mesh: Mesh, upstream: str) -> None:
    tag = marker()
    thinking = {"type": "enabled", "budget_tokens": 2048}
    message = await claude.messages.create(model=THINKERS[upstream], max_tokens=4096, thinking=thinking,
                                           messages=[{"role": "user", "content": f"think about {tag}"}])
    assert tag in message.content[-1].text
    [seen] = await sim_requests(mesh, tag)
    body = seen["body"]
    if upstream == "anthropic":
        assert body["thinking"] == thinking  # as given, not re-derived
        assert message.content[0].type == "thinking" and message.content[0].signature
    elif upstream == "gemini":
        assert body["generationConfig"]["thinkingConfig"]
    else:
        assert body["reasoning_effort"] == "low"


async def test_signed_thinking_round_trip_to_anthropic(claude: AsyncAnthropic, mesh: Mesh) -> None:
    """Thinking with tools: the signed thinking block must come back first in
    the assistant turn, byte for byte (the simulator checks signatures)."""
    thinking = {"type": "enabled", "budget_tokens": 1024}
    question = {"role": "user", "content": "call get_weather"}
    async with claude.messages.stream(model="claude-sonnet-4-6", max_tokens=2048, thinking=thinking,
                                      tools=[WEATHER], messages=[question]) as stream:
        first = await stream.get_final_message()
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    call = first.content[1]
    tag = marker()
    answer = await claude.messages.create(model="claude-sonnet-4-6", max_tokens=2048, thinking=thinking,
                                          tools=[WEATHER], messages=[
        question, {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": f"rain {tag}"}]},
    ])
    assert tag in answer.content[-1].text
    [seen] = await sim_requests(mesh, tag)
    sent = seen["body"]["messages"][1]["content"][0]
    assert sent == {"type": "thinking", "thinking": first.content[0].thinking, "signature": first.content[0].signature}


async def test_cache_control_and_documents_reach_anthropic(claude: AsyncAnthropic, mesh: Mesh) -> None:
    tag = marker()
    cached = {"type": "ephemeral", "ttl": "1h"}
    await claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=100,
        system=[{"type": "text", "text": "You are terse.", "cache_control": cached}],
        messages=[{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The sky is green."},
             "title": "facts", "citations": {"enabled": True}, "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": f"what colour is the sky {tag}"}]}])
    [seen] = await sim_requests(mesh, tag)
    body = seen["body"]
    assert body["system"] == [{"type": "text", "text": "You are terse.", "cache_control": cached}]
    assert body["messages"][0]["content"][0] == {
        "type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The sky is green."},
        "title": "facts", "citations": {"enabled": True}, "cache_control": {"type": "ephemeral"}}


async def test_routing_config_scope_and_usage(claude: AsyncAnthropic, mesh: Mesh) -> None:
    raw = await claude.messages.with_raw_response.create(model="@scoped", max_tokens=50,
                                                         messages=[{"role": "user", "content": "route me"}])
    assert raw.headers["x-switchyard-route"] == "@scoped"
    request_id = raw.headers["x-request-id"]
    (event,) = await usage_events(mesh, {request_id})
    assert event.status == "ok" and event.route == "scoped" and event.key_id == "dev"
    assert event.usage.completion_tokens == (await raw.parse()).usage.output_tokens
    async with AsyncAnthropic(base_url=mesh.base_url.removesuffix("/v1"), api_key=mesh.limited_key,  # type: ignore[attr-defined]
                              max_retries=0) as limited:
        with pytest.raises(anthropic.PermissionDeniedError) as info:
            await limited.messages.create(model="claude-sonnet-4-6", max_tokens=10,
                                          messages=[{"role": "user", "content": "hi"}])
        assert info.value.body["error"]["type"] == "permission_error"
        ok = await limited.messages.create(model="@scoped", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        assert ok.content


async def test_errors_in_anthropic_shape(claude: AsyncAnthropic, mesh: Mesh) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        await claude.messages.create(model="claude-sonnet-4-6", max_tokens=10, extra_body={"temperature": 1.5},
                                     messages=[{"role": "user", "content": "hi"}])
    assert info.value.body == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "temperature: Input should be less than or equal to 1"}}
    with pytest.raises(anthropic.NotFoundError) as info:
        await claude.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["error"]["type"] == "not_found_error"
    async with AsyncAnthropic(base_url=mesh.base_url.removesuffix("/v1"), api_key="sy_wrong", max_retries=0) as bad:
        with pytest.raises(anthropic.AuthenticationError) as info:
            await bad.messages.create(model="claude-sonnet-4-6", max_tokens=10,
                                      messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["error"]["type"] == "authentication_error"
    # An upstream failure before any output: the upstream's status, in Anthropic's shape.
    with pytest.raises(anthropic.RateLimitError) as info:
        await claude.messages.create(model="gemini-2.5-flash", max_tokens=10,
                                     messages=[{"role": "user", "content": "[[sim status=429]]"}])
    assert info.value.body["error"]["type"] == "rate_limit_error"


async def test_stream_failing_midway_ends_with_error_event(claude: AsyncAnthropic) -> None:
    stream = await claude.messages.create(model="gpt-4o-mini", max_tokens=200, stream=True,
                                          messages=[{"role": "user", "content": "[[sim error_after=2]] go"}])
    kinds = []
    with pytest.raises(anthropic.APIStatusError) as info:
        async for event in stream:
            kinds.append(event.type)
    assert kinds[0] == "message_start" and "message_stop" not in kinds
    assert info.value.body["type"] == "error"


@upstreams
async def test_count_tokens(claude: AsyncAnthropic, mesh: Mesh, upstream: str) -> None:
    """Anthropic and Gemini count with their own APIs; OpenAI-style upstreams
    have none, so the count is an estimate, and the answer says which."""
    model, _ = UPSTREAMS[upstream]
    tag = marker()
    raw = await claude.messages.with_raw_response.count_tokens(
        model=model, messages=[{"role": "user", "content": f"hi {tag}"}])
    short = await raw.parse()
    long = await claude.messages.count_tokens(model=model, system="Answer in French.", tools=[WEATHER],
                                              messages=[{"role": "user", "content": "hi " * 200}])
    assert 0 < short.input_tokens < long.input_tokens
    native = upstream in ("anthropic", "gemini")
    assert raw.headers["x-switchyard-tokens-estimated"] == ("false" if native else "true")
    seen = await sim_requests(mesh, tag)
    assert len(seen) == (1 if native else 0)  # estimating calls no upstream
    if native:
        assert seen[0]["path"].endswith("/v1/messages/count_tokens" if upstream == "anthropic" else ":countTokens")
