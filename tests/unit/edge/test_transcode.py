"""Request → canonical proto, and canonical events → OpenAI JSON / SSE frames,
checked against the official openai SDK types."""

from __future__ import annotations

import json
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from edge.transcode import (
    DONE,
    ChunkEncoder,
    CompletionBuilder,
    error_body,
    error_status,
    extra_fields,
    to_chat_request,
)
from edge.validation import parse_chat_request
from switchyard.config import Limits
from switchyard.v1 import chat_pb2 as pb

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def parse(body: dict[str, Any]):
    return parse_chat_request(orjson.dumps(body), Limits())


def rich_request() -> dict[str, Any]:
    return {
        "model": "openai/gpt-4o-mini",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "name": "ada", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "mp3"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
            ]},
            {"role": "assistant", "content": None, "reasoning_content": "Let me look.",
             "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "sig-1"},
                                 {"type": "redacted_thinking", "data": "opaque"}],
             "tool_calls": [{"id": "call_1|ts:abc", "type": "function",
                             "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1|ts:abc", "content": [{"type": "text", "text": "sunny"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}], "refusal": "no"},
            {"role": "user", "content": []},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather", "parameters": SCHEMA,
                                                    "strict": True}},
                  {"type": "function", "function": {"name": "noargs"}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA, "strict": False,
                                                                   "description": "answer"}},
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 100, "max_completion_tokens": 120, "presence_penalty": 0.5,
        "frequency_penalty": -0.5, "seed": 7, "n": 2, "stop": ["END", "STOP"], "logit_bias": {"50256": -100},
        "logprobs": True, "top_logprobs": 3, "top_k": 40, "min_p": 0.05, "reasoning_effort": "low",
        "verbosity": "high", "parallel_tool_calls": False, "service_tier": "flex", "modalities": ["text"],
        "stream": True, "stream_options": {"include_usage": True}, "user": "end-user-1",
        "metadata": {"app": "demo"}, "store": False, "prompt_cache_key": "pck", "safety_identifier": "sid",
        "fallbacks": ["anthropic/claude-3-5-haiku"], "template": "t", "variables": {"x": "y"}, "session_id": "s",
        "mlx:tags": {"team": "a"}, "mlx:end_user": "u", "mlx:cache": {"skip": True}, "mlx:trace": True,
        "chat_template_kwargs": {"enable_thinking": True}, "thinking_budget": 512,
        "web_search_options": {"search_context_size": "low"},
    }


def test_rich_request_becomes_the_canonical_proto() -> None:
    chat = to_chat_request(parse(rich_request()), request_id="req-1",
                           identity=pb.Identity(key_id="key-1", tenant="acme"))
    assert (chat.request_id, chat.model) == ("req-1", "openai/gpt-4o-mini")
    assert (chat.identity.key_id, chat.identity.tenant) == ("key-1", "acme")
    dev, user, assistant, tool, refusal, empty = chat.messages
    assert (dev.role, dev.text) == ("developer", "Be brief.")
    assert user.name == "ada"
    parts = user.parts.parts
    assert parts[0].text == "What is this?"
    assert (parts[1].image_url.url, parts[1].image_url.detail) == ("https://example.com/cat.png", "high")
    assert (parts[2].input_audio.data, parts[2].input_audio.format) == ("UklGRg==", "mp3")
    assert (parts[3].file.filename, parts[3].file.file_data[:5]) == ("a.pdf", "data:")
    assert assistant.WhichOneof("content") is None  # content: null
    assert assistant.reasoning_content == "Let me look."
    assert [(b.text, b.signature, b.redacted_data) for b in assistant.reasoning_blocks] == [
        ("hmm", "sig-1", ""), ("", "", "opaque")]
    call = assistant.tool_calls[0]
    assert (call.id, call.type, call.function.name) == ("call_1|ts:abc", "function", "weather")
    assert call.function.arguments == '{"city": "Paris"}'  # byte for byte, not re-serialised
    assert (tool.tool_call_id, tool.parts.parts[0].text) == ("call_1|ts:abc", "sunny")
    assert refusal.refusal == "no" and refusal.parts.parts[0].refusal == "no"
    assert empty.WhichOneof("content") == "parts" and len(empty.parts.parts) == 0
    assert not dev.HasField("refusal") and not dev.HasField("reasoning_content")

    weather, noargs = chat.tools
    assert json.loads(weather.function.parameters_json) == SCHEMA
    assert weather.function.strict is True and weather.function.description == "Weather"
    assert noargs.function.parameters_json == "" and not noargs.function.HasField("strict")
    assert chat.tool_choice.function_name == "weather"
    fmt = chat.response_format
    assert (fmt.type, fmt.schema_name, fmt.description, fmt.strict) == ("json_schema", "w", "answer", False)
    assert json.loads(fmt.schema_json) == SCHEMA

    s = chat.sampling
    assert (s.temperature, s.top_p, s.max_tokens, s.max_completion_tokens) == (0.2, 0.9, 100, 120)
    assert (s.presence_penalty, s.frequency_penalty, s.seed, s.n) == (0.5, -0.5, 7, 2)
    assert list(s.stop) == ["END", "STOP"] and not s.stop_is_string
    assert dict(s.logit_bias) == {"50256": -100.0}
    assert s.logprobs and s.top_logprobs == 3 and s.top_k == 40
    assert (s.reasoning_effort, s.verbosity, s.service_tier) == ("low", "high", "flex")
    assert s.HasField("parallel_tool_calls") and s.parallel_tool_calls is False
    assert list(s.modalities) == ["text"]

    assert chat.stream and chat.include_usage
    assert chat.user == "end-user-1" and dict(chat.metadata) == {"app": "demo"}
    assert chat.HasField("store") and chat.store is False
    assert (chat.prompt_cache_key, chat.safety_identifier) == ("pck", "sid")
    extra = MessageToDict(chat.extra)
    assert extra == {"min_p": 0.05, "chat_template_kwargs": {"enable_thinking": True}, "thinking_budget": 512,
                     "web_search_options": {"search_context_size": "low"}}

    r = chat.routing
    assert list(r.fallbacks) == ["anthropic/claude-3-5-haiku"]
    assert (r.template, dict(r.variables), r.session_id) == ("t", {"x": "y"}, "s")
    assert dict(r.tags) == {"team": "a"} and r.end_user == "u" and r.cache_skip and r.trace


