"""AnthropicTranslator without sockets: request mapping, recorded streams
and bodies from tests/fixtures/anthropic/, error mapping."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from google.protobuf import struct_pb2

from providers.anthropic import AnthropicTranslator
from providers.anthropic_request import JSON_OBJECT_INSTRUCTION, PLACEHOLDER_USER_TEXT, has_unenforced_keywords
from providers.base import UpstreamProtocolError, UpstreamStreamError
from providers.sse_decode import stream_sse
from switchyard.config import ModelSpec, ProviderSpec
from switchyard.errors import InvalidRequestError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "anthropic"
MODEL = "claude-sonnet-4-5"


def make_translator(key: str | None = None, models: list[ModelSpec] | None = None) -> AnthropicTranslator:
    spec = ProviderSpec(type="anthropic", base_url="https://api.anthropic.test", models=models or [])
    return AnthropicTranslator("claude", spec, key if key is not None else secrets.token_hex(16))


def user(text: str) -> pb.Message:
    return pb.Message(role="user", text=text)


def body_of(request: pb.ChatRequest, model: str = MODEL, *, stream: bool = False,
            translator: AnthropicTranslator | None = None) -> dict:
    upstream = (translator or make_translator()).build_request(request, model, stream=stream)
    return orjson.loads(upstream.body)


def tool(name: str, parameters: dict | None = None) -> pb.Tool:
    schema = parameters or {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    return pb.Tool(type="function", function=pb.FunctionDefinition(
        name=name, description=f"{name} tool", parameters_json=orjson.dumps(schema).decode()))


def call(call_id: str, name: str, arguments: str) -> pb.ToolCall:
    return pb.ToolCall(id=call_id, type="function", function=pb.FunctionCall(name=name, arguments=arguments))


# ------------------------------------------------------------------ request --


def test_headers_url_and_stream_flag() -> None:
    key = secrets.token_hex(16)
    upstream = make_translator(key).build_request(pb.ChatRequest(messages=[user("hi")]), MODEL, stream=True)
    assert upstream.method == "POST"
    assert upstream.url == "https://api.anthropic.test/v1/messages"
    assert upstream.headers["x-api-key"] == key
    assert upstream.headers["anthropic-version"] == "2023-06-01"
    assert upstream.headers["content-type"] == "application/json"
    body = orjson.loads(upstream.body)
    assert body["stream"] is True
    assert body["model"] == MODEL
    assert key not in upstream.body.decode()


def test_system_and_developer_messages_are_lifted() -> None:
    request = pb.ChatRequest(messages=[
        pb.Message(role="system", text="Be brief."),
        pb.Message(role="developer", parts=pb.ContentParts(parts=[pb.ContentPart(text="Use metric units.")])),
        user("Weather?"),
    ])
    body = body_of(request)
    assert body["system"] == [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use metric units."}]
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Weather?"}]}]


def test_consecutive_same_role_turns_are_merged() -> None:
    request = pb.ChatRequest(messages=[user("one"), user("two"), pb.Message(role="assistant", text="a"),
                                       pb.Message(role="assistant", text="b"), user("three")])
    messages = body_of(request)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert [b["text"] for b in messages[0]["content"]] == ["one", "two"]
    assert [b["text"] for b in messages[1]["content"]] == ["a", "b"]


def test_assistant_first_or_system_only_gets_a_user_opener() -> None:
    messages = body_of(pb.ChatRequest(messages=[pb.Message(role="assistant", text="Hello!"), user("hi")]))["messages"]
    assert messages[0] == {"role": "user", "content": [{"type": "text", "text": PLACEHOLDER_USER_TEXT}]}
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    only_system = body_of(pb.ChatRequest(messages=[pb.Message(role="system", text="Say hi")]))
    assert only_system["messages"][0]["role"] == "user"
    assert only_system["system"] == [{"type": "text", "text": "Say hi"}]


def test_tool_calls_and_results_placement() -> None:
    request = pb.ChatRequest(
        messages=[
            user("weather and time in Paris?"),
            pb.Message(role="assistant", text="Checking.", tool_calls=[
                call("toolu_1", "get_weather", '{"city": "Paris"}'), call("toolu_2", "get_time", "")]),
            pb.Message(role="tool", tool_call_id="toolu_1", text="18C"),
            pb.Message(role="tool", tool_call_id="toolu_2",
                       parts=pb.ContentParts(parts=[pb.ContentPart(text="14:00")])),
            user("thanks"),
        ],
        tools=[tool("get_weather"), tool("get_time")],
    )
    messages = body_of(request)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
    ]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "14:00"}]},
        {"type": "text", "text": "thanks"},
    ]


def test_tool_results_come_first_in_their_user_turn() -> None:
    request = pb.ChatRequest(messages=[
        user("go"), pb.Message(role="assistant", tool_calls=[call("toolu_9", "f", "{}")]),
        user("note first"), pb.Message(role="tool", tool_call_id="toolu_9", text="done"),
    ])
    last = body_of(request)["messages"][-1]["content"]
    assert [b["type"] for b in last] == ["tool_result", "text"]


def test_empty_user_message_is_rejected() -> None:
    with pytest.raises(InvalidRequestError) as info:
        body_of(pb.ChatRequest(messages=[user("hi"), pb.Message(role="assistant", text="yes"), user("")]))
    assert info.value.param == "messages[2].content"


def test_invalid_tool_arguments_name_the_param() -> None:
    request = pb.ChatRequest(messages=[
        user("go"), pb.Message(role="assistant", tool_calls=[call("a", "f", "{}"), call("b", "f", "{not json")]),
    ])
    with pytest.raises(InvalidRequestError) as info:
        body_of(request)
    assert info.value.param == "messages[1].tool_calls[1].function.arguments"


def test_images_data_uri_and_url() -> None:
    parts = [pb.ContentPart(text="what is this?"),
             pb.ContentPart(image_url=pb.ImageUrl(url="data:image/png;base64,iVBORw0KGgo=")),
             pb.ContentPart(image_url=pb.ImageUrl(url="https://example.com/cat.jpg", detail="high"))]
    content = body_of(pb.ChatRequest(messages=[pb.Message(role="user", parts=pb.ContentParts(parts=parts))]))[
        "messages"][0]["content"]
    assert content[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                      "data": "iVBORw0KGgo="}}
    assert content[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}


def test_unsupported_image_type_and_audio_are_rejected_with_param() -> None:
    bmp = pb.ContentPart(image_url=pb.ImageUrl(url="data:image/bmp;base64,Qk0="))
    with pytest.raises(InvalidRequestError) as info:
        body_of(pb.ChatRequest(messages=[pb.Message(role="user", parts=pb.ContentParts(parts=[bmp]))]))
    assert info.value.param == "messages[0].content[0]"
    audio = pb.ContentPart(input_audio=pb.InputAudio(data="AAAA", format="wav"))
    with pytest.raises(InvalidRequestError) as info:
        body_of(pb.ChatRequest(messages=[user("x"), pb.Message(role="user", parts=pb.ContentParts(parts=[audio]))]))
    assert info.value.param == "messages[1].content[0]"


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    (pb.ToolChoice(mode="none"), None, {"type": "none"}),
    (pb.ToolChoice(mode="auto"), None, {"type": "auto"}),
    (pb.ToolChoice(mode="required"), None, {"type": "any"}),
    (pb.ToolChoice(function_name="get_time"), None, {"type": "tool", "name": "get_time"}),
    (pb.ToolChoice(mode="required"), False, {"type": "any", "disable_parallel_tool_use": True}),
    (pb.ToolChoice(), False, {"type": "auto", "disable_parallel_tool_use": True}),
    (pb.ToolChoice(), None, None),
])
def test_tool_choice_forms(choice: pb.ToolChoice, parallel: bool | None, expected: dict | None) -> None:
    sampling = pb.Sampling(parallel_tool_calls=parallel) if parallel is not None else pb.Sampling()
    request = pb.ChatRequest(messages=[user("hi")], tools=[tool("get_weather"), tool("get_time")],
                             tool_choice=choice, sampling=sampling)
    body = body_of(request)
    assert body.get("tool_choice") == expected
    assert body["tools"][0] == {"name": "get_weather", "description": "get_weather tool", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_tool_without_parameters_gets_an_empty_object_schema() -> None:
    bare = pb.Tool(type="function", function=pb.FunctionDefinition(name="ping"))
    body = body_of(pb.ChatRequest(messages=[user("hi")], tools=[bare]))
    assert body["tools"] == [{"name": "ping", "input_schema": {"type": "object", "properties": {}}}]


def test_max_tokens_sources() -> None:
    assert body_of(pb.ChatRequest(messages=[user("x")], sampling=pb.Sampling(max_completion_tokens=77,
                                                                             max_tokens=5)))["max_tokens"] == 77
    assert body_of(pb.ChatRequest(messages=[user("x")], sampling=pb.Sampling(max_tokens=5)))["max_tokens"] == 5
    configured = make_translator(models=[ModelSpec(id=MODEL, max_output_tokens=1234)])
    assert body_of(pb.ChatRequest(messages=[user("x")]), translator=configured)["max_tokens"] == 1234
    assert body_of(pb.ChatRequest(messages=[user("x")]), "claude-3-5-haiku-20241022")["max_tokens"] == 8192
    assert body_of(pb.ChatRequest(messages=[user("x")]), "claude-sonnet-4-5", stream=True)["max_tokens"] == 64000
    assert body_of(pb.ChatRequest(messages=[user("x")]), "claude-sonnet-4-5")["max_tokens"] == 21_333
    assert body_of(pb.ChatRequest(messages=[user("x")]), "some-future-model", stream=True)["max_tokens"] == 4096


def test_sampling_stop_and_user() -> None:
    request = pb.ChatRequest(messages=[user("x")], user="end-user-7",
                             sampling=pb.Sampling(temperature=0.3, top_p=0.9, top_k=40, stop=["END", "STOP"]))
    body = body_of(request)
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.3, 0.9, 40)
    assert body["stop_sequences"] == ["END", "STOP"]
    assert body["metadata"] == {"user_id": "end-user-7"}


def test_temperature_above_one_is_rejected() -> None:
    with pytest.raises(InvalidRequestError) as info:
        body_of(pb.ChatRequest(messages=[user("x")], sampling=pb.Sampling(temperature=1.5)))
    assert info.value.param == "temperature"
    assert "0 to 1" in info.value.message


def test_sampling_dropped_for_models_that_reject_it() -> None:
    body = body_of(pb.ChatRequest(messages=[user("x")], sampling=pb.Sampling(temperature=0.2, top_k=5)),
                   "claude-opus-4-7")
    assert "temperature" not in body and "top_k" not in body


def test_logprobs_are_rejected() -> None:
    with pytest.raises(InvalidRequestError) as info:
        body_of(pb.ChatRequest(messages=[user("x")], sampling=pb.Sampling(logprobs=True)))
    assert info.value.param == "logprobs"


def test_reasoning_effort_budget_raises_max_tokens() -> None:
    body = body_of(pb.ChatRequest(messages=[user("x")],
                                  sampling=pb.Sampling(reasoning_effort="medium", max_completion_tokens=1000)))
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert body["max_tokens"] == 5096
    roomy = body_of(pb.ChatRequest(messages=[user("x")],
                                   sampling=pb.Sampling(reasoning_effort="low", max_completion_tokens=9000)))
    assert roomy["thinking"]["budget_tokens"] == 1024
    assert roomy["max_tokens"] == 9000


def test_reasoning_effort_on_adaptive_models_uses_effort() -> None:
    body = body_of(pb.ChatRequest(messages=[user("x")], sampling=pb.Sampling(reasoning_effort="minimal")),
                   "claude-opus-4-7")
    assert body["thinking"] == {"type": "adaptive"}
    assert body["output_config"] == {"effort": "low"}


def test_reasoning_with_forced_tool_is_rejected_before_the_call() -> None:
    request = pb.ChatRequest(messages=[user("x")], tools=[tool("get_time")],
                             tool_choice=pb.ToolChoice(mode="required"), sampling=pb.Sampling(reasoning_effort="low"))
    with pytest.raises(InvalidRequestError) as info:
        body_of(request)
    assert info.value.param == "tool_choice"


def test_extra_thinking_passes_through_with_integers() -> None:
    extra = struct_pb2.Struct()
    extra.update({"thinking": {"type": "enabled", "budget_tokens": 2048}})
    body = body_of(pb.ChatRequest(messages=[user("x")], extra=extra, sampling=pb.Sampling(max_tokens=4000)))
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert isinstance(body["thinking"]["budget_tokens"], int)


def test_unknown_extra_field_is_refused_by_name() -> None:
    extra = struct_pb2.Struct()
    extra.update({"min_p": 0.1})
    with pytest.raises(InvalidRequestError) as info:
        body_of(pb.ChatRequest(messages=[user("x")], extra=extra))
    assert info.value.param == "min_p"


def test_signed_reasoning_is_handed_back_first() -> None:
    assistant = pb.Message(
        role="assistant", text="Let me look.", tool_calls=[call("toolu_1", "get_weather", '{"city":"Oslo"}')],
        reasoning_blocks=[pb.ReasoningBlock(text="Need weather.", signature="sig-abc"),
                          pb.ReasoningBlock(redacted_data="opaque=="),
                          pb.ReasoningBlock(text="unsigned, from another provider")])
    request = pb.ChatRequest(messages=[user("weather in Oslo?"), assistant,
                                       pb.Message(role="tool", tool_call_id="toolu_1", text="-3C")],
                             sampling=pb.Sampling(reasoning_effort="low"))
    content = body_of(request)["messages"][1]["content"]
    assert content[0] == {"type": "thinking", "thinking": "Need weather.", "signature": "sig-abc"}
    assert content[1] == {"type": "redacted_thinking", "data": "opaque=="}
    assert [b["type"] for b in content[2:]] == ["text", "tool_use"]


def test_json_schema_is_native_and_made_strict() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3},
                                               "tags": {"type": "array", "items": {"type": "string"}}},
              "required": ["n"]}
    request = pb.ChatRequest(messages=[user("x")], response_format=pb.ResponseFormat(
        type="json_schema", schema_name="thing", schema_json=orjson.dumps(schema).decode()))
    fmt = body_of(request)["output_config"]["format"]
    assert fmt["type"] == "json_schema"
    assert fmt["schema"]["additionalProperties"] is False
    assert fmt["schema"]["properties"]["n"] == {"type": "integer", "description": "{minimum: 3}"}
    assert fmt["schema"]["required"] == ["n"]
    assert AnthropicTranslator.capabilities.json_schema is True
    assert AnthropicTranslator.capabilities.n is False


def test_json_object_is_asked_for_in_the_system_prompt() -> None:
    body = body_of(pb.ChatRequest(messages=[pb.Message(role="system", text="You list fruit."), user("x")],
                                  response_format=pb.ResponseFormat(type="json_object")))
    assert body["system"][-1] == {"type": "text", "text": JSON_OBJECT_INSTRUCTION}
    assert "output_config" not in body


# --------------------------------------------------------------- responses --


async def _chunks(data: bytes, size: int = 37) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def replay(name: str) -> list[ppb.GenerateEvent]:
    data = (FIXTURES / name).read_bytes()
    return [e async for e in make_translator().stream_events(stream_sse(_chunks(data)), MODEL)]


def deltas(events: list[ppb.GenerateEvent]) -> list[pb.ChoiceDelta]:
    return [d for e in events if e.HasField("chunk") for d in e.chunk.choices]


async def test_stream_text_with_cache_usage() -> None:
    events = await replay("text_stream.sse")
    ds = deltas(events)
    assert ds[0].role == "assistant"
    assert all(not d.role for d in ds[1:])
    assert "".join(d.content for d in ds) == "Hello, world!"
    assert all(d.has_content for d in ds if d.content)
    assert ds[-1].finish_reason == "stop"
    assert events[-1].HasField("usage")
    usage = events[-1].usage
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens) == (2112, 2000, 100)
    assert (usage.completion_tokens, usage.total_tokens) == (6, 2118)


async def test_stream_parallel_tool_use_with_fragmented_input() -> None:
    events = await replay("parallel_tools_stream.sse")
    calls = [t for d in deltas(events) for t in d.tool_calls]
    firsts = [t for t in calls if t.id]
    assert [(t.index, t.id, t.name, t.arguments) for t in firsts] == [
        (0, "toolu_01WeatherCall", "get_weather", ""), (1, "toolu_01TimeCall", "get_time", "")]
    assert all(not t.id and not t.name for t in calls if t.arguments)
    fragments = {i: [t.arguments for t in calls if t.index == i and t.arguments] for i in (0, 1)}
    assert fragments[0] == ['{"city": "Par', 'is", "unit":', ' "celsius"}']
    assert orjson.loads("".join(fragments[1])) == {"timezone": "Europe/Paris"}
    assert "".join(d.content for d in deltas(events)) == "I'll check both."
    assert deltas(events)[-1].finish_reason == "tool_calls"
    assert events[-1].usage.completion_tokens == 89


async def test_stream_thinking_with_signature_and_redacted_block() -> None:
    events = await replay("thinking_stream.sse")
    ds = deltas(events)
    assert "".join(d.reasoning for d in ds) == "The user wants 27 * 453. 27 * 453 = 12231."
    blocks = [b for d in ds for b in d.reasoning_blocks]
    assert blocks[0].text == "The user wants 27 * 453. 27 * 453 = 12231."
    assert blocks[0].signature == "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
    assert blocks[1].redacted_data.startswith("EmwKAhgB")
    assert "".join(d.content for d in ds) == "27 * 453 = 12,231."
    assert events[-1].usage.reasoning_tokens == 95
    assert events[-1].usage.completion_tokens == 120


async def test_stream_without_message_stop_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        await replay("missing_stop_stream.sse")


async def test_stream_error_event_maps_overloaded_to_retryable_503() -> None:
    with pytest.raises(UpstreamStreamError) as info:
        await replay("error_stream.sse")
    error = info.value.error
    assert (error.status, error.type, error.retryable, error.provider) == (503, "api_error", True, "claude")
    assert error.message == "Overloaded"


def test_non_streaming_message_is_one_complete_choice() -> None:
    events = list(make_translator().parse_response((FIXTURES / "message_tool_thinking.json").read_bytes(), MODEL))
    assert [e.WhichOneof("event") for e in events] == ["chunk", "usage"]
    (delta,) = events[0].chunk.choices
    assert (delta.role, delta.content, delta.finish_reason) == ("assistant", "Let me check.", "tool_calls")
    assert delta.reasoning == "I should look up the weather."
    assert delta.reasoning_blocks[0].signature == "EuYBCkQYAiJAsig"
    (tool_call,) = delta.tool_calls
    assert (tool_call.index, tool_call.id, tool_call.name) == (0, "toolu_01A09q90qw90lq917835lq9", "get_weather")
    assert orjson.loads(tool_call.arguments) == {"city": "Paris", "days": 3}
    usage = events[1].usage
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens, usage.completion_tokens) == (
        400, 30, 20, 77)


def test_non_streaming_invalid_json_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        list(make_translator().parse_response(b"<html>bad gateway</html>", MODEL))


# ------------------------------------------------------------------- errors --


def error_body(error_type: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})


@pytest.mark.parametrize(("status", "error_type", "expected"), [
    (400, "invalid_request_error", (400, "invalid_request_error", "invalid_request", False)),
    (401, "authentication_error", (502, "api_error", "upstream_auth_error", True)),
    (403, "permission_error", (502, "api_error", "upstream_auth_error", True)),
    (404, "not_found_error", (404, "invalid_request_error", "model_not_found", False)),
    (413, "request_too_large", (413, "invalid_request_error", "request_too_large", False)),
    (429, "rate_limit_error", (429, "rate_limit_error", "rate_limit_exceeded", True)),
    (500, "api_error", (502, "api_error", "upstream_error", True)),
    (529, "overloaded_error", (503, "api_error", "upstream_overloaded", True)),
])
def test_error_statuses(status: int, error_type: str, expected: tuple) -> None:
    error = make_translator().map_error(status, error_body(error_type, "upstream says no"), {})
    assert (error.status, error.type, error.code, error.retryable) == expected
    assert error.message.endswith("upstream says no")
    assert (error.provider, error.upstream_status) == ("claude", status)


def test_error_param_and_retry_after() -> None:
    translator = make_translator()
    bad = translator.map_error(400, error_body("invalid_request_error", "temperature: range: 0..1"), {})
    assert bad.param == "temperature"
    limited = translator.map_error(429, (FIXTURES / "error_rate_limit.json").read_bytes(), {"retry-after": "7"})
    assert limited.retry_after_ms == 7000
    assert "rate limit" in limited.message
    precise = translator.map_error(429, b"{}", {"retry-after-ms": "1500", "retry-after": "2"})
    assert precise.retry_after_ms == 1500


def test_error_message_never_contains_the_key() -> None:
    key = secrets.token_hex(16)
    error = make_translator(key).map_error(401, error_body("authentication_error", f"invalid x-api-key {key}"), {})
    assert key not in error.message
    assert error.status == 502


def test_error_with_non_json_body_is_not_passed_on() -> None:
    error = make_translator().map_error(502, b"<html>Bad Gateway at lb-3.corp.internal</html>", {})
    assert (error.status, error.retryable) == (502, True)
    assert error.message == "claude answered HTTP 502"


def test_200_with_an_error_body_is_the_upstreams_error() -> None:
    with pytest.raises(UpstreamStreamError) as info:
        list(make_translator().parse_response(error_body("overloaded_error", "Overloaded"), MODEL))
    assert (info.value.error.status, info.value.error.code, info.value.error.message) == (
        503, "upstream_overloaded", "Overloaded")


def test_schema_with_unenforced_bounds_is_validated_afterwards() -> None:
    bounded = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]}
    plain = {"type": "object", "properties": {"s": {"type": "string", "enum": ["a"]}}}
    assert has_unenforced_keywords(bounded) and not has_unenforced_keywords(plain)
    translator = AnthropicTranslator("a", ProviderSpec(type="anthropic", base_url="http://x"), None)
    schema_json = orjson.dumps(bounded).decode()
    request = pb.ChatRequest(response_format=pb.ResponseFormat(type="json_schema", schema_json=schema_json))
    assert translator.needs_output_validation(request)
    request.response_format.schema_json = orjson.dumps(plain).decode()
    assert not translator.needs_output_validation(request)
