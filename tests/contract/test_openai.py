"""OpenAITranslator against the simulated api.openai.com (``/v1``) for every
row of the shared scenario table, streamed and not; OpenAICompatTranslator
against the simulated vLLM-style server (``/compat/v1``) for reasoning and
extra-field passthrough."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import jsonschema
import pytest
from google.protobuf import struct_pb2

from providers.attempt import AttemptFailedError, AttemptSpec, stream_attempt
from providers.openai import OpenAITranslator
from providers.openai_compat import OpenAICompatTranslator
from switchyard.config import ProviderSpec, Timeouts
from switchyard.v1 import chat_pb2 as pb
from tests.contract.harness import AttemptResult, run_attempt
from tests.contract.scenarios import SCENARIOS

MODEL = "gpt-4o-mini"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1},
                                            "unit": {"type": "string", "enum": ["c", "f"]}},
           "required": ["city", "days", "unit"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}
# A real 1x1 PNG: the simulator, like the API, rejects bytes that are not an image.
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8cfc0f01f0005000201ab2a3bf10000000049454e44ae426082")).decode()


@dataclass
class Case:
    http: aiohttp.ClientSession
    url: str
    translator: OpenAITranslator
    marker: str
    stream: bool

    async def run(self, request: pb.ChatRequest, model: str = MODEL) -> AttemptResult:
        request.stream = self.stream
        return await run_attempt(self.http, self.translator, request, model, stream=self.stream)

    async def seen(self) -> dict:
        """The body the upstream received for this case's request."""
        async with self.http.get(f"{self.url}/_sim/requests", params={"contains": self.marker}) as response:
            items = await response.json()
        assert len(items) == 1, items
        return items[0]["body"]


def strict_translator(url: str) -> OpenAITranslator:
    return OpenAITranslator("openai-sim", ProviderSpec(type="openai", base_url=f"{url}/v1"), secrets.token_hex(16))


def compat_translator(url: str) -> OpenAICompatTranslator:
    return OpenAICompatTranslator("local-sim", ProviderSpec(type="openai_compat", base_url=f"{url}/compat/v1"), None)


def user(text: str) -> pb.Message:
    return pb.Message(role="user", text=text)


def chat(*messages: pb.Message) -> pb.ChatRequest:
    return pb.ChatRequest(model=MODEL, messages=list(messages))


def add_tool(request: pb.ChatRequest, name: str, schema: dict) -> None:
    request.tools.add(type="function", function=pb.FunctionDefinition(
        name=name, description=f"{name} tool", parameters_json=json.dumps(schema)))


def assert_text_answer(result: AttemptResult, contains: str) -> None:
    assert result.error is None and result.protocol_error is None, (result.error, result.protocol_error)
    assert contains in result.text()
    assert result.finish_reason() == "stop"
    assert result.chunks[0].choices[0].role == "assistant"
    usage = result.usage
    assert usage is not None and usage.prompt_tokens > 0
    assert usage.completion_tokens == len(result.text().split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


# ----------------------------------------------------------------- scenarios --


async def text(case: Case) -> None:
    result = await case.run(chat(user(f"hello {case.marker}")))
    assert_text_answer(result, case.marker)


async def multi_turn(case: Case) -> None:
    request = chat(pb.Message(role="system", text="be brief"), user("first question alpha"),
                   pb.Message(role="assistant", text="first answer"), user(f"second question {case.marker}"))
    result = await case.run(request)
    assert_text_answer(result, f"second question {case.marker}")
    assert "alpha" not in result.text()
    body = await case.seen()
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][2] == {"role": "assistant", "content": "first answer"}


async def system_prompt(case: Case) -> None:
    request = chat(pb.Message(role="system", text=f"you are terse {case.marker}"),
                   pb.Message(role="developer", text="never apologise"), user("hi"))
    assert_text_answer(await case.run(request), "hi")
    body = await case.seen()
    assert body["messages"][:2] == [{"role": "system", "content": f"you are terse {case.marker}"},
                                    {"role": "developer", "content": "never apologise"}]


