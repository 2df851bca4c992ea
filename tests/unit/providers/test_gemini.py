"""GeminiTranslator without a socket: request mapping, recorded streams and
bodies from tests/fixtures/gemini, error mapping."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from google.protobuf import struct_pb2
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from providers.base import UpstreamProtocolError, UpstreamStreamError
from providers.gemini import GeminiTranslator
from providers.gemini_request import SKIP_SIGNATURE
from providers.gemini_stream import finish_reason
from providers.sse_decode import stream_sse
from switchyard.catalogue import cost_usd, price_for
from switchyard.config import ProviderSpec
from switchyard.errors import InvalidRequestError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "gemini"
BASE = "https://generativelanguage.googleapis.com"


@pytest.fixture
def key() -> str:
    return secrets.token_hex(16)


@pytest.fixture
def translator(key: str) -> GeminiTranslator:
    return GeminiTranslator("google", ProviderSpec(type="gemini", base_url=BASE), key)


def user(text: str) -> pb.Message:
    return pb.Message(role="user", text=text)


def body_of(translator: GeminiTranslator, request: pb.ChatRequest, model: str = "gemini-2.5-flash") -> dict:
    return orjson.loads(translator.build_request(request, model, stream=False).body)


def call(call_id: str, name: str, arguments: str, signature: str = "") -> pb.ToolCall:
    return pb.ToolCall(id=call_id, type="function", function=pb.FunctionCall(name=name, arguments=arguments),
                       signature=signature)


async def replay(translator: GeminiTranslator, name: str) -> list[ppb.GenerateEvent]:
    async def chunks() -> AsyncIterator[bytes]:
        data = (FIXTURES / name).read_bytes()
        for i in range(0, len(data), 37):  # odd-sized pieces, as a network would deliver them
            yield data[i: i + 37]
    return [e async for e in translator.stream_events(stream_sse(chunks()), "gemini-2.5-flash")]


def deltas(events: list[ppb.GenerateEvent], index: int = 0) -> list[pb.ChoiceDelta]:
    return [d for e in events if e.HasField("chunk") for d in e.chunk.choices if d.index == index]


def usages(events: list[ppb.GenerateEvent]) -> list[pb.Usage]:
    return [e.usage for e in events if e.HasField("usage")]


# ------------------------------------------------------------------ request --


def test_url_carries_model_and_method_and_key_only_in_header(translator: GeminiTranslator, key: str) -> None:
    request = pb.ChatRequest(messages=[user("hi")])
    plain = translator.build_request(request, "gemini-2.5-flash", stream=False)
    streamed = translator.build_request(request, "gemini-2.5-flash", stream=True)
    assert plain.url == f"{BASE}/v1beta/models/gemini-2.5-flash:generateContent"
    assert streamed.url == f"{BASE}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert plain.headers["x-goog-api-key"] == key
    assert key not in plain.url and key not in streamed.url and key.encode() not in plain.body


def test_base_url_with_version_is_not_doubled(key: str) -> None:
    translator = GeminiTranslator("g", ProviderSpec(type="gemini", base_url=f"{BASE}/v1beta/"), key)
    upstream = translator.build_request(pb.ChatRequest(messages=[user("hi")]), "models/gemini-2.5-pro", stream=False)
    assert upstream.url == f"{BASE}/v1beta/models/gemini-2.5-pro:generateContent"


def test_system_and_developer_become_system_instruction_and_roles_map(translator: GeminiTranslator) -> None:
    request = pb.ChatRequest(messages=[
        pb.Message(role="system", text="Be terse."),
        user("first"),
        pb.Message(role="assistant", text="answer one"),
        pb.Message(role="developer", text="Use French."),
        user("second"),
        user("third"),
    ])
    body = body_of(translator, request)
    assert body["systemInstruction"] == {"parts": [{"text": "Be terse."}, {"text": "Use French."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][2]["parts"] == [{"text": "second"}, {"text": "third"}]
    assert "generationConfig" not in body


def test_only_system_messages_is_an_invalid_request(translator: GeminiTranslator) -> None:
    with pytest.raises(InvalidRequestError) as info:
        body_of(translator, pb.ChatRequest(messages=[pb.Message(role="system", text="x")]))
    assert info.value.param == "messages"


def test_sampling_maps_to_generation_config(translator: GeminiTranslator) -> None:
    sampling = pb.Sampling(temperature=0.3, top_p=0.9, top_k=40, max_tokens=100, max_completion_tokens=50, seed=7,
                           presence_penalty=0.5, frequency_penalty=-0.5, n=3, stop=["END", "STOP"], logprobs=True,
                           top_logprobs=4)
    config = body_of(translator, pb.ChatRequest(messages=[user("hi")], sampling=sampling))["generationConfig"]
    assert config == {"temperature": 0.3, "topP": 0.9, "topK": 40, "seed": 7, "presencePenalty": 0.5,
                      "frequencyPenalty": -0.5, "maxOutputTokens": 50, "stopSequences": ["END", "STOP"],
                      "candidateCount": 3, "responseLogprobs": True, "logprobs": 4}


def test_logit_bias_is_refused_with_its_param(translator: GeminiTranslator) -> None:
    request = pb.ChatRequest(messages=[user("hi")], sampling=pb.Sampling(logit_bias={"50256": -100}))
    with pytest.raises(InvalidRequestError) as info:
        body_of(translator, request)
    assert info.value.param == "logit_bias"


@pytest.mark.parametrize(("choice", "expected"), [
    (pb.ToolChoice(mode="none"), {"mode": "NONE"}),
    (pb.ToolChoice(mode="auto"), {"mode": "AUTO"}),
    (pb.ToolChoice(mode="required"), {"mode": "ANY"}),
    (pb.ToolChoice(function_name="get_time"), {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
])
def test_tool_choice_modes(translator: GeminiTranslator, choice: pb.ToolChoice, expected: dict) -> None:
    schema = '{"type":"object","properties":{"city":{"type":"string"}},"additionalProperties":false}'
    tool = pb.Tool(type="function", function=pb.FunctionDefinition(name="get_time", description="Time.",
                                                                   parameters_json=schema))
    body = body_of(translator, pb.ChatRequest(messages=[user("hi")], tools=[tool], tool_choice=choice))
    assert body["toolConfig"] == {"functionCallingConfig": expected}
    assert body["tools"] == [{"functionDeclarations": [
        {"name": "get_time", "description": "Time.", "parametersJsonSchema": orjson.loads(schema)}]}]


def test_tool_history_round_trips_names_arguments_and_signatures(translator: GeminiTranslator) -> None:
    request = pb.ChatRequest(messages=[
        user("weather and time?"),
        pb.Message(role="assistant", tool_calls=[
            call("call_a", "get_weather", '{"city": "Paris", "days": 2}', signature="c2lnLWE="),
            call("call_b", "get_time", '{"zone":"CET"}'),
        ]),
        pb.Message(role="tool", tool_call_id="call_b", text="12:00"),
        pb.Message(role="tool", tool_call_id="call_a", text='{"temp": 21}'),
    ])
    contents = body_of(translator, request)["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris", "days": 2}}, "thoughtSignature": "c2lnLWE="},
        {"functionCall": {"name": "get_time", "args": {"zone": "CET"}}},
    ]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_time", "response": {"result": "12:00"}}},
        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
    ]


def test_gemini3_unsigned_replayed_call_gets_the_skip_signature(translator: GeminiTranslator) -> None:
    request = pb.ChatRequest(messages=[
        user("time?"), pb.Message(role="assistant", tool_calls=[call("call_x", "get_time", "{}")]),
        pb.Message(role="tool", tool_call_id="call_x", text="noon"),
    ])
    flash = body_of(translator, request)["contents"][1]["parts"][0]
    three = body_of(translator, request, "gemini-3-pro-preview")["contents"][1]["parts"][0]
    assert "thoughtSignature" not in flash
    assert three["thoughtSignature"] == SKIP_SIGNATURE


def test_tool_result_for_an_unknown_call_is_refused(translator: GeminiTranslator) -> None:
    request = pb.ChatRequest(messages=[user("x"), pb.Message(role="tool", tool_call_id="call_nope", text="1")])
    with pytest.raises(InvalidRequestError) as info:
        body_of(translator, request)
    assert info.value.param == "messages[1].tool_call_id"


def test_invalid_tool_call_arguments_are_refused(translator: GeminiTranslator) -> None:
    request = pb.ChatRequest(messages=[user("x"), pb.Message(role="assistant", tool_calls=[call("c", "f", "[1,")])])
    with pytest.raises(InvalidRequestError) as info:
        body_of(translator, request)
    assert info.value.param == "messages[1].tool_calls[0].function.arguments"


def test_images_inline_and_by_url(translator: GeminiTranslator) -> None:
    parts = pb.ContentParts(parts=[
        pb.ContentPart(text="What is this?"),
        pb.ContentPart(image_url=pb.ImageUrl(url="data:image/png;base64,iVBORw0KGgo=")),
        pb.ContentPart(image_url=pb.ImageUrl(url="https://example.com/cat.webp?size=2")),
        pb.ContentPart(image_url=pb.ImageUrl(url="https://example.com/photo")),
    ])
    body = body_of(translator, pb.ChatRequest(messages=[pb.Message(role="user", parts=parts)]))
    assert body["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?size=2"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}},
    ]


@pytest.mark.parametrize(("model", "effort", "expected"), [
    ("gemini-2.5-flash", "low", {"thinkingBudget": 1024, "includeThoughts": True}),
    ("gemini-2.5-flash", "medium", {"thinkingBudget": 8192, "includeThoughts": True}),
    ("gemini-2.5-pro", "high", {"thinkingBudget": 24576, "includeThoughts": True}),
    ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
    ("gemini-3-pro-preview", "low", {"thinkingLevel": "LOW", "includeThoughts": True}),
    ("gemini-3-pro-preview", "medium", {"thinkingLevel": "HIGH", "includeThoughts": True}),
    ("gemini-3-flash-preview", "minimal", {"thinkingLevel": "MINIMAL", "includeThoughts": True}),
    ("gemini-3.1-pro-preview", "medium", {"thinkingLevel": "MEDIUM", "includeThoughts": True}),
    ("gemini-3.1-pro-preview", "minimal", {"thinkingLevel": "LOW", "includeThoughts": True}),
    ("gemini-3.8-flash", "minimal", {"thinkingLevel": "LOW", "includeThoughts": True}),
    ("gemini-3.1-flash-lite", "none", {"thinkingLevel": "MINIMAL"}),
    ("gemini-2.0-flash", "high", None),
])
def test_reasoning_effort_becomes_thinking_config(translator: GeminiTranslator, model: str, effort: str,
                                                  expected: dict | None) -> None:
    request = pb.ChatRequest(messages=[user("hi")], sampling=pb.Sampling(reasoning_effort=effort))
    config = body_of(translator, request, model).get("generationConfig", {})
    assert config.get("thinkingConfig") == expected


def test_json_object_and_json_schema(translator: GeminiTranslator) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    obj = pb.ChatRequest(messages=[user("hi")], response_format=pb.ResponseFormat(type="json_object"))
    sch = pb.ChatRequest(messages=[user("hi")], response_format=pb.ResponseFormat(
        type="json_schema", schema_name="n", schema_json=orjson.dumps(schema).decode()))
    assert body_of(translator, obj)["generationConfig"] == {"responseMimeType": "application/json"}
    assert body_of(translator, sch)["generationConfig"] == {"responseMimeType": "application/json",
                                                            "responseJsonSchema": schema}


def test_extra_fields_pass_through_with_integers_kept(translator: GeminiTranslator) -> None:
    extra = struct_pb2.Struct()
    extra.update({"thinking_config": {"thinking_budget": 2048, "include_thoughts": True},
                  "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]})
    body = body_of(translator, pb.ChatRequest(messages=[user("hi")], extra=extra))
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 2048, "includeThoughts": True}
    assert body["safetySettings"] == [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]


# ---------------------------------------------------------------- responses --


def test_non_streaming_text_reasoning_logprobs_and_usage(translator: GeminiTranslator) -> None:
    events = list(translator.parse_response((FIXTURES / "response_text.json").read_bytes(), "gemini-2.5-flash"))
    [delta] = deltas(events)
    assert (delta.role, delta.content, delta.has_content, delta.finish_reason) == \
        ("assistant", "Hello! How can I help?", True, "stop")
    assert delta.reasoning == "Thinking about greetings."
    logprobs = orjson.loads(delta.logprobs_json)
    assert [t["token"] for t in logprobs["content"]] == ["Hello", "!"]
    assert logprobs["content"][0]["top_logprobs"][1] == {"token": "Hi", "logprob": -2.4, "bytes": list(b"Hi")}
    [usage] = usages(events)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (25, 16, 41)
    assert (usage.cached_tokens, usage.reasoning_tokens, usage.cost_usd) == (16, 10, 0)
    assert events[-1].HasField("usage")


def test_cached_tokens_are_billed_at_the_cached_rate(translator: GeminiTranslator) -> None:
    events = list(translator.parse_response((FIXTURES / "response_text.json").read_bytes(), "gemini-2.5-flash"))
    [usage] = usages(events)
    pricing = price_for("gemini", "gemini-2.5-flash", None)
    expected = (9 * 0.3 + 16 * 0.03 + 16 * 2.5) / 1_000_000  # 25 prompt tokens of which 16 cached; 16 completion
    assert cost_usd(pricing, usage) == pytest.approx(expected)


def test_non_streaming_function_call_keeps_argument_order_and_signature(translator: GeminiTranslator) -> None:
    events = list(translator.parse_response((FIXTURES / "response_function_call.json").read_bytes(), "m"))
    [delta] = deltas(events)
    [tool_call] = delta.tool_calls
    assert delta.finish_reason == "tool_calls" and not delta.has_content
    assert tool_call.id.startswith("call_") and len(tool_call.id) > 10
    assert (tool_call.index, tool_call.name) == (0, "lookup")
    assert tool_call.arguments == '{"zeta":1,"alpha":{"b":[1,2],"a":"x"}}'
    assert tool_call.signature == "CiQBVKhc7nNpZy1sb29rdXA="


def test_prompt_blocked_without_candidates_is_content_filter(translator: GeminiTranslator) -> None:
    body = orjson.dumps({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}})
    [delta] = deltas(list(translator.parse_response(body, "m")))
    assert (delta.content, delta.has_content, delta.finish_reason) == ("", True, "content_filter")


async def test_stream_text_uses_last_usage(translator: GeminiTranslator) -> None:
    events = await replay(translator, "stream_text.sse")
    ds = deltas(events)
    assert "".join(d.content for d in ds) == "The capital of France is Paris."
    assert [d.role for d in ds] == ["assistant", "", "", ""]
    # The finish reason comes in a delta of its own, as OpenAI sends it.
    assert [d.finish_reason for d in ds] == ["", "", "", "stop"]
    assert all(d.has_content for d in ds[:-1]) and not ds[-1].content
    [usage] = usages(events)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.cached_tokens) == (12, 7, 19, 8)


async def test_stream_parallel_calls_with_thoughts_and_signature(translator: GeminiTranslator) -> None:
    events = await replay(translator, "stream_parallel_calls.sse")
    ds = deltas(events)
    assert ds[0].reasoning.startswith("**Planning the lookups**") and ds[0].role == "assistant"
    calls = [t for d in ds for t in d.tool_calls]
    # OpenAI's order: each call's name (with empty arguments), then its arguments; then the finish alone.
    assert [(t.index, t.name, bool(t.id), bool(t.arguments)) for t in calls] == [
        (0, "get_weather", True, False), (0, "", False, True), (1, "get_time", True, False), (1, "", False, True)]
    assert [orjson.loads(t.arguments) for t in calls[1::2]] == [{"city": "Paris", "unit": "celsius"},
                                                                {"zone": "Europe/Paris"}]
    assert calls[0].signature == "CiQBVKhc7mZ0aG91Z2h0LXNpZ25hdHVyZS1hYmM=" and calls[2].signature == ""
    assert calls[0].id != calls[2].id
    assert ds[-1].finish_reason == "tool_calls" and not ds[-1].tool_calls
    assert all(not d.finish_reason for d in ds[:-1])
    [usage] = usages(events)
    assert (usage.completion_tokens, usage.reasoning_tokens) == (48, 30)


async def test_stream_text_signature_becomes_reasoning_block(translator: GeminiTranslator) -> None:
    ds = deltas(await replay(translator, "stream_text_signature.sse"))
    assert "".join(d.reasoning for d in ds) == "Let me add them."
    assert "".join(d.content for d in ds) == "2 + 2 = 4"
    blocks = [b for d in ds for b in d.reasoning_blocks]
    assert [b.signature for b in blocks] == ["EhsKGXNpbXVsYXRlZC10aG91Z2h0LXNpZ25hdHVyZQ=="]
    assert ds[-1].finish_reason == "stop"


async def test_stream_safety_stop_is_content_filter(translator: GeminiTranslator) -> None:
    ds = deltas(await replay(translator, "stream_safety.sse"))
    assert "".join(d.content for d in ds) == "Here is how"
    assert ds[-1].finish_reason == "content_filter"


async def test_stream_prompt_blocked(translator: GeminiTranslator) -> None:
    events = await replay(translator, "stream_prompt_blocked.sse")
    [delta] = deltas(events)
    assert (delta.role, delta.has_content, delta.finish_reason) == ("assistant", True, "content_filter")
    assert usages(events)[0].prompt_tokens == 11


async def test_stream_two_candidates_default_index(translator: GeminiTranslator) -> None:
    events = await replay(translator, "stream_two_candidates.sse")
    assert "".join(d.content for d in deltas(events, 0)) == "Red apple"
    assert "".join(d.content for d in deltas(events, 1)) == "Blue sky"
    assert deltas(events, 0)[-1].finish_reason == "stop"
    assert deltas(events, 1)[-1].finish_reason == "length"
    assert [bool(d.role) for d in deltas(events, 1)] == [True] + [False] * (len(deltas(events, 1)) - 1)


async def test_stream_without_finish_reason_is_a_protocol_error(translator: GeminiTranslator) -> None:
    with pytest.raises(UpstreamProtocolError):
        await replay(translator, "stream_no_finish.sse")


async def _events_from(translator: GeminiTranslator, raw: bytes) -> list[ppb.GenerateEvent]:
    async def chunks() -> AsyncIterator[bytes]:
        yield raw
    return [e async for e in translator.stream_events(stream_sse(chunks()), "m")]


async def test_stream_invalid_json_is_a_protocol_error(translator: GeminiTranslator) -> None:
    with pytest.raises(UpstreamProtocolError):
        await _events_from(translator, b'data: {"candidates": [\r\n\r\n')


async def test_stream_in_band_error_is_mapped(translator: GeminiTranslator) -> None:
    raw = b'data: {"candidates":[{"content":{"parts":[{"text":"a"}]}}]}\r\n\r\n' \
          b'data: {"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}\r\n\r\n'
    with pytest.raises(UpstreamStreamError) as info:
        await _events_from(translator, raw)
    assert (info.value.error.status, info.value.error.retryable, info.value.error.upstream_status) == (503, True, 503)


@pytest.mark.parametrize(("reason", "calls", "expected"), [
    ("STOP", False, "stop"), ("STOP", True, "tool_calls"), ("MAX_TOKENS", True, "length"),
    ("SAFETY", False, "content_filter"), ("RECITATION", False, "content_filter"),
    ("BLOCKLIST", False, "content_filter"), ("PROHIBITED_CONTENT", False, "content_filter"),
    ("SPII", False, "content_filter"), ("IMAGE_SAFETY", False, "content_filter"),
    ("MALFORMED_FUNCTION_CALL", False, "stop"), ("OTHER", False, "stop"),
])
def test_finish_reasons(reason: str, calls: bool, expected: str) -> None:
    assert finish_reason(reason, calls) == expected


# ------------------------------------------------------------------- errors --


def test_429_retry_info_delay(translator: GeminiTranslator) -> None:
    error = translator.map_error(429, (FIXTURES / "error_429_retry_info.json").read_bytes(), {})
    assert (error.status, error.type, error.retryable, error.retry_after_ms) == (429, "rate_limit_error", True, 2000)
    assert error.message.startswith("You exceeded your current quota")
    assert (error.provider, error.upstream_status) == ("google", 429)


def test_retry_after_header_wins_over_retry_info(translator: GeminiTranslator) -> None:
    body = (FIXTURES / "error_429_retry_info.json").read_bytes()
    assert translator.map_error(429, body, {"retry-after-ms": "750"}).retry_after_ms == 750
    assert translator.map_error(429, body, {"retry-after": "5"}).retry_after_ms == 5000


def test_invalid_upstream_key_is_the_gateways_fault(translator: GeminiTranslator) -> None:
    error = translator.map_error(400, (FIXTURES / "error_400_api_key_invalid.json").read_bytes(), {})
    assert (error.status, error.type, error.code, error.retryable) == (502, "api_error", "upstream_auth_error", True)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_map_to_502(translator: GeminiTranslator, status: int) -> None:
    body = orjson.dumps({"error": {"code": status, "message": "denied", "status": "PERMISSION_DENIED"}})
    error = translator.map_error(status, body, {})
    assert (error.status, error.code, error.retryable) == (502, "upstream_auth_error", True)


@pytest.mark.parametrize(("fixture", "param"), [
    ("error_400_unknown_field.json", "tools"), ("error_400_temperature.json", "temperature")])
def test_400_names_the_openai_param(translator: GeminiTranslator, fixture: str, param: str) -> None:
    error = translator.map_error(400, (FIXTURES / fixture).read_bytes(), {})
    assert (error.status, error.type, error.param, error.retryable) == (400, "invalid_request_error", param, False)


@pytest.mark.parametrize(("status", "body", "expected"), [
    (404, "error_404_model.json", (404, "invalid_request_error", False)),
    (503, "error_503.json", (503, "api_error", True)),
    (500, None, (502, "api_error", True)),
    (504, None, (504, "timeout_error", True)),
    (413, None, (413, "invalid_request_error", False)),
])
def test_status_mapping(translator: GeminiTranslator, status: int, body: str | None, expected: tuple) -> None:
    raw = (FIXTURES / body).read_bytes() if body else b"<html>upstream error</html>"
    error = translator.map_error(status, raw, {})
    assert (error.status, error.type, error.retryable) == expected
    assert error.message


def test_error_message_never_carries_a_key(translator: GeminiTranslator, key: str) -> None:
    leaked = "AIza" + secrets.token_hex(18)
    body = orjson.dumps({"error": {"code": 400, "message": f"bad key {key} or {leaked}", "status": "INVALID_ARGUMENT"}})
    message = translator.map_error(400, body, {}).message
    assert key not in message and leaked not in message and "[redacted]" in message


def test_200_with_an_error_body_is_the_upstreams_error(translator: GeminiTranslator) -> None:
    body = orjson.dumps({"error": {"code": 429, "message": "Resource exhausted.", "status": "RESOURCE_EXHAUSTED"}})
    with pytest.raises(UpstreamStreamError) as info:
        list(translator.parse_response(body, "gemini-2.5-flash"))
    assert (info.value.error.status, info.value.error.retryable, info.value.error.message) == (
        429, True, "Resource exhausted.")


def test_html_error_page_is_not_passed_on(translator: GeminiTranslator) -> None:
    error = translator.map_error(502, b"<html><body>Bad gateway: ai-proxy.corp.internal</body></html>", {})
    assert error.message == "google answered HTTP 502"


def openai_chunks(events: list[ppb.GenerateEvent]) -> list[ChatCompletionChunk]:
    """Each delta as the one OpenAI chunk a gateway sends for it (the edge's
    rendering, reduced to the fields the SDK's stream helper reads)."""
    out = []
    for delta in (d for e in events if e.HasField("chunk") for d in e.chunk.choices):
        body: dict = {}
        if delta.role:
            body["role"] = "assistant"
        if delta.content:
            body["content"] = delta.content
        if delta.tool_calls:
            body["tool_calls"] = [{"index": t.index, "function": {"arguments": t.arguments}} for t in delta.tool_calls]
            for call, t in zip(body["tool_calls"], delta.tool_calls, strict=True):
                if t.id:
                    call |= {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
        out.append(ChatCompletionChunk.model_validate({
            "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": delta.index, "delta": body, "finish_reason": delta.finish_reason or None}]}))
    return out


async def test_streamed_calls_close_in_the_openai_sdk_stream_helper(translator: GeminiTranslator) -> None:
    state = ChatCompletionStreamState()
    fired = [event for chunk in openai_chunks(await replay(translator, "stream_parallel_calls.sse"))
             for event in state.handle_chunk(chunk)]
    done = [(e.index, e.name, orjson.loads(e.arguments)) for e in fired
            if e.type == "tool_calls.function.arguments.done"]
    assert done == [(0, "get_weather", {"city": "Paris", "unit": "celsius"}),
                    (1, "get_time", {"zone": "Europe/Paris"})]
    assert state.get_final_completion().choices[0].finish_reason == "tool_calls"
