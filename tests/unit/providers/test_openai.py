"""OpenAITranslator and OpenAICompatTranslator without sockets: request
mapping, recorded streams and bodies from tests/fixtures/openai/, error
mapping."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path

import orjson
import pytest
from google.protobuf import struct_pb2

from providers.base import Translator, UpstreamProtocolError, UpstreamStreamError
from providers.openai import OpenAITranslator
from providers.openai_compat import OpenAICompatTranslator
from providers.sse_decode import stream_sse
from switchyard.config import ProviderSpec
from switchyard.errors import InvalidRequestError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "openai"
BASE_URL = "https://api.openai.test/v1"


def openai(key: str | None = "generate") -> OpenAITranslator:
    spec = ProviderSpec(type="openai", base_url=BASE_URL)
    return OpenAITranslator("oa", spec, secrets.token_hex(16) if key == "generate" else key)


def compat(key: str | None = None) -> OpenAICompatTranslator:
    return OpenAICompatTranslator("local", ProviderSpec(type="openai_compat", base_url="http://127.0.0.1:8000/v1/"),
                                  key)


def body_of(request: pb.ChatRequest, translator: Translator | None = None, model: str = "gpt-4o", *,
            stream: bool = False) -> dict:
    return orjson.loads((translator or openai()).build_request(request, model, stream=stream).body)


def user(text: str) -> pb.Message:
    return pb.Message(role="user", text=text)


def struct(data: dict) -> struct_pb2.Struct:
    value = struct_pb2.Struct()
    value.update(data)
    return value


# ------------------------------------------------------------------- request --


PARAMETERS = ('{"type":"object","properties":{"city":{"type":"string","description":"ünïcode"},'
              '"days":{"type":"integer","minimum":1,"maximum":14,"default":3},'
              '"ratio":{"type":"number","multipleOf":0.5,"default":1.0},"big":{"const":12345678901234567890}},'
              '"required":["city","days"],"additionalProperties":false}')
SCHEMA = '{"type":"object","properties":{"n":{"type":"integer","enum":[1,2,3]}},"required":["n"]}'


def full_request() -> pb.ChatRequest:
    request = pb.ChatRequest(model="gpt-4o", user="end-user-7", store=True, prompt_cache_key="pck-1",
                             safety_identifier="sid-9")
    request.messages.append(pb.Message(role="system", text="be brief"))
    request.messages.append(pb.Message(role="developer", text="dev note"))
    parts = request.messages.add(role="user", name="ana")
    parts.parts.parts.add(text="what is this?")
    parts.parts.parts.add(image_url=pb.ImageUrl(url="data:image/png;base64,iVBORw0KGgo=", detail="low"))
    parts.parts.parts.add(input_audio=pb.InputAudio(data="UklGRg==", format="wav"))
    parts.parts.parts.add(file=pb.FileInput(file_id="file-1"))
    assistant = request.messages.add(role="assistant", reasoning_content="hidden thoughts")
    assistant.tool_calls.add(id="call_1", type="function",
                             function=pb.FunctionCall(name="get_weather", arguments='{"city": "Paris", "days":3}'))
    request.messages.append(pb.Message(role="tool", tool_call_id="call_1", text="sunny"))
    request.messages.append(pb.Message(role="assistant", refusal="I cannot", text=""))
    request.tools.add(type="function", function=pb.FunctionDefinition(
        name="get_weather", description="Weather", parameters_json=PARAMETERS, strict=True))
    request.tools.add(type="function", function=pb.FunctionDefinition(name="no_params"))
    request.tool_choice.function_name = "get_weather"
    request.response_format.CopyFrom(pb.ResponseFormat(type="json_schema", schema_name="pick", schema_json=SCHEMA,
                                                       strict=True, description="a pick"))
    s = request.sampling
    s.temperature, s.top_p, s.max_tokens, s.max_completion_tokens = 0.5, 0.9, 100, 120
    s.presence_penalty, s.frequency_penalty, s.seed, s.n = -0.5, 0.25, 42, 3
    s.stop.extend(["END", "STOP"])
    s.logit_bias["50256"] = -100
    s.logprobs, s.top_logprobs = True, 4
    s.reasoning_effort, s.verbosity, s.service_tier = "low", "high", "flex"
    s.parallel_tool_calls = False
    s.modalities.append("text")
    request.metadata["team"] = "blue"
    return request


def test_every_field_is_mapped() -> None:
    body = body_of(full_request())
    assert body == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": "dev note"},
            {"role": "user", "name": "ana", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "file", "file": {"file_id": "file-1"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days":3}'}}]},
            {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
            {"role": "assistant", "content": "", "refusal": "I cannot"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                              "parameters": orjson.loads(PARAMETERS), "strict": True}},
            {"type": "function", "function": {"name": "no_params"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "pick", "description": "a pick", "schema": orjson.loads(SCHEMA), "strict": True}},
        "temperature": 0.5, "top_p": 0.9, "presence_penalty": -0.5, "frequency_penalty": 0.25, "seed": 42,
        "top_logprobs": 4, "max_completion_tokens": 120, "parallel_tool_calls": False, "max_tokens": 100, "n": 3,
        "stop": ["END", "STOP"], "logit_bias": {"50256": -100}, "logprobs": True, "reasoning_effort": "low",
        "verbosity": "high", "service_tier": "flex", "modalities": ["text"],
        "user": "end-user-7", "metadata": {"team": "blue"}, "store": True, "prompt_cache_key": "pck-1",
        "safety_identifier": "sid-9",
    }


def test_unset_fields_are_not_sent() -> None:
    body = body_of(pb.ChatRequest(model="gpt-4o", messages=[user("hi")]))
    assert body == {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def test_url_headers_and_stream_options() -> None:
    key = secrets.token_hex(16)
    upstream = openai(key).build_request(pb.ChatRequest(messages=[user("hi")]), "gpt-4o", stream=True)
    assert upstream.method == "POST"
    assert upstream.url == f"{BASE_URL}/chat/completions"
    assert upstream.headers["authorization"] == f"Bearer {key}"
    assert upstream.headers["accept"] == "text/event-stream"
    body = orjson.loads(upstream.body)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert key not in upstream.url and key.encode() not in upstream.body


def test_no_authorization_header_without_a_key() -> None:
    upstream = compat(None).build_request(pb.ChatRequest(messages=[user("hi")]), "sim-local", stream=False)
    assert "authorization" not in upstream.headers
    assert upstream.url == "http://127.0.0.1:8000/v1/chat/completions"


@pytest.mark.parametrize(("stop", "is_string", "expected"), [
    (["END"], True, "END"),
    (["END"], False, ["END"]),
    (["a", "b"], False, ["a", "b"]),
])
def test_stop_as_string_or_list(stop: list[str], is_string: bool, expected: object) -> None:
    request = pb.ChatRequest(messages=[user("hi")])
    request.sampling.stop.extend(stop)
    request.sampling.stop_is_string = is_string
    assert body_of(request)["stop"] == expected


def test_parameters_json_is_embedded_without_changes() -> None:
    request = pb.ChatRequest(messages=[user("hi")])
    request.tools.add(type="function", function=pb.FunctionDefinition(name="get_weather", parameters_json=PARAMETERS))
    raw = openai().build_request(request, "gpt-4o", stream=False).body
    parameters = orjson.loads(raw)["tools"][0]["function"]["parameters"]
    assert parameters == orjson.loads(PARAMETERS)
    assert list(parameters["properties"]) == ["city", "days", "ratio", "big"]  # key order kept
    days = parameters["properties"]["days"]
    assert type(days["minimum"]) is int and type(days["default"]) is int
    assert type(parameters["properties"]["ratio"]["default"]) is float
    assert parameters["properties"]["big"]["const"] == 12345678901234567890
    assert b'"minimum":1,' in raw and b'"description":"\xc3\xbcn\xc3\xafcode"' in raw


def test_invalid_parameters_json_names_the_field() -> None:
    request = pb.ChatRequest(messages=[user("hi")])
    request.tools.add(type="function", function=pb.FunctionDefinition(name="f", parameters_json="{nope"))
    with pytest.raises(InvalidRequestError) as info:
        openai().build_request(request, "gpt-4o", stream=False)
    assert info.value.param == "tools[0].function.parameters"


def test_tool_choice_modes_and_json_object() -> None:
    request = pb.ChatRequest(messages=[user("json please")])
    request.tools.add(type="function", function=pb.FunctionDefinition(name="f"))
    request.tool_choice.mode = "required"
    request.response_format.type = "json_object"
    body = body_of(request)
    assert body["tool_choice"] == "required"
    assert body["response_format"] == {"type": "json_object"}


def test_extra_passes_through_for_compat_with_integers_restored() -> None:
    request = pb.ChatRequest(model="m", messages=[user("hi")])
    request.extra.CopyFrom(struct({"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.0,
                                   "chat_template_kwargs": {"enable_thinking": False, "depth": 2},
                                   "xtc_list": [1, 2.5, "x", None], "model": "hijack"}))
    body = body_of(request, compat(), model="sim-llama")
    assert body["top_k"] == 40 and type(body["top_k"]) is int
    assert body["min_p"] == 0.05
    assert body["repetition_penalty"] == 1 and type(body["repetition_penalty"]) is int  # integral → int
    assert body["chat_template_kwargs"] == {"enable_thinking": False, "depth": 2}
    assert type(body["chat_template_kwargs"]["depth"]) is int
    assert body["xtc_list"] == [1, 2.5, "x", None]
    assert body["model"] == "sim-llama"  # typed fields win over extras


def test_extra_is_rejected_for_openai_naming_the_field() -> None:
    request = pb.ChatRequest(messages=[user("hi")])
    request.extra.CopyFrom(struct({"min_p": 0.1}))
    with pytest.raises(InvalidRequestError) as info:
        openai().build_request(request, "gpt-4o", stream=False)
    assert info.value.param == "min_p"
    assert info.value.message == "min_p is not supported by provider oa (openai)"


def test_top_k_sent_by_compat_rejected_by_openai() -> None:
    request = pb.ChatRequest(messages=[user("hi")])
    request.sampling.top_k = 20
    assert body_of(request, compat())["top_k"] == 20
    with pytest.raises(InvalidRequestError) as info:
        body_of(request)
    assert info.value.param == "top_k"
    assert "(openai)" in info.value.message


def test_reasoning_history_dropped_for_openai_kept_for_compat() -> None:
    request = pb.ChatRequest(messages=[user("q"), pb.Message(role="assistant", text="a", reasoning_content="r"),
                                       user("q2")])
    assert "reasoning_content" not in body_of(request)["messages"][1]
    assert body_of(request, compat())["messages"][1]["reasoning_content"] == "r"


def test_max_tokens_becomes_max_completion_tokens_for_reasoning_models() -> None:
    request = pb.ChatRequest(messages=[user("hi")])
    request.sampling.max_tokens = 64
    body = body_of(request, model="o4-mini")
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body
    assert body_of(request, model="gpt-4o")["max_tokens"] == 64
    assert body_of(request, compat(), model="o4-mini")["max_tokens"] == 64
    request.sampling.max_completion_tokens = 80
    body = body_of(request, model="o4-mini")
    assert body["max_completion_tokens"] == 80 and "max_tokens" not in body


# -------------------------------------------------------------------- stream --


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def run_stream(name: str, translator: Translator | None = None, size: int = 4096) -> list[ppb.GenerateEvent]:
    data = (FIXTURES / name).read_bytes()
    source = stream_sse(_pieces(data, size))
    return [e async for e in (translator or openai()).stream_events(source, "gpt-4o")]


def deltas(events: list[ppb.GenerateEvent]) -> list[pb.ChoiceDelta]:
    return [d for e in events if e.HasField("chunk") for d in e.chunk.choices]


async def test_text_stream() -> None:
    events = await run_stream("text_stream.sse")
    assert [e.WhichOneof("event") for e in events] == ["chunk"] * 9 + ["usage"]
    assert all(len(e.chunk.choices) == 1 for e in events[:-1])  # one upstream chunk -> one event
    first = events[0].chunk
    assert first.system_fingerprint == "fp_560af6e559"
    assert first.choices[0].role == "assistant" and first.choices[0].has_content and first.choices[0].content == ""
    items = deltas(events)
    assert "".join(d.content for d in items) == "Hello! How can I help?"
    assert [d.content for d in items[1:3]] == ["Hello", "!"]
    assert all(not d.role for d in items[1:])
    assert items[-1].finish_reason == "stop" and not items[-1].has_content
    assert events[-1].usage == pb.Usage(prompt_tokens=1289, completion_tokens=8, total_tokens=1297,
                                        cached_tokens=1152)


async def test_stream_split_into_tiny_pieces_gives_the_same_events() -> None:
    whole = await run_stream("tool_calls_parallel_stream.sse")
    assert await run_stream("tool_calls_parallel_stream.sse", size=7) == whole


async def test_parallel_tool_calls_with_fragmented_arguments() -> None:
    events = await run_stream("tool_calls_parallel_stream.sse")
    items = deltas(events)
    first = items[0]
    assert first.role == "assistant" and not first.has_content
    calls = [t for d in items for t in d.tool_calls]
    heads = [t for t in calls if t.id]
    assert [(t.index, t.id, t.name) for t in heads] == [(0, "call_Hx7QpL2mN9vR4tY8wK1jB3cD", "get_weather"),
                                                          (1, "call_Vb5nM2kL8qW3eR6tY9uI1oP4", "get_time")]
    assert all(not t.name for t in calls if not t.id)
    by_index: dict[int, str] = {}
    for t in calls:
        by_index[t.index] = by_index.get(t.index, "") + t.arguments
    # Fragments are passed on exactly as produced, spaces included.
    assert by_index == {0: '{"city": "Paris", "days": 3}', 1: '{"tz": "Europe/Paris"}'}
    assert [t.arguments for t in calls if t.index == 0] == ["", '{"ci', 'ty": "Par', 'is", "days": 3}']
    assert items[-1].finish_reason == "tool_calls"
    assert events[-1].usage.completion_tokens == 49


async def test_reasoning_content_stream_for_compat() -> None:
    events = await run_stream("reasoning_content_stream.sse", compat())
    items = deltas(events)
    assert items[0].role == "assistant"
    assert "".join(d.reasoning for d in items) == "The user wants 2+2."
    assert "".join(d.content for d in items) == "\n\n4"
    # The content-less middle chunk carries nothing and is skipped; the finish chunk is kept.
    assert len(items) == 6
    assert items[-1].finish_reason == "stop"
    assert events[-1].usage == pb.Usage(prompt_tokens=14, completion_tokens=10, total_tokens=24)


async def test_openai_translator_ignores_reasoning_fields() -> None:
    items = deltas(await run_stream("reasoning_content_stream.sse"))
    assert all(not d.reasoning for d in items)
    assert len(items) == 4  # role, "\n\n", "4", finish


async def test_two_choices_with_logprobs() -> None:
    items = deltas(await run_stream("two_choices_logprobs_stream.sse"))
    assert [(d.index, d.role) for d in items[:2]] == [(0, "assistant"), (1, "assistant")]
    yes = next(d for d in items if d.content == "Yes")
    logprobs = orjson.loads(yes.logprobs_json)
    assert logprobs["content"][0]["token"] == "Yes"
    assert logprobs["content"][0]["top_logprobs"][1] == {"token": "No", "logprob": -6.75, "bytes": [78, 111]}
    assert {d.index: d.finish_reason for d in items if d.finish_reason} == {0: "stop", 1: "length"}


async def test_in_band_error_raises_stream_error_after_earlier_events() -> None:
    events: list[ppb.GenerateEvent] = []
    data = (FIXTURES / "inband_error_stream.sse").read_bytes()
    with pytest.raises(UpstreamStreamError) as info:
        async for event in openai().stream_events(stream_sse(_pieces(data, 64)), "gpt-4o"):
            events.append(event)
    assert "".join(d.content for d in deltas(events)) == "Once"
    error = info.value.error
    assert (error.status, error.type, error.retryable, error.provider) == (502, "api_error", True, "oa")
    assert error.message.startswith("The server had an error")


async def test_missing_done_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match=r"\[DONE\]"):
        await run_stream("missing_done_stream.sse")


async def test_invalid_json_chunk_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="not JSON"):
        await run_stream("invalid_json_stream.sse")


async def test_stream_without_usage_still_ends_with_one_usage_event() -> None:
    data = (b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
            b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"function_call"}]}\n\ndata: [DONE]\n\n')
    events = [e async for e in compat().stream_events(stream_sse(_pieces(data, 4096)), "m")]
    assert [e.WhichOneof("event") for e in events] == ["chunk", "chunk", "usage"]
    assert events[0].chunk.choices[0].role == "assistant"  # injected when the server omits it
    assert events[1].chunk.choices[0].finish_reason == "tool_calls"
    assert events[2].usage == pb.Usage()


@pytest.mark.parametrize("chunk", [b'{"choices": [{"index": 0, "delta": {"content": ["not", "text"]}}]}',
                                   b'{"choices": ["oops"]}', b'{"choices": [], "usage": {"prompt_tokens": "many"}}'])
async def test_malformed_chunk_shapes_are_protocol_errors(chunk: bytes) -> None:
    data = b"data: " + chunk + b"\n\ndata: [DONE]\n\n"
    with pytest.raises(UpstreamProtocolError, match="unexpected shape"):
        _ = [e async for e in openai().stream_events(stream_sse(_pieces(data, 4096)), "gpt-4o")]


async def test_tool_call_without_index_uses_its_position() -> None:
    data = (b'data: {"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":['
            b'{"id":"a","type":"function","function":{"name":"f","arguments":"{}"}},'
            b'{"index":null,"id":"b","type":"function","function":{"name":"g","arguments":"{}"}}]},'
            b'"finish_reason":"tool_calls"}]}\n\ndata: [DONE]\n\n')
    events = [e async for e in compat().stream_events(stream_sse(_pieces(data, 4096)), "m")]
    calls = events[0].chunk.choices[0].tool_calls
    assert [(t.index, t.id, t.name) for t in calls] == [(0, "a", "f"), (1, "b", "g")]


async def test_vllm_stream_error_uses_its_integer_code_as_status() -> None:
    data = b'data: {"error": {"message": "bad top_k", "type": "BadRequestError", "param": null, "code": 400}}\n\n'
    with pytest.raises(UpstreamStreamError) as info:
        _ = [e async for e in compat().stream_events(stream_sse(_pieces(data, 4096)), "m")]
    assert (info.value.error.status, info.value.error.retryable) == (400, False)


# --------------------------------------------------------------- non-stream --


def test_parse_tool_calls_completion() -> None:
    events = list(openai().parse_response((FIXTURES / "tool_calls_completion.json").read_bytes(), "o4-mini"))
    assert [e.WhichOneof("event") for e in events] == ["chunk", "usage"]
    (choice,) = events[0].chunk.choices
    assert choice.role == "assistant" and not choice.has_content
    assert [(t.index, t.id, t.name, t.arguments) for t in choice.tool_calls] == [
        (0, "call_Qw1Er2Ty3Ui4Op5As6Df7Gh8", "get_weather", '{"city":"Paris","days":3}'),
        (1, "call_Zx9Cv8Bn7Mm6Ll5Kk4Jj3Hh2", "get_time", '{"tz":"Europe/Paris"}')]
    assert choice.finish_reason == "tool_calls"
    assert events[1].usage == pb.Usage(prompt_tokens=2210, completion_tokens=345, total_tokens=2555,
                                       cached_tokens=2048, reasoning_tokens=256)


def test_parse_compat_reasoning_completion() -> None:
    body = (FIXTURES / "compat_reasoning_completion.json").read_bytes()
    (choice,) = next(iter(compat().parse_response(body, "m"))).chunk.choices
    assert (choice.reasoning, choice.content, choice.has_content, choice.finish_reason) == (
        "The user wants 2+2.", "4", True, "stop")
    assert len(choice.tool_calls) == 0
    assert next(iter(openai().parse_response(body, "m"))).chunk.choices[0].reasoning == ""


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"[]", b'{"id": "x"}',
                                  b'{"choices": [{"index": 0, "message": {"content": 7}}]}'])
def test_parse_rejects_broken_answers(body: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        list(openai().parse_response(body, "gpt-4o"))


def test_200_with_an_error_body_keeps_the_upstreams_cause() -> None:
    body = envelope("Internal error at gpu-7.corp.internal:8000", "server_error", "internal_error")
    with pytest.raises(UpstreamStreamError) as info:
        list(openai().parse_response(body, "gpt-4o"))
    error = info.value.error
    assert (error.status, error.type, error.code, error.retryable) == (502, "api_error", "internal_error", True)
    assert error.message == "Internal error at [host]"
    vllm = orjson.dumps({"error": {"message": "max_tokens is too large", "type": "BadRequestError", "code": 400}})
    with pytest.raises(UpstreamStreamError) as info:
        list(compat().parse_response(vllm, "m"))
    assert (info.value.error.status, info.value.error.retryable) == (400, False)


# -------------------------------------------------------------------- errors --


def envelope(message: str, type_: str | None, code: object = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


ERROR_TABLE = [
    # upstream status, body, headers -> status, type, code, retryable, retry_after_ms, param
    (400, envelope("Invalid 'temperature'", "invalid_request_error", "decimal_above_max_value", "temperature"), {},
     (400, "invalid_request_error", "decimal_above_max_value", False, 0, "temperature")),
    (400, envelope("This model's maximum context length is 128000 tokens.", "invalid_request_error",
                   "context_length_exceeded", "messages"), {},
     (400, "invalid_request_error", "context_length_exceeded", False, 0, "messages")),
    (400, envelope("The response was filtered due to the prompt triggering Azure OpenAI's content management "
                   "policy.", "invalid_request_error", "content_filter", "prompt"), {},
     (400, "invalid_request_error", "content_filter", False, 0, "prompt")),
    (401, envelope("Incorrect API key provided: sk-proj-ab12********************wxyz.", "invalid_request_error",
                   "invalid_api_key"), {},
     (502, "api_error", "upstream_auth_error", True, 0, "")),
    (403, envelope("Project `proj_1` does not have access to model `gpt-4o`", "invalid_request_error",
                   "model_not_found"), {},
     (502, "api_error", "upstream_auth_error", True, 0, "")),
    (404, envelope("The model `gpt-9` does not exist or you do not have access to it.", "invalid_request_error",
                   "model_not_found"), {},
     (404, "invalid_request_error", "model_not_found", False, 0, "model")),
    (413, b"request entity too large", {}, (413, "invalid_request_error", "request_too_large", False, 0, "")),
    (429, envelope("Rate limit reached for gpt-4o", "requests", "rate_limit_exceeded"), {"Retry-After": "7"},
     (429, "rate_limit_error", "rate_limit_exceeded", True, 7000, "")),
    (429, envelope("Rate limit reached", "tokens", "rate_limit_exceeded"), {"retry-after-ms": "250",
                                                                            "retry-after": "1"},
     (429, "rate_limit_error", "rate_limit_exceeded", True, 250, "")),
    (429, envelope("You exceeded your current quota", "insufficient_quota", "insufficient_quota"), {},
     (502, "api_error", "upstream_billing_error", True, 0, "")),
    (500, envelope("The server had an error while processing your request.", "server_error"), {},
     (502, "api_error", "upstream_error", True, 0, "")),
    (502, b"<html><body>Bad gateway</body></html>", {}, (502, "api_error", "upstream_error", True, 0, "")),
    (503, envelope("The engine is currently overloaded, please try again later.", "server_error"),
     {"retry-after": "1.5"}, (503, "api_error", "service_unavailable", True, 1500, "")),
    (504, b"", {}, (504, "timeout_error", "upstream_timeout", True, 0, "")),
    (400, orjson.dumps({"error": {"message": "top_k must be int", "type": "BadRequestError", "param": None,
                                  "code": 400}}), {},
     (400, "invalid_request_error", "invalid_request", False, 0, "")),
    (422, orjson.dumps({"detail": [{"loc": ["body", "top_k"], "msg": "bad"}]}), {},
     (400, "invalid_request_error", "invalid_request", False, 0, "")),
    (404, orjson.dumps({"error": "model 'llama9' not found"}), {},
     (404, "invalid_request_error", "model_not_found", False, 0, "model")),
]


@pytest.mark.parametrize(("status", "body", "headers", "expected"), ERROR_TABLE,
                         ids=[f"{row[0]}-{i}" for i, row in enumerate(ERROR_TABLE)])
def test_error_mapping(status: int, body: bytes, headers: dict[str, str], expected: tuple) -> None:
    error = openai().map_error(status, body, headers)
    assert (error.status, error.type, error.code, error.retryable, error.retry_after_ms, error.param) == expected
    assert error.provider == "oa" and error.upstream_status == status
    assert error.message
    assert "sk-" not in error.message


def test_error_message_never_carries_the_key() -> None:
    key = secrets.token_hex(20)
    error = openai(key).map_error(401, envelope(f"Incorrect API key provided: {key}", "invalid_request_error",
                                                "invalid_api_key"), {})
    assert key not in error.message and "[redacted]" in error.message


def test_retry_after_as_http_date() -> None:
    date = formatdate(usegmt=True, timeval=time.time() + 30)
    error = openai().map_error(429, envelope("slow down", "requests", "rate_limit_exceeded"), {"retry-after": date})
    assert 20_000 <= error.retry_after_ms <= 31_000


@pytest.mark.parametrize("body", [
    b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1><pre>at lb-3.corp.internal</pre></body></html>",
    envelope('Traceback (most recent call last):\n  File "/srv/app/main.py", line 3', "server_error"),
    envelope("upstream connect error: http://10.2.3.4:8000/v1 refused", "server_error"),
])
def test_leaky_error_bodies_are_not_passed_on(body: bytes) -> None:
    error = openai().map_error(502, body, {})
    assert (error.status, error.upstream_status) == (502, 502)
    for leak in ("<", "corp.internal", "Traceback", "/srv/app", "10.2.3.4", "http://"):
        assert leak not in error.message
    assert error.message.startswith(("oa answered HTTP 502", "upstream connect error"))


def test_compat_after_a_json_schema_refusal_asks_for_json_object() -> None:
    translator = compat()
    schema = '{"type": "object", "properties": {"x": {"type": "integer"}}}'
    request = pb.ChatRequest(messages=[pb.Message(role="system", text="Be brief."), pb.Message(role="user", text="x")],
                             response_format=pb.ResponseFormat(type="json_schema", schema_name="s", schema_json=schema))
    assert orjson.loads(translator.build_request(request, "m", stream=False).body)["response_format"]["type"] == \
        "json_schema"
    assert not translator.needs_output_validation(request)
    refusal = pb.Error(status=502, upstream_status=500)
    assert translator.note_json_schema_refusal(request, refusal)
    assert not translator.note_json_schema_refusal(request, refusal)  # already noted
    body = orjson.loads(translator.build_request(request, "m", stream=False).body)
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0]["content"].startswith("Be brief.\n\nRespond only with a single JSON object")
    assert body["messages"][0]["content"].endswith(schema) and len(body["messages"]) == 2
    assert translator.needs_output_validation(request)
    assert request.response_format.type == "json_schema"  # the caller's request is untouched
    translator.forget_json_schema_refusal()
    assert not translator.needs_output_validation(request)
    assert not compat().note_json_schema_refusal(request, pb.Error(status=429, upstream_status=429))