async def tool_single(case: Case) -> None:
    request = chat(user(f"please call get_weather for me {case.marker}"))
    add_tool(request, "get_weather", WEATHER)
    result = await case.run(request)
    assert result.error is None
    assert result.finish_reason() == "tool_calls"
    (call,) = result.tool_calls()
    assert call["id"].startswith("call_") and call["name"] == "get_weather"
    jsonschema.validate(json.loads(call["arguments"]), WEATHER)
    assert result.text() == ""
    body = await case.seen()
    assert body["tools"][0]["function"]["parameters"] == WEATHER


async def tool_parallel(case: Case) -> None:
    request = chat(user(f"call get_weather and get_time {case.marker}"))
    add_tool(request, "get_weather", WEATHER)
    add_tool(request, "get_time", TIME)
    result = await case.run(request)
    assert result.finish_reason() == "tool_calls"
    indexes = {t.index for c in result.chunks for d in c.choices for t in d.tool_calls}
    assert indexes == {0, 1}
    calls = result.tool_calls()
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    assert len({c["id"] for c in calls}) == 2
    jsonschema.validate(json.loads(calls[1]["arguments"]), TIME)


async def tool_forced(case: Case) -> None:
    request = chat(user(f"mention get_weather but call what is forced {case.marker}"))
    add_tool(request, "get_weather", WEATHER)
    add_tool(request, "get_time", TIME)
    request.tool_choice.function_name = "get_time"
    result = await case.run(request)
    assert [c["name"] for c in result.tool_calls()] == ["get_time"]
    # OpenAI finishes a call forced by name with "stop" (not "tool_calls"); passed through as is.
    assert result.finish_reason() == "stop"
    assert (await case.seen())["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}


async def tool_round_trip(case: Case) -> None:
    result_text = f"sunny-21C-{case.marker}"
    assistant = pb.Message(role="assistant")
    assistant.tool_calls.add(id="call_abc123", type="function",
                             function=pb.FunctionCall(name="get_weather", arguments='{"city":"Oslo","days":1}'))
    request = chat(user("weather in Oslo? call get_weather"), assistant,
                   pb.Message(role="tool", tool_call_id="call_abc123", text=result_text))
    add_tool(request, "get_weather", WEATHER)
    result = await case.run(request)
    assert_text_answer(result, result_text)
    sent = (await case.seen())["messages"]
    assert sent[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_abc123", "type": "function", "function": {"name": "get_weather",
                                                               "arguments": '{"city":"Oslo","days":1}'}}]}
    assert sent[2] == {"role": "tool", "content": result_text, "tool_call_id": "call_abc123"}


async def tool_stream(case: Case) -> None:
    request = chat(user(f"call get_weather {case.marker}"))
    add_tool(request, "get_weather", WEATHER)
    result = await case.run(request)
    deltas = [t for c in result.chunks for d in c.choices for t in d.tool_calls]
    first, rest = deltas[0], deltas[1:]
    assert first.id.startswith("call_") and first.name == "get_weather" and first.arguments == ""
    assert len(rest) >= 3
    assert all(not t.id and not t.name and t.arguments for t in rest)
    jsonschema.validate(json.loads("".join(t.arguments for t in deltas)), WEATHER)


async def json_object(case: Case) -> None:
    request = chat(user(f"reply in JSON {case.marker}"))
    request.response_format.type = "json_object"
    result = await case.run(request)
    assert isinstance(json.loads(result.text()), dict)
    assert result.finish_reason() == "stop"
    assert (await case.seen())["response_format"] == {"type": "json_object"}


PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "tags", "role", "address",
                                                                         "active", "score"],
          "properties": {"name": {"type": "string", "minLength": 2}, "age": {"type": "integer", "minimum": 18},
                         "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                         "role": {"type": "string", "enum": ["admin", "user"]}, "active": {"type": "boolean"},
                         "score": {"type": ["number", "null"], "maximum": 1},
                         "address": {"$ref": "#/$defs/address"}},
          "$defs": {"address": {"type": "object", "additionalProperties": False, "required": ["city", "zip"],
                                "properties": {"city": {"type": "string"}, "zip": {"type": "string",
                                                                                   "maxLength": 5}}}}}