def test_minimal_request_defaults() -> None:
    chat = to_chat_request(parse({"messages": [{"role": "user", "content": "hi"}], "stop": "END", "top_k": -1}),
                           request_id="r")
    assert chat.model == "" and chat.sampling.n == 1
    assert list(chat.sampling.stop) == ["END"] and chat.sampling.stop_is_string
    for name in ("temperature", "top_p", "max_tokens", "seed", "top_logprobs", "top_k", "parallel_tool_calls"):
        assert not chat.sampling.HasField(name), name
    assert not chat.HasField("tool_choice") and not chat.HasField("response_format")
    assert not chat.HasField("store") and not chat.stream and not chat.include_usage
    assert len(chat.extra.fields) == 0
    assert chat.routing == pb.RoutingContext()


def test_given_routing_is_used_as_is() -> None:
    routing = pb.RoutingContext(end_user="from-header", fallbacks=["x/y"])
    chat = to_chat_request(parse({"messages": [{"role": "user", "content": "hi"}], "fallbacks": ["a/b"]}),
                           request_id="r", routing=routing)
    assert chat.routing == routing


def test_tool_choice_mode() -> None:
    chat = to_chat_request(parse({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"}),
                           request_id="r")
    assert chat.tool_choice.WhichOneof("choice") == "mode" and chat.tool_choice.mode == "required"


# ------------------------------------------------------- non-streamed body --

LOGPROB_A = {"token": "Hel", "logprob": -0.1, "bytes": [72, 101, 108], "top_logprobs": []}
LOGPROB_B = {"token": "lo", "logprob": -0.2, "bytes": [108, 111], "top_logprobs": [
    {"token": "lo", "logprob": -0.2, "bytes": [108, 111]}]}


def delta(**fields: Any) -> pb.ChoiceDelta:
    return pb.ChoiceDelta(**fields)


def test_text_completion_matches_the_sdk_type() -> None:
    builder = CompletionBuilder("chatcmpl-1", 1710000000, "gpt-4o-mini")
    builder.add_chunk(pb.Chunk(choices=[delta(index=0, role="assistant", content="Hel", has_content=True,
                                              logprobs_json=orjson.dumps({"content": [LOGPROB_A]}).decode())]))
    builder.add_chunk(pb.Chunk(choices=[delta(index=0, content="lo", has_content=True, finish_reason="stop",
                                              logprobs_json=orjson.dumps({"content": [LOGPROB_B]}).decode())],
                               system_fingerprint="fp_1"))
    builder.set_usage(pb.Usage(prompt_tokens=12, completion_tokens=8, total_tokens=20, cached_tokens=4,
                               reasoning_tokens=2))
    body = builder.result()
    completion = ChatCompletion.model_validate(body)
    assert completion.id == "chatcmpl-1" and completion.object == "chat.completion"
    assert completion.created == 1710000000 and completion.model == "gpt-4o-mini"
    choice = completion.choices[0]
    assert choice.message.content == "Hello" and choice.message.role == "assistant"
    assert choice.message.refusal is None and choice.finish_reason == "stop"
    assert "tool_calls" not in body["choices"][0]["message"]
    assert "reasoning_content" not in body["choices"][0]["message"]
    assert [t.token for t in choice.logprobs.content] == ["Hel", "lo"]
    assert choice.logprobs.content[1].top_logprobs[0].logprob == -0.2
    assert completion.usage.total_tokens == 20
    assert completion.usage.prompt_tokens_details.cached_tokens == 4
    assert completion.usage.completion_tokens_details.reasoning_tokens == 2
    assert completion.system_fingerprint == "fp_1"
    assert list(body) == ["id", "object", "created", "model", "choices", "usage", "system_fingerprint"]


def test_two_choices_are_sorted_and_separate() -> None:
    builder = CompletionBuilder("c", 1, "m")
    builder.add_chunk(pb.Chunk(choices=[delta(index=1, role="assistant", content="B", has_content=True),
                                        delta(index=0, role="assistant", content="A", has_content=True)]))
    builder.add_chunk(pb.Chunk(choices=[delta(index=1, content="2", has_content=True, finish_reason="length"),
                                        delta(index=0, content="1", has_content=True, finish_reason="stop")]))
    completion = ChatCompletion.model_validate(builder.result())
    assert [(c.index, c.message.content, c.finish_reason) for c in completion.choices] == [
        (0, "A1", "stop"), (1, "B2", "length")]
    assert completion.usage is None


def test_tool_calls_are_concatenated_exactly() -> None:
    builder = CompletionBuilder("c", 1, "m")
    builder.add_chunk(pb.Chunk(choices=[delta(index=0, role="assistant", tool_calls=[
        pb.ToolCallDelta(index=0, id="call_a", name="weather", arguments='{"city":'),
        pb.ToolCallDelta(index=1, id="call_b", name="time", arguments="")])]))
    builder.add_chunk(pb.Chunk(choices=[delta(index=0, tool_calls=[
        pb.ToolCallDelta(index=0, arguments=' "Paris" }'), pb.ToolCallDelta(index=1, arguments="{}")],
        finish_reason="tool_calls")]))
    body = builder.result()
    message = ChatCompletion.model_validate(body).choices[0].message
    assert message.content is None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_a", "weather", '{"city": "Paris" }'), ("call_b", "time", "{}")]
    assert body["choices"][0]["finish_reason"] == "tool_calls"


def test_reasoning_refusal_and_empty_answers() -> None:
    builder = CompletionBuilder("c", 1, "m")
    builder.add_chunk(pb.Chunk(choices=[
        delta(index=0, role="assistant", reasoning="think ", reasoning_blocks=[pb.ReasoningBlock(
            text="think", signature="sig")]),
        delta(index=1, role="assistant", refusal="I can't", finish_reason="content_filter"),
        delta(index=2, role="assistant", finish_reason="length"),
    ]))
    builder.add_chunk(pb.Chunk(choices=[delta(index=0, reasoning="more", content="42", has_content=True)]))
    body = builder.result()
    first, second, third = body["choices"]
    assert first["message"]["reasoning_content"] == "think more"
    assert first["message"]["thinking_blocks"] == [{"type": "thinking", "thinking": "think", "signature": "sig"}]
    assert first["message"]["content"] == "42" and first["finish_reason"] == "stop"
    assert second["message"]["content"] is None and second["message"]["refusal"] == "I can't"
    assert third["message"]["content"] == "" and third["finish_reason"] == "length"
    ChatCompletion.model_validate(body)


def test_trace_is_attached_when_set() -> None:
    builder = CompletionBuilder("c", 1, "m")
    builder.add_chunk(pb.Chunk(choices=[delta(index=0, role="assistant", content="x", finish_reason="stop")]))
    builder.trace = pb.DecisionTrace(resolved_by="route", attempts=[
        pb.AttemptRecord(provider="a", model="m1", outcome="error", error_type="rate_limit_error", status=429,
                         latency_ms=12.5),
        pb.AttemptRecord(provider="b", model="m2", outcome="ok", latency_ms=80)])
    trace = builder.result()["trace"]
    assert trace["resolved_by"] == "route"
    assert [(a["provider"], a["outcome"], a["status"]) for a in trace["attempts"]] == [
        ("a", "error", 429), ("b", "ok", None)]


# ------------------------------------------------------------------ stream --


def frames(data: bytes) -> list[bytes]:
    assert data.endswith(b"\n\n")
    out = []
    for frame in data.split(b"\n\n")[:-1]:
        assert frame.startswith(b"data: ")
        out.append(frame[len(b"data: "):])
    return out


def stream_chunks() -> list[pb.Chunk]:
    lp = orjson.dumps({"content": [LOGPROB_A]}).decode()
    return [
        pb.Chunk(choices=[delta(index=0, role="assistant", reasoning="hmm"),
                          delta(index=1, role="assistant", content="Hi", has_content=True)]),
        pb.Chunk(choices=[delta(index=0, content="Hel", has_content=True, logprobs_json=lp)]),
        pb.Chunk(choices=[delta(index=0, content="lo", has_content=True, finish_reason="stop")],
                 system_fingerprint="fp_9"),
        pb.Chunk(choices=[delta(index=1, tool_calls=[pb.ToolCallDelta(index=0, id="call_1", name="f",
                                                                      arguments='{"a"')])]),
        pb.Chunk(choices=[delta(index=1, tool_calls=[pb.ToolCallDelta(index=0, arguments=": 1}")],
                                finish_reason="tool_calls")]),
    ]


def test_chunk_frames_parse_with_the_sdk() -> None:
    encoder = ChunkEncoder("chatcmpl-9", 1710000000, "gpt-4o-mini")
    parsed = [ChatCompletionChunk.model_validate_json(f) for chunk in stream_chunks()
              for f in frames(encoder.encode(chunk))]
    assert all(c.id == "chatcmpl-9" and c.object == "chat.completion.chunk" and c.model == "gpt-4o-mini"
               and c.created == 1710000000 for c in parsed)
    assert all(len(c.choices) == 1 for c in parsed)
    first0 = parsed[0].choices[0]
    assert first0.index == 0 and first0.delta.role == "assistant" and first0.delta.content == ""
    assert first0.delta.model_extra["reasoning_content"] == "hmm"
    first1 = parsed[1].choices[0]
    assert first1.index == 1 and first1.delta.role == "assistant" and first1.delta.content == "Hi"
    assert parsed[2].choices[0].delta.role is None and parsed[2].choices[0].delta.content == "Hel"
    assert parsed[2].choices[0].logprobs.content[0].token == "Hel"
    assert parsed[3].choices[0].finish_reason == "stop" and parsed[3].system_fingerprint == "fp_9"
    call_first = parsed[4].choices[0].delta.tool_calls[0]
    assert (call_first.index, call_first.id, call_first.type, call_first.function.name) == (0, "call_1", "function",
                                                                                          "f")
    call_next = parsed[5].choices[0].delta.tool_calls[0]
    assert call_next.id is None and call_next.type is None and call_next.function.name is None
    assert call_next.function.arguments == ": 1}"
    assert parsed[5].choices[0].finish_reason == "tool_calls"
    assert all(c.usage is None for c in parsed)
    assert b'"usage"' not in b"".join(encoder.encode(chunk) for chunk in stream_chunks())


def test_stream_accumulates_like_the_builder() -> None:
    """The SDK's own stream accumulator and CompletionBuilder agree."""
    encoder = ChunkEncoder("c", 1, "m", include_usage=True)
    builder = CompletionBuilder("c", 1, "m")
    state = ChatCompletionStreamState()
    usage = pb.Usage(prompt_tokens=5, completion_tokens=7, cached_tokens=1)
    for chunk in stream_chunks():
        builder.add_chunk(chunk)
        for f in frames(encoder.encode(chunk)):
            state.handle_chunk(ChatCompletionChunk.model_validate_json(f))
    builder.set_usage(usage)
    [usage_frame] = frames(encoder.encode_usage(usage))
    state.handle_chunk(ChatCompletionChunk.model_validate_json(usage_frame))
    streamed = state.get_final_completion()
    built = ChatCompletion.model_validate(builder.result())
    for s, b in zip(streamed.choices, built.choices, strict=True):
        assert s.index == b.index and s.finish_reason == b.finish_reason
        assert (s.message.content or None) == (b.message.content or None)
        assert [(t.id, t.function.name, t.function.arguments) for t in s.message.tool_calls or []] == [
            (t.id, t.function.name, t.function.arguments) for t in b.message.tool_calls or []]
    assert streamed.usage.model_dump() == built.usage.model_dump()


def test_include_usage_sends_null_usage_then_the_usage_chunk() -> None:
    encoder = ChunkEncoder("c", 1, "m", include_usage=True)
    [frame] = frames(encoder.encode(pb.Chunk(choices=[delta(index=0, role="assistant", content="x",
                                                            has_content=True)])))
    assert orjson.loads(frame)["usage"] is None
    [last] = frames(encoder.encode_usage(pb.Usage(prompt_tokens=3, completion_tokens=4, reasoning_tokens=1,
                                                  cache_write_tokens=2)))
    chunk = ChatCompletionChunk.model_validate_json(last)
    assert chunk.choices == []
    assert (chunk.usage.prompt_tokens, chunk.usage.completion_tokens, chunk.usage.total_tokens) == (3, 4, 7)
    assert chunk.usage.completion_tokens_details.reasoning_tokens == 1
    assert chunk.usage.prompt_tokens_details.cache_write_tokens == 2


def test_role_comes_first_even_when_the_upstream_omits_it() -> None:
    encoder = ChunkEncoder("c", 1, "m")
    [frame] = frames(encoder.encode(pb.Chunk(choices=[delta(index=0, content="x", has_content=True)])))
    assert orjson.loads(frame)["choices"][0]["delta"] == {"role": "assistant", "content": "x"}
    [frame] = frames(encoder.encode(pb.Chunk(choices=[delta(index=0, finish_reason="stop")])))
    assert orjson.loads(frame)["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


def test_escaping_in_ids_and_content() -> None:
    encoder = ChunkEncoder('id"\n', 1, "m\\")
    [frame] = frames(encoder.encode(pb.Chunk(choices=[delta(index=0, content='a"\n\u2028', has_content=True)])))
    chunk = ChatCompletionChunk.model_validate_json(frame)
    assert (chunk.id, chunk.model, chunk.choices[0].delta.content) == ('id"\n', "m\\", 'a"\n\u2028')


def test_error_frame_and_done() -> None:
    err = pb.Error(status=502, type="api_error", code="upstream_error", message="upstream went away",
                   provider="openai")
    [frame] = frames(ChunkEncoder.encode_error(err))
    assert orjson.loads(frame) == {"error": {"message": "upstream went away", "type": "api_error", "param": None,
                                             "code": "upstream_error"}}
    assert DONE == b"data: [DONE]\n\n"


def test_error_status_and_body() -> None:
    err = pb.Error(status=429, type="rate_limit_error", message="slow down", code="rate_limit_exceeded",
                   param="model")
    assert error_status(err) == 429
    assert orjson.loads(error_body(err)) == {"error": {"message": "slow down", "type": "rate_limit_error",
                                                       "param": "model", "code": "rate_limit_exceeded"}}
    err = pb.Error(message="?")
    assert error_status(err) == 500 and orjson.loads(error_body(err))["error"]["type"] == "api_error"


def test_extra_fields() -> None:
    started = pb.Started(provider="openai-main", provider_type="openai", model="gpt-4o-mini", route="production",
                         route_version=4, attempt=2, arm="cheap", model_requested="@production")
    fields = extra_fields(started, 238.4, pb.Usage(prompt_tokens=3, completion_tokens=5, cost_usd=0.00125))
    assert fields == {"provider": "openai-main", "provider_type": "openai", "request_type": "chat_completion",
                      "model_requested": "@production", "model_used": "gpt-4o-mini", "latency": 238,
                      "route": "@production", "route_version": 4, "arm": "cheap", "cost_usd": 0.00125,
                      "billed_usage": {"prompt_tokens": 3, "completion_tokens": 5}}


def test_gemini_thought_signature_reaches_client_and_comes_back() -> None:
    delta = pb.ToolCallDelta(index=0, id="call_1", name="f", arguments="{}", signature="c2lnbmVk")
    chunk = pb.Chunk(choices=[pb.ChoiceDelta(index=0, role="assistant", tool_calls=[delta],
                                             finish_reason="tool_calls")])
    builder = CompletionBuilder("chatcmpl-x", 1, "m")
    builder.add_chunk(chunk)
    call = builder.result()["choices"][0]["message"]["tool_calls"][0]
    assert call["extra_content"] == {"google": {"thought_signature": "c2lnbmVk"}}
    frame = ChunkEncoder("chatcmpl-x", 1, "m").encode(chunk)
    streamed = ChatCompletionChunk.model_validate_json(frame.split(b"data: ", 1)[1])
    assert streamed.choices[0].delta.tool_calls[0].model_extra["extra_content"]["google"]["thought_signature"] \
        == "c2lnbmVk"
    req = parse({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [dict(call)]},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]})
    message = to_chat_request(req, request_id="r").messages[1]
    assert message.tool_calls[0].signature == "c2lnbmVk"
