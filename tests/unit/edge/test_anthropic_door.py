"""The Anthropic front door without sockets: the parser (Messages request →
canonical, lossless for an Anthropic upstream) and the renderers (canonical
events → message JSON and SSE, the stream checked with the SDK's own
accumulator)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event

from edge.anthropic_request import parse_count_tokens_request, parse_messages_request, to_chat_request
from edge.anthropic_response import MessageBuilder, MessageStreamEncoder, error_body, usage_dict
from providers.anthropic_request import request_body
from switchyard.config import Limits
from switchyard.errors import InvalidRequestError, SwitchyardError
from switchyard.v1 import chat_pb2 as pb

WEATHER = {"name": "get_weather", "description": "Weather.", "cache_control": {"type": "ephemeral"},
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def rich_request() -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5", "max_tokens": 4096,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "metadata": {"user_id": "user-1"}, "stop_sequences": ["END"], "service_tier": "auto",
        "cache_control": {"type": "ephemeral"},
        "tools": [WEATHER], "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris?", "cache_control": {"type": "ephemeral"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
                 "title": "report", "context": "Q3", "citations": {"enabled": True}},
                {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "The user wants weather.", "signature": "c2lnMQ=="},
                {"type": "redacted_thinking", "data": "cmVkYWN0ZWQ="},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"},
                 "cache_control": {"type": "ephemeral"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
                 "content": [{"type": "text", "text": "service down"}], "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Try again?"},
            ]},
        ],
    }


def parse(body: dict[str, Any]) -> pb.ChatRequest:
    return to_chat_request(parse_messages_request(orjson.dumps(body), Limits()), request_id="r1")


# ------------------------------------------------------------------- parser --


def test_rich_request_is_canonical() -> None:
    chat = parse(rich_request())
    system, user, assistant, tool, follow_up = chat.messages
    assert system.role == "system" and system.parts.parts[0].cache_control.ttl == "1h"
    assert [p.WhichOneof("part") for p in user.parts.parts] == ["text", "image_url", "image_url", "file", "file"]
    assert user.parts.parts[1].image_url.url == "data:image/png;base64,iVBORw0KGgo="
    assert user.parts.parts[3].file == pb.FileInput(file_data="data:application/pdf;base64,JVBERi0=",
                                                    filename="report", context="Q3", citations=True)
    assert user.parts.parts[4].file.url == "https://example.com/a.pdf"
    assert [(b.text, b.signature, b.redacted_data) for b in assistant.reasoning_blocks] == [
        ("The user wants weather.", "c2lnMQ==", ""), ("", "", "cmVkYWN0ZWQ=")]
    assert assistant.text == "Checking." and assistant.reasoning_content == "The user wants weather."
    assert orjson.loads(assistant.tool_calls[0].function.arguments) == {"city": "Paris"}
    # The tool result answers the previous turn: a tool message first, then the user's own text.
    assert (tool.role, tool.tool_call_id, tool.is_error, tool.cache_control.type) == ("tool", "toolu_1", True,
                                                                                      "ephemeral")
    assert follow_up.role == "user" and follow_up.parts.parts[0].text == "Try again?"
    assert chat.sampling.max_tokens == 4096 and list(chat.sampling.stop) == ["END"]
    assert chat.sampling.reasoning_effort == "low"  # for upstreams that take an effort, not a budget
    assert chat.sampling.parallel_tool_calls is False and chat.tool_choice.mode == "auto"
    assert chat.user == "user-1"
    assert chat.native.api == "anthropic"
    assert set(chat.native.fields.keys()) == {"thinking", "metadata", "service_tier", "cache_control"}


def test_lossless_for_an_anthropic_upstream() -> None:
    """Anthropic → canonical → Anthropic gives back what the client sent."""
    sent = rich_request()
    body = request_body(parse(sent), "claude-sonnet-4-5", stream=False, configured_max=None)
    for key in ("model", "max_tokens", "system", "thinking", "metadata", "stop_sequences", "service_tier",
                "cache_control", "tool_choice"):
        assert body[key] == sent[key], key
    assert body["tools"] == [{"name": "get_weather", "description": "Weather.",
                              "input_schema": WEATHER["input_schema"], "cache_control": {"type": "ephemeral"}}]
    assert body["messages"] == sent["messages"]


@pytest.mark.parametrize(("thinking", "output_config", "effort"), [
    ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
    ({"type": "enabled", "budget_tokens": 8000}, None, "medium"),
    ({"type": "enabled", "budget_tokens": 20000}, None, "high"),
    ({"type": "enabled", "budget_tokens": 60000}, None, "xhigh"),
    ({"type": "adaptive"}, {"effort": "max"}, "max"),
    ({"type": "adaptive"}, None, "medium"),
    ({"type": "disabled"}, None, ""),
])
def test_thinking_becomes_an_effort(thinking: dict, output_config: dict | None, effort: str) -> None:
    body = {"model": "m", "max_tokens": 100, "thinking": thinking, "messages": [{"role": "user", "content": "hi"}]}
    if output_config:
        body["output_config"] = output_config
    assert parse(body).sampling.reasoning_effort == effort


def test_structured_output_and_tool_choices() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    chat = parse({"model": "m", "max_tokens": 9, "output_config": {"format": {"type": "json_schema", "schema": schema}},
                  "tools": [WEATHER], "tool_choice": {"type": "any"}, "messages": [{"role": "user", "content": "x"}]})
    assert chat.response_format.type == "json_schema" and orjson.loads(chat.response_format.schema_json) == schema
    assert chat.tool_choice.mode == "required" and not chat.sampling.HasField("parallel_tool_calls")
    chat = parse({"model": "m", "max_tokens": 9, "tools": [WEATHER],
                  "tool_choice": {"type": "tool", "name": "get_weather"},
                  "messages": [{"role": "user", "content": "x"}]})
    assert chat.tool_choice.function_name == "get_weather"
    chat = parse({"model": "m", "max_tokens": 9, "container": "cntr_1", "messages": [{"role": "user", "content": "x"}]})
    assert chat.extra.fields["container"].string_value == "cntr_1"  # refused by upstreams that do not know it


@pytest.mark.parametrize(("body", "message"), [
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens: Field required"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}], "foo": 1},
     "foo: Extra inputs are not permitted"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
     "messages.0.content.0.type: Input tag 'video' does not match any of the expected tags: text, image, document, "
     "thinking, redacted_thinking, tool_use, tool_result"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": 5}]},
     "messages.0.content: Input should be a valid string or a list of content blocks"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "x"}}]}]},
     "messages.0.content.0.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "thinking", "thinking": "x", "signature": "y"}]}]},
     "messages.0.content.0.type: user messages may not contain thinking blocks (allowed: document, image, text, "
     "tool_result)"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "f1"}}]}]},
     "messages.0.content.0.source.type: file sources (the Files API) are not supported by this gateway"),
    ({"model": "m", "max_tokens": 1, "temperature": 2, "messages": [{"role": "user", "content": "hi"}]},
     "temperature: Input should be less than or equal to 1"),
])
def test_invalid_requests_name_the_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse(body)
    assert info.value.message == message
    assert info.value.param == message.split(":", 1)[0]


def test_count_tokens_needs_no_max_tokens() -> None:
    req = parse_count_tokens_request(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
                                     Limits())
    assert to_chat_request(req, request_id="r").sampling.HasField("max_tokens") is False


# ----------------------------------------------------------------- renderer --


def answer_chunks() -> list[pb.Chunk]:
    """A streamed answer: thinking, its signature, text, two tool calls, the stop."""
    def chunk(**fields: Any) -> pb.Chunk:
        return pb.Chunk(choices=[pb.ChoiceDelta(index=0, **fields)])

    return [
        chunk(role="assistant", reasoning="Let me "),
        chunk(reasoning="think."),
        chunk(reasoning_blocks=[pb.ReasoningBlock(text="Let me think.", signature="sig==")]),
        chunk(content="Calling", has_content=True),
        chunk(content=" tools.", has_content=True),
        chunk(tool_calls=[pb.ToolCallDelta(index=0, id="call_1", name="get_weather")]),
        chunk(tool_calls=[pb.ToolCallDelta(index=0, arguments='{"city":')]),
        chunk(tool_calls=[pb.ToolCallDelta(index=0, arguments='"Paris"}')]),
        chunk(tool_calls=[pb.ToolCallDelta(index=1, id="call_2", name="get_weather", arguments='{"city":"Rome"}')]),
        chunk(finish_reason="tool_calls"),
    ]


USAGE = pb.Usage(prompt_tokens=100, completion_tokens=20, cached_tokens=60, cache_write_tokens=10, reasoning_tokens=5)
EXPECTED_CONTENT = [
    {"type": "thinking", "thinking": "Let me think.", "signature": "sig=="},
    {"type": "text", "text": "Calling tools."},
    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
]


def test_message_builder() -> None:
    builder = MessageBuilder("msg_1", "claude-x")
    for chunk in answer_chunks():
        builder.add_chunk(chunk)
    builder.set_usage(USAGE)
    assert builder.result() == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": EXPECTED_CONTENT,
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 30, "output_tokens": 20, "cache_creation_input_tokens": 10,
                  "cache_read_input_tokens": 60, "output_tokens_details": {"thinking_tokens": 5}}}


def sse_events(data: bytes) -> list[dict[str, Any]]:
    events = []
    for frame in data.decode().strip().split("\n\n"):
        name, payload = frame.split("\n")
        event = orjson.loads(payload.removeprefix("data: "))
        assert name == "event: " + event["type"]
        events.append(event)
    return events


def test_stream_encoder_agrees_with_the_sdk_accumulator() -> None:
    encoder = MessageStreamEncoder("msg_1", "claude-x")
    wire = encoder.start() + b"".join(encoder.encode(c) for c in answer_chunks())
    wire += encoder.encode_usage(USAGE) + encoder.done()
    events = sse_events(wire)
    assert [e["type"] for e in events[:2]] == ["message_start", "ping"]
    assert [e["type"] for e in events[-2:]] == ["message_delta", "message_stop"]
    starts = [e["index"] for e in events if e["type"] == "content_block_start"]
    stops = [e["index"] for e in events if e["type"] == "content_block_stop"]
    assert starts == stops == [0, 1, 2, 3]
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event in events:
        if event["type"] != "ping":
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    message = snapshot.to_dict()
    assert message["content"] == EXPECTED_CONTENT
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["input_tokens"] == 30 and message["usage"]["cache_read_input_tokens"] == 60


def test_whole_answer_with_several_signed_blocks() -> None:
    """A non-streamed Anthropic answer arrives as one delta: reasoning text
    joined, and the signed blocks apart. The blocks win."""
    delta = pb.ChoiceDelta(index=0, role="assistant", reasoning="ab", content="done", has_content=True,
                           reasoning_blocks=[pb.ReasoningBlock(text="a", signature="s1"),
                                             pb.ReasoningBlock(text="b", signature="s2")],
                           finish_reason="stop", stop_reason="stop_sequence", stop_sequence="END")
    builder = MessageBuilder("m", "c")
    builder.add_chunk(pb.Chunk(choices=[delta]))
    body = builder.result()
    assert body["content"] == [{"type": "thinking", "thinking": "a", "signature": "s1"},
                               {"type": "thinking", "thinking": "b", "signature": "s2"},
                               {"type": "text", "text": "done"}]
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "END")  # the upstream's own words


def test_unsigned_reasoning_from_other_upstreams_is_a_thinking_block() -> None:
    builder = MessageBuilder("m", "gemini-2.5-flash")
    builder.add_chunk(pb.Chunk(choices=[pb.ChoiceDelta(index=0, reasoning="hmm")]))
    builder.add_chunk(pb.Chunk(choices=[pb.ChoiceDelta(index=0, content="hi", finish_reason="length")]))
    body = builder.result()
    assert body["content"] == [{"type": "thinking", "thinking": "hmm", "signature": ""}, {"type": "text", "text": "hi"}]
    assert body["stop_reason"] == "max_tokens"


def test_tool_arguments_that_are_no_object_are_an_error() -> None:
    builder = MessageBuilder("m", "c")
    builder.add_chunk(pb.Chunk(choices=[pb.ChoiceDelta(index=0, tool_calls=[
        pb.ToolCallDelta(index=0, id="c", name="f", arguments="[1]")])]))
    with pytest.raises(SwitchyardError) as info:
        builder.result()
    assert info.value.status == 502


@pytest.mark.parametrize(("error", "kind"), [
    (pb.Error(status=400, message="bad"), "invalid_request_error"),
    (pb.Error(status=401, message="key"), "authentication_error"),
    (pb.Error(status=403, message="no"), "permission_error"),
    (pb.Error(status=404, message="?"), "not_found_error"),
    (pb.Error(status=413, message="big"), "request_too_large"),
    (pb.Error(status=429, message="slow"), "rate_limit_error"),
    (pb.Error(status=503, code="upstream_overloaded", message="busy"), "overloaded_error"),
    (pb.Error(status=502, code="upstream_error", message="broken"), "api_error"),
    (pb.Error(status=504, message="late"), "timeout_error"),
])
def test_errors(error: pb.Error, kind: str) -> None:
    assert orjson.loads(error_body(error)) == {"type": "error", "error": {"type": kind, "message": error.message}}


def test_stream_error_event() -> None:
    [event] = sse_events(MessageStreamEncoder.encode_error(pb.Error(status=502, message="cut")))
    assert event == {"type": "error", "error": {"type": "api_error", "message": "cut"}}


def test_usage_without_cache() -> None:
    assert usage_dict(pb.Usage(prompt_tokens=7, completion_tokens=3)) == {
        "input_tokens": 7, "output_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
