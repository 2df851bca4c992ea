"""The simulated Messages API as the official ``anthropic`` SDK sees it, plus
the raw wire details the SDK hides (event order, header checks)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import aiohttp
import anthropic
import orjson
import pytest

from simulator.schema_instances import instance_for
from tests.conftest import SimServer

MODEL = "claude-haiku-4-5"
WEATHER = {"name": "get_weather", "description": "Current weather",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                                             "unit": {"type": "string", "enum": ["c", "f"]}},
                            "required": ["city", "days", "unit"]}}


@pytest.fixture(scope="module")
def sim_url(simulator: SimServer) -> str:
    return simulator.url


@pytest.fixture
async def client(sim_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = anthropic.AsyncAnthropic(base_url=sim_url, api_key=secrets.token_hex(16), max_retries=0)
    try:
        yield sdk
    finally:
        await sdk.close()


def headers(**extra: str) -> dict[str, str]:
    return {"x-api-key": secrets.token_hex(16), "anthropic-version": "2023-06-01", **extra}


# ---------------------------------------------------------------------- sdk --


async def test_create_text(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(model=MODEL, max_tokens=100,
                                           messages=[{"role": "user", "content": "Hello simulator"}])
    assert message.role == "assistant" and message.model == MODEL
    (block,) = message.content
    assert block.type == "text"
    assert block.text == f"Simulated answer from {MODEL}: Hello simulator"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 6)


async def test_create_tool_use(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(model=MODEL, max_tokens=100, tools=[WEATHER],
                                           messages=[{"role": "user", "content": "Call get_weather for Rome"}])
    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert block.type == "tool_use" and block.name == "get_weather" and block.id.startswith("toolu_")
    assert block.input == instance_for(WEATHER["input_schema"])


async def test_create_thinking_and_hand_it_back(client: anthropic.AsyncAnthropic) -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    ask = {"role": "user", "content": "Use get_weather for Oslo"}
    first = await client.messages.create(model=MODEL, max_tokens=2048, thinking=thinking, tools=[WEATHER],
                                         messages=[ask])
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    assert first.content[0].signature and first.content[0].thinking
    tool_use = first.content[1]
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "Snow"}]}
    second = await client.messages.create(model=MODEL, max_tokens=2048, thinking=thinking, tools=[WEATHER],
                                          messages=[ask, {"role": "assistant", "content": first.content}, result])
    assert second.content[-1].type == "text" and "Snow" in second.content[-1].text

    without_thinking = {"role": "assistant", "content": [tool_use]}
    with pytest.raises(anthropic.BadRequestError, match="must start with a thinking block"):
        await client.messages.create(model=MODEL, max_tokens=2048, thinking=thinking, tools=[WEATHER],
                                     messages=[ask, without_thinking, result])


async def test_stream_helper_accumulates_tool_input(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(model=MODEL, max_tokens=100, tools=[WEATHER],
                                      messages=[{"role": "user", "content": "get_weather in Lima"}]) as stream:
        final = await stream.get_final_message()
    (block,) = final.content
    assert block.type == "tool_use"
    assert block.input == instance_for(WEATHER["input_schema"])
    assert final.stop_reason == "tool_use"


async def test_stream_helper_text(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(model=MODEL, max_tokens=100,
                                      messages=[{"role": "user", "content": "stream this"}]) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == final.content[0].text == f"Simulated answer from {MODEL}: stream this"
    assert final.usage.output_tokens == 6


async def test_sdk_error_classes(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="role"):
        await client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "system", "content": "x"}])
    with pytest.raises(anthropic.AuthenticationError):
        await client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}],
                                     extra_headers={"Authorization": anthropic.omit})
    with pytest.raises(anthropic.RateLimitError) as limited:
        await client.messages.create(model=MODEL, max_tokens=10,
                                     messages=[{"role": "user", "content": "[[sim status=429 retry_after=3]]"}])
    assert limited.value.response.headers["retry-after"] == "3"
    assert limited.value.type == "rate_limit_error"
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        await client.messages.create(model=MODEL, max_tokens=10,
                                     messages=[{"role": "user", "content": "[[sim status=529]]"}])
    assert isinstance(overloaded.value, anthropic.InternalServerError)
    with pytest.raises(anthropic.InternalServerError):
        await client.messages.create(model=MODEL, max_tokens=10,
                                     messages=[{"role": "user", "content": "[[sim status=500]]"}])


# ---------------------------------------------------------------------- wire --


async def post(http: aiohttp.ClientSession, url: str, body: dict, hdrs: dict[str, str]) -> tuple[int, dict]:
    async with http.post(f"{url}/v1/messages", data=orjson.dumps(body), headers=hdrs) as response:
        return response.status, await response.json(content_type=None)


async def test_stream_event_sequence(http: aiohttp.ClientSession, sim_url: str) -> None:
    body = {"model": MODEL, "max_tokens": 50, "stream": True,
            "messages": [{"role": "user", "content": "two words [[sim reasoning=2]]"}]}
    async with http.post(f"{sim_url}/v1/messages", data=orjson.dumps(body), headers=headers()) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = (await response.read()).decode()
    frames = [f for f in raw.split("\n\n") if f]
    names = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    datas = [orjson.loads(f.split("\n")[1].removeprefix("data: ")) for f in frames]
    assert all(d["type"] == n for n, d in zip(names, datas, strict=True))
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert datas[0]["message"]["usage"]["input_tokens"] == 2
    deltas = [d["delta"]["type"] for d in datas if d["type"] == "content_block_delta"]
    assert deltas[:2] == ["thinking_delta", "thinking_delta"] and deltas[2] == "signature_delta"
    assert set(deltas[3:]) == {"text_delta"}
    assert names.count("content_block_start") == names.count("content_block_stop") == 2
    assert datas[-2]["delta"]["stop_reason"] == "end_turn"
    assert datas[-2]["usage"]["output_tokens"] == 2 + 6


async def test_stop_sequence_and_max_tokens(http: aiohttp.ClientSession, sim_url: str) -> None:
    base = {"model": MODEL, "messages": [{"role": "user", "content": "anything"}]}
    status, stopped = await post(http, sim_url, {**base, "max_tokens": 50, "stop_sequences": ["from"]}, headers())
    assert status == 200
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", "from")
    assert stopped["content"][0]["text"] == "Simulated answer "
    status, capped = await post(http, sim_url, {**base, "max_tokens": 2}, headers())
    assert (capped["stop_reason"], capped["content"][0]["text"]) == ("max_tokens", "Simulated answer")


async def test_in_band_error_event(http: aiohttp.ClientSession, sim_url: str) -> None:
    body = {"model": MODEL, "max_tokens": 50, "stream": True,
            "messages": [{"role": "user", "content": "[[sim error_after=1]] go"}]}
    async with http.post(f"{sim_url}/v1/messages", data=orjson.dumps(body), headers=headers()) as response:
        raw = (await response.read()).decode()
    assert "event: error\ndata: " in raw
    assert '"overloaded_error"' in raw
    assert "message_stop" not in raw


@pytest.mark.parametrize(("body", "hdrs", "status", "needle"), [
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
     {"anthropic-version": "2023-06-01"}, 401, "x-api-key"),
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
     {"x-api-key": "k"}, 400, "anthropic-version"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}, None, 400, "max_tokens: Field required"),
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": ""}]}, None, 400, "non-empty"),
    ({"model": MODEL, "max_tokens": 5, "n": 2, "messages": [{"role": "user", "content": "x"}]}, None, 400,
     "n: Extra inputs are not permitted"),
    ({"model": MODEL, "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]}, None,
     400, "temperature"),
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "assistant", "content": "hi"},
                                                    {"role": "user", "content": "x"}]}, None, 400, "first message"),
    ({"model": MODEL, "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_nope", "content": "r"}]}]},
     None, 400, "unexpected `tool_use_id`"),
    ({"model": MODEL, "max_tokens": 5, "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
        {"role": "user", "content": "no result"}]}, None, 400, "without `tool_result`"),
    ({"model": MODEL, "max_tokens": 5, "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]}]},
     None, 400, "tool_result"),
    ({"model": MODEL, "max_tokens": 1000, "thinking": {"type": "enabled", "budget_tokens": 1024},
      "messages": [{"role": "user", "content": "x"}]}, None, 400, "max_tokens"),
])
async def test_rejects_like_the_real_api(http: aiohttp.ClientSession, sim_url: str, body: dict,
                                         hdrs: dict[str, str] | None, status: int, needle: str) -> None:
    got, payload = await post(http, sim_url, body, hdrs if hdrs is not None else headers())
    assert got == status
    assert payload["type"] == "error"
    assert payload["error"]["type"] == ("authentication_error" if status == 401 else "invalid_request_error")
    assert needle in payload["error"]["message"]


async def test_bearer_key_is_accepted(http: aiohttp.ClientSession, sim_url: str) -> None:
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    hdrs = {"authorization": f"Bearer {secrets.token_hex(16)}", "anthropic-version": "2023-06-01"}
    status, _ = await post(http, sim_url, body, hdrs)
    assert status == 200
