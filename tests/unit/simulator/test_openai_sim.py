"""The simulated OpenAI API as the official ``openai`` SDK sees it, the wire
details the SDK hides (chunk sequence, usage: null, error envelopes), the
requests it refuses like the real API, and the vLLM-style compat flavour."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp
import jsonschema
import openai
import orjson
import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel

from simulator import openai as sim
from tests.conftest import SimServer

MODEL = "gpt-4o-mini"
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"},
                                                   "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                  "required": ["city", "days"]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": WEATHER_SCHEMA}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"tz": {"type": "string", "enum": ["UTC", "CET"]}}, "required": ["tz"]}}}
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8cfc0f01f0005000201ab2a3bf10000000049454e44ae426082")).decode()


@pytest.fixture(scope="module")
def server(simulator: SimServer) -> SimServer:
    return simulator


@pytest.fixture
async def client(server: SimServer) -> AsyncIterator[AsyncOpenAI]:
    sdk = AsyncOpenAI(base_url=f"{server.url}/v1", api_key=secrets.token_hex(16), max_retries=0)
    try:
        yield sdk
    finally:
        await sdk.close()


def marker() -> str:
    return "m" + secrets.token_hex(6)


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def post(http: aiohttp.ClientSession, url: str, body: Any, *, key: str | None = "generate",
               raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {secrets.token_hex(16)}" if key == "generate" else key
    async with http.post(url, data=raw if raw is not None else orjson.dumps(body), headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


def sse_payloads(data: bytes) -> list[Any]:
    """Every ``data:`` payload, JSON-decoded where it is JSON."""
    out: list[Any] = []
    for line in data.decode().split("\n"):
        if line.startswith("data: "):
            text = line[6:]
            try:
                out.append(orjson.loads(text))
            except orjson.JSONDecodeError:
                out.append(text)
    return out


# ---------------------------------------------------------------------- sdk --


async def test_create_is_parsed_by_the_sdk(client: AsyncOpenAI) -> None:
    tag = marker()
    completion = await client.chat.completions.create(model=MODEL, messages=ask(f"two answers {tag}"), n=2,
                                                      logprobs=True, top_logprobs=2, seed=7)
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini-2024-07-18"
    assert completion.system_fingerprint and completion.service_tier == "default"
    first, second = completion.choices
    assert (first.index, second.index) == (0, 1)
    assert first.message.content != second.message.content
    assert tag in first.message.content and tag in second.message.content
    assert first.message.refusal is None and first.finish_reason == "stop"
    tokens = first.logprobs.content
    assert "".join(t.token for t in tokens) == first.message.content
    assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].token == t.token for t in tokens)
    assert bytes(tokens[1].bytes).decode() == tokens[1].token
    usage = completion.usage
    words = len(first.message.content.split()) + len(second.message.content.split())
    assert usage.completion_tokens == words
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0


async def test_stream_with_include_usage(client: AsyncOpenAI) -> None:
    prompt = ask(f"stream me {marker()}")
    whole = await client.chat.completions.create(model=MODEL, messages=prompt)
    stream = await client.chat.completions.create(model=MODEL, messages=prompt, stream=True,
                                                  stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    first = chunks[0].choices[0].delta
    assert (first.role, first.content) == ("assistant", "")
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == whole.usage.completion_tokens
    pieces = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert all(len(p.split()) == 1 for p in pieces)
    assert all(p.startswith(" ") for p in pieces[1:])
    assert "".join(pieces) == whole.choices[0].message.content  # deterministic
    finish = chunks[-2].choices[0]
    assert finish.finish_reason == "stop" and finish.delta.content is None


class GetWeather(BaseModel):
    city: str
    days: int


async def test_stream_helper_accumulates_a_tool_call(client: AsyncOpenAI) -> None:
    async with client.chat.completions.stream(
        model=MODEL, messages=ask("please call GetWeather for Oslo"), tools=[openai.pydantic_function_tool(GetWeather)],
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_completion()
    assert kinds.count("tool_calls.function.arguments.delta") >= 3
    assert "tool_calls.function.arguments.done" in kinds
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.function.name == "GetWeather"
    assert isinstance(call.function.parsed_arguments, GetWeather)


class Address(BaseModel):
    city: str
    zip_code: str


class Person(BaseModel):
    name: str
    age: int
    score: float
    active: bool
    role: Literal["admin", "user"]
    tags: list[str]
    address: Address
    nickname: str | None


async def test_parse_with_a_pydantic_response_format(client: AsyncOpenAI) -> None:
    completion = await client.chat.completions.parse(model=MODEL, messages=ask("describe a person"),
                                                     response_format=Person)
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person) and isinstance(person.address, Address)
    assert person.role in ("admin", "user") and person.tags


async def test_sdk_error_classes(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model=MODEL, messages=ask("x"), extra_body={"top_k": 5})
    assert bad.value.message.endswith("Unrecognized request argument supplied: top_k")
    assert bad.value.type == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError) as auth:
        await client.chat.completions.create(model=MODEL, messages=ask("[[sim status=401]]"))
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="gpt-nope", messages=ask("x"))
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model=MODEL, messages=ask("[[sim status=429 retry_after=3]]"))
    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["retry-after"] == "3"
    assert limited.value.response.headers["x-request-id"].startswith("req_")
    with pytest.raises(openai.InternalServerError) as broken:
        await client.chat.completions.create(model=MODEL, messages=ask("[[sim status=500]]"))
    assert broken.value.type == "server_error"


async def test_models_listing(client: AsyncOpenAI, server: SimServer, http: aiohttp.ClientSession) -> None:
    models = await client.models.list()
    assert {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o4-mini"} <= {m.id for m in models.data}
    async with http.get(f"{server.url}/v1/models") as response:
        assert response.status == 401


# ------------------------------------------------------------- rejections --


def with_messages(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": list(messages), **fields}


U = {"role": "user", "content": "hello"}
CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}
STRICT_SCHEMA_BAD = {"type": "json_schema", "json_schema": {"name": "p", "strict": True, "schema": {
    "type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}}}


def image_message(url: str, role: str = "user") -> dict[str, Any]:
    return {"role": role, "content": [{"type": "text", "text": "see"},
                                      {"type": "image_url", "image_url": {"url": url}}]}


REJECTIONS = [
    # name, body, status, param, code, message fragment
    ("unknown_param", with_messages(U, top_k=5), 400, None, None, "Unrecognized request argument supplied: top_k"),
    ("bad_role", with_messages({"role": "wizard", "content": "x"}), 400, "messages[0].role", "invalid_value",
     "Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'."),
    ("orphan_tool", with_messages(U, {"role": "tool", "tool_call_id": "call_1", "content": "r"}), 400,
     "messages.[1].role", None, "must be a response to a preceeding message with 'tool_calls'"),
    ("unanswered_call", with_messages(U, CALL, U), 400, "messages.[1].role", None,
     "did not have response messages: call_1"),
    ("wrong_call_id", with_messages(U, CALL, {"role": "tool", "tool_call_id": "call_9", "content": "r"}), 400,
     "messages.[2].tool_call_id", None, "'call_9' not found"),
    ("missing_model", {"messages": [U]}, 400, None, None, "you must provide a model parameter"),
    ("missing_messages", {"model": MODEL}, 400, "messages", "missing_required_parameter", "'messages'"),
    ("empty_messages", with_messages(), 400, "messages", "empty_array", "empty array"),
    ("missing_content", with_messages({"role": "user"}), 400, "messages[0].content", "missing_required_parameter",
     "messages[0].content"),
    ("temperature", with_messages(U, temperature=2.5), 400, "temperature", "decimal_above_max_value", "<= 2"),
    ("top_p", with_messages(U, top_p=-0.1), 400, "top_p", "decimal_below_min_value", ">= 0"),
    ("penalty", with_messages(U, presence_penalty=-3), 400, "presence_penalty", "decimal_below_min_value", ">= -2"),
    ("n_zero", with_messages(U, n=0), 400, "n", "integer_below_min_value", ">= 1"),
    ("n_type", with_messages(U, n="2"), 400, "n", "invalid_type", "expected an integer, but got a string"),
    ("top_logprobs_alone", with_messages(U, top_logprobs=2), 400, "top_logprobs", "invalid_value", "logprobs"),
    ("top_logprobs_high", with_messages(U, logprobs=True, top_logprobs=21), 400, "top_logprobs",
     "integer_above_max_value", "<= 20"),
    ("max_tokens_zero", with_messages(U, max_tokens=0), 400, "max_tokens", "integer_below_min_value", ">= 1"),
    ("user_too_long", with_messages(U, user="u" * 257), 400, "user", "string_above_max_length", "257"),
    ("stop_too_many", with_messages(U, stop=["a", "b", "c", "d", "e"]), 400, "stop", "array_above_max_length",
     "maximum length 4"),
    ("stream_options_alone", with_messages(U, stream_options={"include_usage": True}), 400, "stream_options",
     "invalid_value", "only allowed when 'stream' is enabled"),
    ("image_no_prefix", with_messages(image_message("ftp://x/y.png")), 400, "messages[0].content[1].image_url.url",
     "invalid_value", "without the 'data:' prefix"),
    ("image_bad_mime", with_messages(image_message("data:text/plain;base64,aGk=")), 400,
     "messages[0].content[1].image_url.url", "invalid_value", "unsupported MIME type 'text/plain'"),
    ("image_not_base64", with_messages(image_message("data:image/png;base64,***")), 400,
     "messages[0].content[1].image_url.url", "invalid_image_format", "unsupported image"),
    ("image_not_an_image", with_messages(image_message("data:image/png;base64,aGVsbG8=")), 400,
     "messages[0].content[1].image_url.url", "invalid_image_format", "unsupported image"),
    ("image_in_system", with_messages(image_message(f"data:image/png;base64,{PNG}", "system"), U), 400,
     "messages[0]", "invalid_value", "only allowed for messages with role 'user'"),
    ("bad_part_type", with_messages({"role": "user", "content": [{"type": "video", "video": "x"}]}), 400,
     "messages[0].content[0].type", "invalid_value", "Invalid value: 'video'"),
    ("json_object_without_json", with_messages(U, response_format={"type": "json_object"}), 400, "messages", None,
     "must contain the word 'json'"),
    ("strict_schema", with_messages(U, response_format=STRICT_SCHEMA_BAD), 400, "response_format",
     "invalid_json_schema", "'additionalProperties' is required to be supplied and to be false"),
    ("schema_without_name", with_messages(U, response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
     400, "response_format.json_schema.name", "missing_required_parameter", "json_schema.name"),
    ("tool_choice_without_tools", with_messages(U, tool_choice="auto"), 400, "tool_choice", None,
     "only allowed when 'tools' are specified"),
    ("tool_choice_unknown", with_messages(U, tools=[WEATHER], tool_choice={"type": "function",
                                                                           "function": {"name": "nope"}}),
     400, "tool_choice", "invalid_value", "'nope'"),
    ("tool_name", with_messages(U, tools=[{"type": "function", "function": {"name": "bad name!"}}]), 400,
     "tools[0].function.name", "invalid_value", "does not match pattern"),
    ("o_series_max_tokens", {**with_messages(U, max_tokens=10), "model": "o4-mini"}, 400, "max_tokens",
     "unsupported_parameter", "Use 'max_completion_tokens' instead."),
    ("o_series_temperature", {**with_messages(U, temperature=0.2), "model": "o4-mini"}, 400, "temperature",
     "unsupported_value", "Only the default (1) value is supported."),
    ("reasoning_effort", with_messages(U, reasoning_effort="extreme"), 400, "reasoning_effort", "invalid_value",
     "'extreme'"),
    ("unknown_model", {**with_messages(U), "model": "gpt-99"}, 404, None, "model_not_found",
     "The model `gpt-99` does not exist"),
]


@pytest.mark.parametrize(("body", "status", "param", "code", "fragment"), [r[1:] for r in REJECTIONS],
                         ids=[r[0] for r in REJECTIONS])
async def test_rejected_like_the_real_api(server: SimServer, http: aiohttp.ClientSession, body: dict, status: int,
                                          param: str | None, code: str | None, fragment: str) -> None:
    tag = marker()
    body = {**body, "metadata": {"tag": tag}}
    got, _, raw = await post(http, f"{server.url}/v1/chat/completions", body)
    error = orjson.loads(raw)["error"]
    assert got == status, error
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code)
    assert fragment in error["message"]
    assert len(server.recorder.matching(tag)) == 1  # recorded before answering


async def test_valid_image_is_accepted(client: AsyncOpenAI) -> None:
    for url in (f"data:image/png;base64,{PNG}", "https://example.com/cat.png"):
        completion = await client.chat.completions.create(model=MODEL, messages=[image_message(url)])
        assert completion.usage.prompt_tokens >= sim.IMAGE_TOKENS


@pytest.mark.parametrize("authorization", [None, "", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer"])
async def test_missing_or_malformed_auth_is_401(server: SimServer, http: aiohttp.ClientSession,
                                                authorization: str | None) -> None:
    status, _, raw = await post(http, f"{server.url}/v1/chat/completions", with_messages(U), key=authorization)
    assert status == 401
    error = orjson.loads(raw)["error"]
    assert error["code"] == "invalid_api_key" and "API key" in error["message"]


async def test_invalid_json_body(server: SimServer, http: aiohttp.ClientSession) -> None:
    status, _, raw = await post(http, f"{server.url}/v1/chat/completions", None, raw=b'{"model": "gpt-4o", ')
    assert status == 400
    assert orjson.loads(raw)["error"]["message"].startswith("We could not parse the JSON body")


# --------------------------------------------------------------- wire format --


async def test_raw_stream_sequence_with_usage(server: SimServer, http: aiohttp.ClientSession) -> None:
    body = with_messages({"role": "user", "content": "one two [[sim cached_tokens=3]]"}, stream=True,
                         stream_options={"include_usage": True})
    status, headers, raw = await post(http, f"{server.url}/v1/chat/completions", body)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    payloads = sse_payloads(raw)
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    assert all(c["obfuscation"] and c["system_fingerprint"] for c in chunks)
    assert chunks[-2]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 3, "audio_tokens": 0}
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert usage["completion_tokens"] == len(contents)


async def test_raw_stream_without_usage_has_no_usage_field(server: SimServer, http: aiohttp.ClientSession) -> None:
    _, _, raw = await post(http, f"{server.url}/v1/chat/completions", with_messages(U, stream=True))
    chunks = sse_payloads(raw)[:-1]
    assert chunks and all("usage" not in c for c in chunks)


async def test_raw_tool_call_stream(server: SimServer, http: aiohttp.ClientSession) -> None:
    body = with_messages({"role": "user", "content": "call get_weather"}, tools=[WEATHER], stream=True)
    _, _, raw = await post(http, f"{server.url}/v1/chat/completions", body)
    chunks = sse_payloads(raw)[:-1]
    head = chunks[0]["choices"][0]["delta"]
    assert head["role"] == "assistant" and head["content"] is None
    (call,) = head["tool_calls"]
    assert call["index"] == 0 and call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": ""}
    fragments = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:-1]]
    assert len(fragments) >= 3 and all(set(f) == {"index", "function"} for f in fragments)
    jsonschema.validate(json.loads("".join(f["function"]["arguments"] for f in fragments)), WEATHER_SCHEMA)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_in_band_error_and_malformed_frames(server: SimServer, http: aiohttp.ClientSession) -> None:
    body = with_messages({"role": "user", "content": "a b c d [[sim error_after=2]]"}, stream=True)
    _, _, raw = await post(http, f"{server.url}/v1/chat/completions", body)
    payloads = sse_payloads(raw)
    assert payloads[-1] == {"error": {"message": "The server had an error while processing your request. Sorry "
                                                 "about that!", "type": "server_error", "param": None, "code": None}}
    assert "[DONE]" not in payloads
    body = with_messages({"role": "user", "content": "a b c d [[sim malformed_after=1]]"}, stream=True)
    _, _, raw = await post(http, f"{server.url}/v1/chat/completions", body)
    assert sum(1 for p in sse_payloads(raw) if isinstance(p, str) and p != "[DONE]") == 1


# ----------------------------------------------------------------- behaviour --


async def test_stop_length_and_seed(client: AsyncOpenAI) -> None:
    stopped = await client.chat.completions.create(model=MODEL, messages=ask("alpha beta gamma delta"),
                                                   stop="gamma", seed=1)
    assert stopped.choices[0].message.content.endswith("alpha beta")
    assert stopped.choices[0].finish_reason == "stop"
    cut = await client.chat.completions.create(model=MODEL, messages=ask("alpha beta gamma delta"),
                                               max_completion_tokens=2)
    assert cut.choices[0].message.content == "Simulated answer"
    assert (cut.choices[0].finish_reason, cut.usage.completion_tokens) == ("length", 2)


async def test_tool_choices(client: AsyncOpenAI) -> None:
    both = await client.chat.completions.create(model=MODEL, messages=ask("use get_weather and get_time"),
                                                tools=[WEATHER, TIME])
    assert [c.function.name for c in both.choices[0].message.tool_calls] == ["get_weather", "get_time"]
    single = await client.chat.completions.create(model=MODEL, messages=ask("use get_weather and get_time"),
                                                  tools=[WEATHER, TIME], parallel_tool_calls=False)
    assert [c.function.name for c in single.choices[0].message.tool_calls] == ["get_weather"]
    named = await client.chat.completions.create(model=MODEL, messages=ask("hello"), tools=[WEATHER, TIME],
                                                 tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert named.choices[0].message.tool_calls[0].function.name == "get_time"
    assert named.choices[0].finish_reason == "stop"  # the real API's finish for a call forced by name
    required = await client.chat.completions.create(model=MODEL, messages=ask("hello"), tools=[WEATHER],
                                                    tool_choice="required")
    assert required.choices[0].finish_reason == "tool_calls"
    none = await client.chat.completions.create(model=MODEL, messages=ask("get_weather"), tools=[WEATHER],
                                                tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content


async def test_tool_result_is_quoted(client: AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(model=MODEL, tools=[WEATHER], messages=[
        {"role": "user", "content": "weather?"}, CALL,
        {"role": "tool", "tool_call_id": "call_1", "content": "rainy-and-12C"}])
    assert "rainy-and-12C" in completion.choices[0].message.content


async def test_scripts_can_target_one_model(client: AsyncOpenAI) -> None:
    prompt = ask("fallback please [[sim status=503 model=gpt-4o]]")
    with pytest.raises(openai.InternalServerError) as info:
        await client.chat.completions.create(model="gpt-4o", messages=prompt)
    assert info.value.status_code == 503
    other = await client.chat.completions.create(model=MODEL, messages=prompt)
    assert "fallback please" in other.choices[0].message.content


async def test_reasoning_directive_on_the_strict_flavour(client: AsyncOpenAI) -> None:
    plain = await client.chat.completions.create(model="gpt-4o", messages=ask("hi [[sim reasoning=4]]"))
    assert plain.usage.completion_tokens_details.reasoning_tokens == 0
    thinking = await client.chat.completions.create(model="o4-mini", messages=ask("hi [[sim reasoning=4]]"),
                                                    reasoning_effort="low")
    assert thinking.usage.completion_tokens_details.reasoning_tokens == 4
    assert thinking.usage.completion_tokens == 4 + len(thinking.choices[0].message.content.split())
    assert "reasoning_content" not in thinking.choices[0].message.model_dump()


# -------------------------------------------------------------------- compat --


async def test_compat_accepts_any_model_extras_and_no_key(server: SimServer, http: aiohttp.ClientSession) -> None:
    body = {"model": "my/local-model", "messages": [U], "top_k": 20, "min_p": 0.1, "repetition_penalty": 1.1,
            "chat_template_kwargs": {"enable_thinking": True}, "xtc_threshold": 0.1, "thinking_budget": 64,
            "structured_outputs": {"choice": ["a"]}, "some_future_field": True}
    status, _, raw = await post(http, f"{server.url}/compat/v1/chat/completions", body, key=None)
    assert status == 200
    answer = orjson.loads(raw)
    assert answer["model"] == "my/local-model"
    message = answer["choices"][0]["message"]
    assert message["reasoning_content"] is None and message["tool_calls"] == []
    assert answer["choices"][0]["stop_reason"] is None


@pytest.mark.parametrize(("field", "value"), [("top_k", "many"), ("top_k", 1.5), ("min_p", "low"),
                                              ("chat_template_kwargs", "x"), ("xtc_probability", [1]),
                                              ("thinking_budget", True)])
async def test_compat_rejects_wrong_extra_types_in_vllm_shape(server: SimServer, http: aiohttp.ClientSession,
                                                               field: str, value: Any) -> None:
    status, _, raw = await post(http, f"{server.url}/compat/v1/chat/completions",
                                {"model": "m", "messages": [U], field: value}, key=None)
    assert status == 400
    error = orjson.loads(raw)["error"]
    assert (error["type"], error["code"], error["param"]) == ("BadRequestError", 400, field)


async def test_compat_reasoning_content(server: SimServer, http: aiohttp.ClientSession) -> None:
    body = {"model": "qwen3", "messages": [{"role": "user", "content": "why [[sim reasoning=3]]"}]}
    _, _, raw = await post(http, f"{server.url}/compat/v1/chat/completions", body, key=None)
    answer = orjson.loads(raw)
    assert answer["choices"][0]["message"]["reasoning_content"] == "Thinking about why"
    assert answer["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    _, _, raw = await post(http, f"{server.url}/compat/v1/chat/completions", {**body, "stream": True}, key=None)
    chunks = sse_payloads(raw)[:-1]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert [d.get("reasoning_content") for d in deltas[1:4]] == ["Thinking", " about", " why"]
    assert "content" in deltas[4] and "reasoning_content" not in deltas[4]
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {"content": ""}, "logprobs": None,
                                        "finish_reason": "stop", "stop_reason": None}
    assert all("obfuscation" not in c for c in chunks)


async def test_compat_tool_call_stream_head_has_no_arguments(server: SimServer, http: aiohttp.ClientSession) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "call get_weather"}], "tools": [WEATHER],
            "stream": True}
    _, _, raw = await post(http, f"{server.url}/compat/v1/chat/completions", body, key=None)
    head = sse_payloads(raw)[1]["choices"][0]["delta"]["tool_calls"][0]
    assert head["id"].startswith("chatcmpl-tool-") and head["function"] == {"name": "get_weather"}


async def test_compat_models_listing(server: SimServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.url}/compat/v1/models") as response:
        listing = await response.json()
    assert listing["object"] == "list" and listing["data"][0]["owned_by"] == "vllm"


# ---------------------------------------------------------- schema instances --


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"},
                                      "mail": {"type": "string", "format": "email"},
                                      "code": {"type": "string", "minLength": 12, "maxLength": 14}},
     "required": ["when", "mail", "code"]},
    {"type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": 10, "maximum": 12},
                                      "x": {"type": "number", "multipleOf": 0.25, "minimum": 3.1},
                                      "items": {"type": "array", "items": {"type": "boolean"}, "minItems": 3,
                                                "maxItems": 3}}},
    {"allOf": [{"$ref": "#/definitions/base"}, {"properties": {"extra": {"const": 7}}, "required": ["extra"]}],
     "definitions": {"base": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}}},
    {"type": "object", "properties": {"pair": {"type": "array", "prefixItems": [{"type": "string"},
                                                                               {"type": "integer"}]},
                                      "choice": {"oneOf": [{"type": "null"}, {"enum": ["x", "y"]}]}},
     "required": ["pair", "choice"]},
])
def test_instances_validate_against_their_schema(schema: dict) -> None:
    for variant in range(3):
        jsonschema.validate(sim.instance_for(schema, variant), schema)