async def json_schema(case: Case) -> None:
    request = chat(user(f"give me a person {case.marker}"))
    request.response_format.CopyFrom(pb.ResponseFormat(type="json_schema", schema_name="person",
                                                       schema_json=json.dumps(PERSON), strict=True))
    result = await case.run(request)
    jsonschema.validate(json.loads(result.text()), PERSON)
    sent = (await case.seen())["response_format"]
    assert sent == {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}


async def image(case: Case) -> None:
    request = chat()
    message = request.messages.add(role="user")
    message.parts.parts.add(text=f"what is in this picture {case.marker}")
    url = f"data:image/png;base64,{PNG}"
    message.parts.parts.add(image_url=pb.ImageUrl(url=url, detail="low"))
    result = await case.run(request)
    assert_text_answer(result, case.marker)
    assert result.usage.prompt_tokens >= 85  # the image was counted as one
    content = (await case.seen())["messages"][0]["content"]
    assert content[1] == {"type": "image_url", "image_url": {"url": url, "detail": "low"}}


async def reasoning(case: Case) -> None:
    # Chat Completions never returns reasoning text: a reasoning model reports
    # hidden reasoning tokens only. Reasoning text is covered by the compat tests.
    request = chat(user(f"think hard [[sim reasoning=7]] {case.marker}"))
    request.sampling.reasoning_effort = "high"
    request.sampling.max_tokens = 50
    result = await case.run(request, model="o4-mini")
    assert result.error is None
    assert result.reasoning() == ""
    assert case.marker in result.text()
    assert result.usage.reasoning_tokens == 7
    assert result.usage.completion_tokens == len(result.text().split()) + 7
    body = await case.seen()
    assert body["reasoning_effort"] == "high"
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body


async def stop(case: Case) -> None:
    request = chat(user(f"alpha beta gamma delta {case.marker}"))
    request.sampling.stop.append("gamma")
    request.sampling.stop_is_string = not case.stream
    result = await case.run(request)
    assert result.text().endswith("alpha beta")
    assert "gamma" not in result.text() and case.marker not in result.text()
    assert result.finish_reason() == "stop"
    assert (await case.seen())["stop"] == ("gamma" if not case.stream else ["gamma"])


async def max_tokens_length(case: Case) -> None:
    request = chat(user(f"a long answer please {case.marker}"))
    request.sampling.max_tokens = 3
    result = await case.run(request)
    assert result.finish_reason() == "length"
    assert len(result.text().split()) == 3
    assert result.usage.completion_tokens == 3
    assert (await case.seen())["max_tokens"] == 3


def error_case(status: int, expected: tuple, directive: str = "") -> Callable[[Case], Awaitable[None]]:
    async def check(case: Case) -> None:
        result = await case.run(chat(user(f"{case.marker} [[sim status={status}{directive}]]")))
        assert result.status == status and result.events == []
        error = result.error
        assert error is not None
        assert (error.status, error.type, error.code, error.retryable, error.retry_after_ms) == expected
        assert error.upstream_status == status and error.provider == "openai-sim" and error.message
        assert case.translator.api_key not in error.message
    return check


async def stream_cut(case: Case) -> None:
    result = await case.run(chat(user(f"one two three four five {case.marker} [[sim cut_after=2]]")))
    assert result.protocol_error is not None
    assert result.text() == "Simulated answer"
    assert result.finish_reason() == ""
    assert result.usage is None


