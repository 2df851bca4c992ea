"""Request parsing and validation: every range boundary, the OpenAI-style
``param`` and message of each rejection, and hostile bodies."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from edge.openai_schema import ChatCompletionRequest
from edge.openapi import openapi_document
from edge.validation import parse_chat_request
from switchyard.config import Limits
from switchyard.errors import InvalidRequestError

LIMITS = Limits()
USER = [{"role": "user", "content": "Hello!"}]


def parse(body: dict[str, Any] | bytes, limits: Limits = LIMITS) -> ChatCompletionRequest:
    return parse_chat_request(body if isinstance(body, bytes) else orjson.dumps(body), limits)


def rejected(body: dict[str, Any] | bytes, limits: Limits = LIMITS) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        parse(body, limits)
    assert info.value.status == 400
    assert info.value.type == "invalid_request_error"
    return info.value


def with_field(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": USER, **fields}


# ------------------------------------------------------------------ ranges --

IN_RANGE = [
    ("temperature", 0), ("temperature", 2), ("temperature", 0.7), ("temperature", 2.0),
    ("top_p", 0), ("top_p", 1), ("top_p", 1.0),
    ("n", 1), ("n", 128),
    ("presence_penalty", -2), ("presence_penalty", 2), ("frequency_penalty", -2.0), ("frequency_penalty", 2),
    ("max_tokens", 1), ("max_completion_tokens", 1), ("max_tokens", 2**63 - 1),
    ("seed", -(2**63)), ("seed", 2**63 - 1),
    ("min_p", 0), ("min_p", 1), ("top_k", -1), ("top_k", 0), ("top_k", 40),
    ("user", "u" * 256),
    ("stop", "END"), ("stop", ["a", "b", "c", "d"]), ("stop", []),
    ("reasoning_effort", "none"), ("reasoning_effort", "minimal"), ("reasoning_effort", "xhigh"),
    ("service_tier", "auto"), ("service_tier", "default"), ("service_tier", "flex"), ("service_tier", "priority"),
    ("service_tier", "scale"), ("verbosity", "low"), ("verbosity", "high"),
    ("modalities", ["text", "audio"]), ("parallel_tool_calls", False), ("store", True),
    ("logit_bias", {"50256": -100}), ("logit_bias", {"50256": 100}), ("logit_bias", {"1": 5.5}),
    ("metadata", {f"k{i}": "v" for i in range(16)}), ("metadata", {"k" * 64: "v" * 512}),
]


@pytest.mark.parametrize(("field", "value"), IN_RANGE)
def test_boundary_values_are_accepted(field: str, value: Any) -> None:
    req = parse(with_field(**{field: value}))
    assert getattr(req, field) == value


def test_top_logprobs_bounds_with_logprobs() -> None:
    assert parse(with_field(logprobs=True, top_logprobs=0)).top_logprobs == 0
    assert parse(with_field(logprobs=True, top_logprobs=20)).top_logprobs == 20
    assert rejected(with_field(logprobs=True, top_logprobs=21)).param == "top_logprobs"
    assert rejected(with_field(logprobs=True, top_logprobs=-1)).param == "top_logprobs"


OUT_OF_RANGE = [
    ("temperature", -0.01, "temperature", "decimal_below_min_value", ">= 0"),
    ("temperature", 2.01, "temperature", "decimal_above_max_value", "<= 2"),
    ("temperature", 3, "temperature", "decimal_above_max_value", "but got 3 instead"),
    ("top_p", -0.1, "top_p", "decimal_below_min_value", ">= 0"),
    ("top_p", 1.5, "top_p", "decimal_above_max_value", "<= 1"),
    ("n", 0, "n", "integer_below_min_value", ">= 1"),
    ("n", 129, "n", "integer_above_max_value", "<= 128"),
    ("presence_penalty", -2.5, "presence_penalty", "decimal_below_min_value", ">= -2"),
    ("presence_penalty", 2.5, "presence_penalty", "decimal_above_max_value", "<= 2"),
    ("frequency_penalty", -3, "frequency_penalty", "decimal_below_min_value", ">= -2"),
    ("frequency_penalty", 2.0001, "frequency_penalty", "decimal_above_max_value", "<= 2"),
    ("logit_bias", {"42": -101}, "logit_bias.42", "decimal_below_min_value", ">= -100"),
    ("logit_bias", {"42": 100.5}, "logit_bias.42", "decimal_above_max_value", "<= 100"),
    ("max_tokens", 0, "max_tokens", "integer_below_min_value", ">= 1"),
    ("max_completion_tokens", 0, "max_completion_tokens", "integer_below_min_value", ">= 1"),
    ("max_tokens", -5, "max_tokens", "integer_below_min_value", ">= 1"),
    ("min_p", 1.1, "min_p", "decimal_above_max_value", "<= 1"),
    ("min_p", -0.1, "min_p", "decimal_below_min_value", ">= 0"),
    ("top_k", -2, "top_k", "integer_below_min_value", ">= -1"),
    ("stop", ["a", "b", "c", "d", "e"], "stop", "array_above_max_length", "maximum length 4"),
    ("user", "u" * 257, "user", "string_above_max_length", "maximum length 256"),
    ("metadata", {f"k{i}": "v" for i in range(17)}, "metadata", "object_above_max_properties", "at most 16"),
    ("metadata", {"k" * 65: "v"}, "metadata." + "k" * 65, "string_above_max_length", "maximum length 64"),
    ("metadata", {"k": "v" * 513}, "metadata.k", "string_above_max_length", "maximum length 512"),
    ("reasoning_effort", "ultra", "reasoning_effort", "invalid_value", "'ultra'"),
    ("service_tier", "gold", "service_tier", "invalid_value", "'gold'"),
    ("verbosity", "loud", "verbosity", "invalid_value", "'loud'"),
    ("modalities", ["video"], "modalities[0]", "invalid_value", "'video'"),
]


@pytest.mark.parametrize(("field", "value", "param", "code", "detail"), OUT_OF_RANGE)
def test_out_of_range_values_name_the_param(field: str, value: Any, param: str, code: str, detail: str) -> None:
    err = rejected(with_field(**{field: value}))
    assert err.param == param
    assert err.code == code
    assert detail in err.message
    assert field in err.message or code == "invalid_value"


def test_range_message_matches_openai_wording() -> None:
    err = rejected(with_field(temperature=2.5))
    assert err.message == ("Invalid 'temperature': decimal above maximum value. Expected a value <= 2, "
                           "but got 2.5 instead.")


def test_seed_beyond_int64_is_rejected() -> None:
    body = b'{"messages":[{"role":"user","content":"x"}],"seed":18446744073709551615}'
    assert rejected(body).param == "seed"


def test_top_logprobs_requires_logprobs() -> None:
    err = rejected(with_field(top_logprobs=3))
    assert err.param == "top_logprobs"
    assert "logprobs" in err.message
    err = rejected(with_field(logprobs=False, top_logprobs=3))
    assert err.param == "top_logprobs"


def test_stream_options_require_stream() -> None:
    assert rejected(with_field(stream_options={"include_usage": True})).param == "stream_options"
    req = parse(with_field(stream=True, stream_options={"include_usage": True}))
    assert req.stream_options is not None and req.stream_options.include_usage is True


# ------------------------------------------------------------------- types --

WRONG_TYPES = [
    (with_field(temperature="0.5"), "temperature", "expected a decimal, but got a string"),
    (with_field(n=1.0), "n", "expected an integer, but got a decimal"),
    (with_field(n=True), "n", "expected an integer, but got a boolean"),
    (with_field(stream="yes"), "stream", "expected a boolean, but got a string"),
    (with_field(max_tokens=None, seed="1"), "seed", "expected an integer"),
    (with_field(stop=5), "stop", "expected a string or an array of strings, but got an integer"),
    (with_field(stop=[1]), "stop[0]", "expected a string"),
    (with_field(tools={}), "tools", "expected an array, but got an object"),
    (with_field(metadata={"k": 1}), "metadata.k", "expected a string, but got an integer"),
    (with_field(tool_choice=5), "tool_choice", "expected a string or an object"),
    ({"model": 5, "messages": USER}, "model", "expected a string, but got an integer"),
    ({"messages": "hello"}, "messages", "expected an array, but got a string"),
    ({"messages": [5]}, "messages[0]", "expected an object, but got an integer"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content",
     "expected a string or an array of content parts"),
    ({"messages": [{"role": "user", "content": None}]}, "messages[0].content", "but got null"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}, "messages[0].content[0].text",
     "expected a string"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                         "function": {"name": "f", "arguments": {"a": 1}}}]}]},
     "messages[0].tool_calls[0].function.arguments", "expected a string, but got an object"),
    (with_field(**{"mlx:tags": {"team": 1}}), "mlx:tags.team", "expected a string"),
    (with_field(**{"mlx:trace": "yes"}), "mlx:trace", "expected a boolean"),
]


@pytest.mark.parametrize(("body", "param", "detail"), WRONG_TYPES)
def test_wrong_types_are_rejected(body: dict[str, Any], param: str, detail: str) -> None:
    err = rejected(body)
    assert err.param == param
    assert err.code == "invalid_type"
    assert detail in err.message
    assert f"'{param}'" in err.message


# ---------------------------------------------------------------- messages --


def test_empty_messages() -> None:
    err = rejected({"model": "m", "messages": []})
    assert err.param == "messages"
    assert err.code == "empty_array"


def test_missing_messages() -> None:
    err = rejected({"model": "m"})
    assert (err.param, err.code) == ("messages", "missing_required_parameter")
    assert err.message == "Missing required parameter: 'messages'."


@pytest.mark.parametrize("role", ["robot", "USER", "", "model"])
def test_unknown_role(role: str) -> None:
    err = rejected({"messages": [*USER, {"role": role, "content": "x"}]})
    assert err.param == "messages[1].role"
    assert err.code == "invalid_value"
    assert f"'{role}'" in err.message
    assert "'developer'" in err.message and "#" not in err.message


def test_missing_role() -> None:
    err = rejected({"messages": [{"content": "x"}]})
    assert (err.param, err.code) == ("messages[0].role", "missing_required_parameter")


def test_missing_fields_per_role() -> None:
    assert rejected({"messages": [{"role": "user"}]}).param == "messages[0].content"
    assert rejected({"messages": [{"role": "tool", "content": "42"}]}).param == "messages[0].tool_call_id"
    assert rejected({"messages": [{"role": "function", "content": "42"}]}).param == "messages[0].name"


def test_unknown_content_part_type() -> None:
    err = rejected({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "video"}]}]})
    assert err.param == "messages[0].content[1].type"
    assert "'video'" in err.message and "'image_url'" in err.message


def test_system_messages_take_only_text_parts() -> None:
    body = {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    err = rejected(body)
    assert err.param == "messages[0].content[0].type"


def test_image_detail_is_checked() -> None:
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "ultra"}}]}]}
    err = rejected(body)
    assert err.param == "messages[0].content[0].image_url.detail"
    assert "'auto'" in err.message


def test_every_role_and_part_is_accepted() -> None:
    req = parse({"model": "m", "messages": [
        {"role": "system", "content": "s", "name": "sys"},
        {"role": "developer", "content": [{"type": "text", "text": "d"}]},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "file", "file": {"file_id": "file-1", "filename": "a.pdf"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
         "reasoning_content": "thinking...", "thinking_blocks": [
             {"type": "thinking", "thinking": "t", "signature": "sig"}, {"type": "redacted_thinking", "data": "r"}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "function", "name": "f", "content": None},
    ]})
    assert [m.role for m in req.messages] == ["system", "developer", "user", "assistant", "assistant", "tool",
                                              "function"]
    assert req.messages[2].content[1].image_url.detail == "low"
    assert req.messages[3].content is None
    assert req.messages[3].thinking_blocks[1].data == "r"


def test_nested_unknown_fields_are_ignored() -> None:
    req = parse({"messages": [{"role": "user", "content": [{"type": "text", "text": "x",
                                                               "cache_control": {"type": "ephemeral"}}],
                               "thought": "bifrost"}]})
    assert req.messages[0].content[0].text == "x"


def test_too_many_messages() -> None:
    limits = Limits(max_messages=3)
    assert len(parse({"messages": USER * 3}, limits).messages) == 3
    err = rejected({"messages": USER * 4}, limits)
    assert (err.param, err.code) == ("messages", "array_above_max_length")


# ------------------------------------------------------------------- tools --


def test_tool_name_pattern() -> None:
    def tool(name: str) -> dict[str, Any]:
        return with_field(tools=[{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}])

    assert parse(tool("get_weather-2")).tools[0].function.name == "get_weather-2"
    assert parse(tool("a" * 64)).tools[0].function.name == "a" * 64
    for bad in ("get weather", "a" * 65, "", "naïve"):
        err = rejected(tool(bad))
        assert err.param == "tools[0].function.name"
        assert "pattern" in err.message


def test_tool_type_must_be_function() -> None:
    err = rejected(with_field(tools=[{"type": "custom", "function": {"name": "f"}}]))
    assert err.param == "tools[0].type"


def test_tool_choice_forms() -> None:
    for mode in ("none", "auto", "required"):
        assert parse(with_field(tool_choice=mode)).tool_choice == mode
    named = parse(with_field(tool_choice={"type": "function", "function": {"name": "f"}})).tool_choice
    assert named.function.name == "f"
    err = rejected(with_field(tool_choice="sometimes"))
    assert (err.param, err.code) == ("tool_choice", "invalid_value")
    err = rejected(with_field(tool_choice={"type": "function", "function": {}}))
    assert err.param == "tool_choice.function.name"


def test_response_format_variants() -> None:
    assert parse(with_field(response_format={"type": "text"})).response_format.type == "text"
    assert parse(with_field(response_format={"type": "json_object"})).response_format.type == "json_object"
    fmt = parse(with_field(response_format={"type": "json_schema", "json_schema": {
        "name": "answer", "description": "d", "schema": {"type": "object"}, "strict": True}})).response_format
    assert fmt.json_schema.schema_ == {"type": "object"}
    assert fmt.json_schema.strict is True
    err = rejected(with_field(response_format={"type": "yaml"}))
    assert (err.param, err.code) == ("response_format.type", "invalid_value")
    err = rejected(with_field(response_format={"type": "json_schema"}))
    assert (err.param, err.code) == ("response_format.json_schema", "missing_required_parameter")
    err = rejected(with_field(response_format={}))
    assert (err.param, err.code) == ("response_format.type", "missing_required_parameter")


# -------------------------------------------------------------- extensions --


def test_extensions_and_extras() -> None:
    req = parse({
        "messages": USER, "fallbacks": ["anthropic/claude-3-5-haiku"], "models": ["a", "b"],
        "template": "greeting", "variables": {"name": "Ada"}, "session_id": "s-1", "top_k": 40, "min_p": 0.05,
        "mlx:tags": {"team": "search"}, "mlx:end_user": "u-1", "mlx:cache": {"skip": True}, "mlx:trace": True,
        "chat_template_kwargs": {"enable_thinking": True}, "repetition_penalty": 1.1, "transforms": ["x"],
    })
    assert req.model is None
    assert req.fallbacks == ["anthropic/claude-3-5-haiku"]
    assert (req.template, req.variables, req.session_id) == ("greeting", {"name": "Ada"}, "s-1")
    assert (req.top_k, req.min_p) == (40, 0.05)
    assert req.mlx_tags == {"team": "search"}
    assert req.mlx_end_user == "u-1"
    assert req.mlx_cache.skip is True
    assert req.mlx_trace is True
    assert req.model_extra == {"chat_template_kwargs": {"enable_thinking": True}, "repetition_penalty": 1.1,
                               "transforms": ["x"]}


def test_duplicate_keys_last_one_wins() -> None:
    req = parse(b'{"messages":[{"role":"user","content":"x"}],"temperature":0.1,"temperature":1.5}')
    assert req.temperature == 1.5


def test_field_order_follows_the_reference() -> None:
    fields = list(ChatCompletionRequest.model_fields)
    assert fields[:2] == ["messages", "model"]
    openai_fields = fields[2:fields.index("fallbacks")]
    assert openai_fields == sorted(openai_fields)


# ---------------------------------------------------------- hostile bodies --


@pytest.mark.parametrize("body", [b"", b"{", b'{"messages": [}', b"{'a': 1}", b'{"a":1}{"b":2}', b"nul"])
def test_malformed_json(body: bytes) -> None:
    err = rejected(body)
    assert err.param is None
    assert err.code == "invalid_json"
    assert "parse the JSON body" in err.message


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_numbers_are_invalid_json(literal: bytes) -> None:
    err = rejected(b'{"messages":[{"role":"user","content":"x"}],"temperature":' + literal + b"}")
    assert err.code == "invalid_json"


def test_invalid_utf8() -> None:
    err = rejected(b'{"messages":[{"role":"user","content":"\xff\xfe"}]}')
    assert err.message == "body is not valid UTF-8"
    assert err.param is None


@pytest.mark.parametrize("opener,closer", [(b"[", b"]"), (b'{"a":', b"}")])
def test_deep_nesting_is_rejected_without_recursion(opener: bytes, closer: bytes) -> None:
    body = b'{"messages":[{"role":"user","content":"x"}],"extra":' + opener * 10_000 + b"1" + closer * 10_000 + b"}"
    err = rejected(body)
    assert err.code == "json_too_deep"
    assert "64" in err.message


def test_depth_limit_is_exact_and_ignores_brackets_in_strings() -> None:
    limits = Limits(max_json_depth=8)
    # depth: body 1, messages 2, message 3, then the extra field's nesting.
    inside = b'"[[[[[[[[[[{{{{{{{{\\"]]"'
    ok = b'{"messages":[{"role":"user","content":' + inside + b'}],"x":[[[[[[[1]]]]]]]}'
    assert parse(ok, limits).model_extra["x"] == [[[[[[[1]]]]]]]
    too_deep = b'{"messages":[{"role":"user","content":"x"}],"x":[[[[[[[[1]]]]]]]]}'
    assert rejected(too_deep, limits).code == "json_too_deep"


def test_huge_strings_are_rejected_with_their_path() -> None:
    limits = Limits(max_string_chars=100)
    assert parse({"messages": [{"role": "user", "content": "é" * 100}]}, limits).messages[0].content == "é" * 100
    err = rejected({"messages": [*USER, {"role": "user", "content": "x" * 101}]}, limits)
    assert (err.param, err.code) == ("messages[1].content", "string_above_max_length")
    err = rejected({"messages": USER, "k" * 101: 1}, limits)
    assert err.code == "string_above_max_length"


def test_escaped_strings_count_characters_not_bytes() -> None:
    limits = Limits(max_string_chars=50)
    body = b'{"messages":[{"role":"user","content":"' + b"\\u00e9" * 50 + b'"}]}'
    assert parse(body, limits).messages[0].content == "é" * 50


@pytest.mark.parametrize("body", [b"[]", b'"hello"', b"42", b"null", b"true", b'[{"messages": []}]'])
def test_top_level_must_be_an_object(body: bytes) -> None:
    err = rejected(body)
    assert "JSON object" in err.message
    assert err.param is None


# ------------------------------------------------------------- identifiers --

# Fields that reach routing, response headers, logs and usage events.
IDENTIFIER_FIELDS = [
    ({"model": "gpt\r\n4o"}, "model"),
    ({"model": "gpt-4o\nx-injected: 1"}, "model"),
    ({"model": "gpt\x00"}, "model"),
    ({"model": "gpt\x7f"}, "model"),
    ({"model": "gpt\u2028"}, "model"),
    ({"fallbacks": ["openai/gpt-4o", "bad\rmodel"]}, "fallbacks[1]"),
    ({"models": ["gpt-4o", "x\n"]}, "models[1]"),
    ({"user": "u\r\n"}, "user"),
    ({"session_id": "s\n1"}, "session_id"),
    ({"template": "t\x1b[31m"}, "template"),
    ({"mlx:end_user": "e\n"}, "mlx:end_user"),
    ({"mlx:tags": {"team": "a\r\nb"}}, "mlx:tags.team"),
    ({"mlx:tags": {"te\nam": "a"}}, "mlx:tags"),  # the bad key itself is not echoed as a param
    ({"variables": {"na\nme": "free text\nis fine in values"}}, "variables"),
    ({"safety_identifier": "s\t"}, "safety_identifier"),
    ({"prompt_cache_key": "k\n"}, "prompt_cache_key"),
]


@pytest.mark.parametrize(("fields", "param"), IDENTIFIER_FIELDS)
def test_identifiers_with_control_characters_are_rejected(fields: dict[str, Any], param: str) -> None:
    err = rejected({"messages": USER, **fields})
    assert err.param == param
    assert err.code == "invalid_value"
    assert "control characters" in err.message
    assert "\n" not in (err.param or "") and "\r" not in (err.param or "")


@pytest.mark.parametrize("field", ["model", "user", "session_id", "template", "mlx:end_user", "safety_identifier"])
def test_identifiers_longer_than_256_are_rejected(field: str) -> None:
    assert parse({"messages": USER, field: "m" * 256}) is not None
    err = rejected({"messages": USER, field: "m" * 100_000})
    assert err.param == field
    assert err.code == "string_above_max_length"
    assert "maximum length 256" in err.message


def test_identifier_lists_and_tags_are_bounded() -> None:
    assert rejected(with_field(fallbacks=["m"] * 33)).param == "fallbacks"
    assert rejected(with_field(models=["m"] * 33)).param == "models"
    assert rejected(with_field(**{"mlx:tags": {f"k{i}": "v" for i in range(65)}})).param == "mlx:tags"
    assert rejected(with_field(fallbacks=["m" * 257])).param == "fallbacks[0]"


def test_ordinary_identifiers_pass() -> None:
    req = parse(with_field(model="local/meta-llama/Llama-3-8B:Q4_K_M", fallbacks=["anthropic/claude-haiku-4-5"],
                           user="user@example.com", session_id="sess 42", **{"mlx:tags": {"team": "search ünï"}}))
    assert req.model == "local/meta-llama/Llama-3-8B:Q4_K_M"
    assert req.mlx_tags == {"team": "search ünï"}


# ------------------------------------------------------------------ openapi --


def test_openapi_document_is_self_contained() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    post = doc["paths"]["/v1/chat/completions"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("ChatCompletionRequest")
    assert "get" in doc["paths"]["/v1/models"]
    schemas = doc["components"]["schemas"]
    request = schemas["ChatCompletionRequest"]
    assert {"messages", "model", "temperature", "mlx:tags", "fallbacks"} <= set(request["properties"])
    assert request["properties"]["temperature"]["anyOf"][0]["maximum"] == 2.0
    refs: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)

    collect(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas
    orjson.dumps(doc)  # serialisable as served