SCENARIO_CHECKS: dict[str, Callable[[Case], Awaitable[None]]] = {
    "text": text, "multi_turn": multi_turn, "system_prompt": system_prompt, "tool_single": tool_single,
    "tool_parallel": tool_parallel, "tool_forced": tool_forced, "tool_round_trip": tool_round_trip,
    "tool_stream": tool_stream, "json_object": json_object, "json_schema": json_schema, "image": image,
    "reasoning": reasoning, "stop": stop, "max_tokens_length": max_tokens_length,
    "error_400": error_case(400, (400, "invalid_request_error", "invalid_request", False, 0)),
    "error_401": error_case(401, (502, "api_error", "upstream_auth_error", True, 0)),
    "error_404": error_case(404, (404, "invalid_request_error", "model_not_found", False, 0)),
    "error_429": error_case(429, (429, "rate_limit_error", "rate_limit_exceeded", True, 2000), " retry_after=2"),
    "error_500": error_case(500, (502, "api_error", "upstream_error", True, 0)),
    "error_503": error_case(503, (503, "api_error", "service_unavailable", True, 0)),
    "stream_cut": stream_cut,
}
STREAM_ONLY = {"tool_stream", "stream_cut"}
CASES = [(name, stream) for name in SCENARIOS for stream in (False, True) if stream or name not in STREAM_ONLY]


def test_every_scenario_is_implemented() -> None:
    assert set(SCENARIO_CHECKS) == set(SCENARIOS)


@pytest.mark.parametrize(("scenario", "stream"), CASES,
                         ids=[f"{name}-{'stream' if stream else 'json'}" for name, stream in CASES])
async def test_openai_scenario(scenario: str, stream: bool, simulator_url: str, http: aiohttp.ClientSession) -> None:
    case = Case(http, simulator_url, strict_translator(simulator_url), "m" + secrets.token_hex(6), stream)
    await SCENARIO_CHECKS[scenario](case)


# -------------------------------------------------------------------- compat --


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_compat_reasoning_content(stream: bool, simulator_url: str, http: aiohttp.ClientSession) -> None:
    case = Case(http, simulator_url, compat_translator(simulator_url), "m" + secrets.token_hex(6), stream)
    result = await case.run(chat(user(f"why is the sky blue [[sim reasoning=5]] {case.marker}")), model="sim-qwen3")
    assert result.error is None
    assert result.reasoning().split() == ["Thinking", "about", "why", "is", "the"]
    assert case.marker in result.text()
    assert result.finish_reason() == "stop"
    assert result.usage.reasoning_tokens == 5
    assert result.usage.completion_tokens == 5 + len(result.text().split())
    if stream:  # reasoning arrives before the answer
        kinds = ["reasoning" if d.reasoning else "content" for c in result.chunks for d in c.choices
                 if d.reasoning or d.content]
        assert kinds == sorted(kinds, key=lambda k: k != "reasoning")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_compat_extras_reach_the_upstream(stream: bool, simulator_url: str,
                                                http: aiohttp.ClientSession) -> None:
    case = Case(http, simulator_url, compat_translator(simulator_url), "m" + secrets.token_hex(6), stream)
    request = chat(user(f"extras {case.marker}"))
    request.extra.update({"top_k": 40, "min_p": 0.05, "chat_template_kwargs": {"enable_thinking": False},
                          "xtc_probability": 0.5})
    request.sampling.temperature = 0.7
    result = await case.run(request, model="sim-llama")
    assert result.error is None and case.marker in result.text()
    body = await case.seen()
    assert body["top_k"] == 40 and isinstance(body["top_k"], int)
    assert body["min_p"] == 0.05 and body["xtc_probability"] == 0.5
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["temperature"] == 0.7


async def test_compat_typed_top_k_reaches_the_upstream(simulator_url: str, http: aiohttp.ClientSession) -> None:
    case = Case(http, simulator_url, compat_translator(simulator_url), "m" + secrets.token_hex(6), False)
    request = chat(user(f"top k {case.marker}"))
    request.sampling.top_k = 20
    assert (await case.run(request, model="sim-llama")).error is None
    assert (await case.seen())["top_k"] == 20


async def test_compat_wrong_extra_type_is_a_client_error(simulator_url: str, http: aiohttp.ClientSession) -> None:
    case = Case(http, simulator_url, compat_translator(simulator_url), "m" + secrets.token_hex(6), False)
    request = chat(user(f"bad extras {case.marker}"))
    request.extra.update({"top_k": "many"})
    result = await case.run(request, model="sim-llama")
    assert result.status == 400
    assert (result.error.status, result.error.type, result.error.retryable) == (400, "invalid_request_error", False)
    assert result.error.param == "top_k"


async def test_compat_stream_error_mid_stream(simulator_url: str, http: aiohttp.ClientSession) -> None:
    case = Case(http, simulator_url, compat_translator(simulator_url), "m" + secrets.token_hex(6), True)
    result = await case.run(chat(user(f"one two three {case.marker} [[sim error_after=2]]")), model="sim-llama")
    assert result.text() == "Simulated answer"
    assert (result.error.status, result.error.retryable, result.error.provider) == (502, True, "local-sim")
    assert result.error.upstream_status == 500


def test_struct_extra_round_trip_keeps_nested_types() -> None:
    extra = struct_pb2.Struct()
    extra.update({"structured_outputs": {"choice": ["a", "b"], "n": 2}})
    request = chat(user("x"))
    request.extra.CopyFrom(extra)
    body = json.loads(compat_translator("http://127.0.0.1:1").build_request(request, "m", stream=False).body)
    assert body["structured_outputs"] == {"choice": ["a", "b"], "n": 2}


async def sim_bodies(http: aiohttp.ClientSession, url: str, marker: str) -> list[dict]:
    async with http.get(f"{url}/_sim/requests", params={"contains": marker}) as response:
        return [item["body"] for item in await response.json()]


async def attempt(spec: AttemptSpec, text: str, schema: dict, stream: bool) -> tuple[str, pb.Error | None]:
    request = pb.ChatRequest(stream=stream, messages=[pb.Message(role="user", text=text)],
                             response_format=pb.ResponseFormat(type="json_schema", schema_name="weather",
                                                               schema_json=json.dumps(schema)))
    try:
        events = [e async for e in stream_attempt(spec, request, None)]
    except AttemptFailedError as exc:
        return "", exc.error
    return "".join(d.content for e in events if e.HasField("chunk") for d in e.chunk.choices), None


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_compat_server_refusing_json_schema_gets_json_object_and_a_check(
        stream: bool, simulator_url: str, http: aiohttp.ClientSession) -> None:
    translator = compat_translator(simulator_url)
    spec = AttemptSpec(translator, http, "llama", Timeouts(), None)
    first = "m" + secrets.token_hex(6)
    text, error = await attempt(spec, f"weather {first} [[sim no_json_schema=1]]", WEATHER, stream)
    assert error is None, error
    jsonschema.validate(json.loads(text), WEATHER)
    refused, retried = await sim_bodies(http, simulator_url, first)
    assert refused["response_format"]["type"] == "json_schema"
    assert retried["response_format"] == {"type": "json_object"}
    assert json.loads(retried["messages"][0]["content"].split("JSON Schema: ", 1)[1]) == WEATHER

    # Remembered for this provider: the next request goes as json_object at once.
    second = "m" + secrets.token_hex(6)
    text, error = await attempt(spec, f"weather {second}", WEATHER, stream)
    assert error is None and jsonschema.validate(json.loads(text), WEATHER) is None
    assert [b["response_format"]["type"] for b in await sim_bodies(http, simulator_url, second)] == ["json_object"]


async def test_compat_failure_that_is_not_about_json_schema_is_not_remembered(
        simulator_url: str, http: aiohttp.ClientSession) -> None:
    translator = compat_translator(simulator_url)
    spec = AttemptSpec(translator, http, "llama", Timeouts(), None)
    marker = "m" + secrets.token_hex(6)
    _, error = await attempt(spec, f"weather {marker} [[sim status=500]]", WEATHER, False)
    assert error is not None and (error.status, error.upstream_status) == (502, 500)
    assert len(await sim_bodies(http, simulator_url, marker)) == 2  # tried once as json_object, then gave up
    assert not translator.json_schema_refused
    # An invalid schema is the client's mistake: no retry at all.
    marker = "m" + secrets.token_hex(6)
    _, error = await attempt(spec, f"weather {marker} [[sim status=400]]", {"type": 5}, False)
    assert error is not None and error.status == 400
    assert len(await sim_bodies(http, simulator_url, marker)) == 1 and not translator.json_schema_refused
