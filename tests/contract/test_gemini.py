"""GeminiTranslator against the simulator over real HTTP: every row of the
shared scenario table, streaming and not."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest

from providers.gemini import GeminiTranslator
from switchyard.config import ProviderSpec
from switchyard.v1 import chat_pb2 as pb
from tests.contract.harness import AttemptResult, run_attempt
from tests.contract.scenarios import SCENARIOS

MODEL = "gemini-2.5-flash"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"},
                                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@dataclass
class Case:
    translator: GeminiTranslator
    http: aiohttp.ClientSession
    url: str
    stream: bool
    marker: str

    async def run(self, request: pb.ChatRequest) -> AttemptResult:
        request.stream = self.stream
        return await run_attempt(self.http, self.translator, request, MODEL, stream=self.stream)

    async def recorded(self) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/_sim/requests", params={"contains": self.marker}) as response:
            items = await response.json()
        assert items, "the simulator did not record the request"
        assert items[-1]["api"] == "gemini"
        return items[-1]


def sim_translator(url: str) -> GeminiTranslator:
    return GeminiTranslator("gemini-sim", ProviderSpec(type="gemini", base_url=url), secrets.token_hex(16))


def user(text: str) -> pb.Message:
    return pb.Message(role="user", text=text)


def tool(name: str, schema: dict) -> pb.Tool:
    return pb.Tool(type="function", function=pb.FunctionDefinition(name=name, description=f"{name} tool",
                                                                   parameters_json=orjson.dumps(schema).decode()))


def assert_text_answer(result: AttemptResult) -> None:
    assert result.error is None and result.protocol_error is None
    assert result.text().startswith(f"Simulated answer from {MODEL}")
    assert result.finish_reason() == "stop"
    usage = result.usage
    assert usage is not None and usage.prompt_tokens > 0
    assert usage.completion_tokens == len(result.text().split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert result.chunks[0].choices[0].role == "assistant"


async def scenario_text(case: Case) -> None:
    result = await case.run(pb.ChatRequest(messages=[user(f"Say hello {case.marker}")]))
    assert_text_answer(result)
    assert result.text().endswith(case.marker)
    if case.stream:
        assert len(result.chunks) > 1, "a streamed answer arrives in several chunks"
    seen = await case.recorded()
    assert seen["headers"]["x-goog-api-key"] == case.translator.api_key
    assert "key=" not in seen["path"]


async def scenario_multi_turn(case: Case) -> None:
    result = await case.run(pb.ChatRequest(messages=[
        pb.Message(role="system", text="You are terse."), user("first question"),
        pb.Message(role="assistant", text="first answer"), user(f"second question {case.marker}")]))
    assert_text_answer(result)
    assert result.text().endswith(f"second question {case.marker}")
    body = (await case.recorded())["body"]
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][1]["parts"] == [{"text": "first answer"}]


async def scenario_system_prompt(case: Case) -> None:
    result = await case.run(pb.ChatRequest(messages=[
        pb.Message(role="system", text="Be brief."), pb.Message(role="developer", text="Answer in English."),
        user(f"hi {case.marker}")]))
    assert_text_answer(result)
    body = (await case.recorded())["body"]
    assert body["systemInstruction"]["parts"] == [{"text": "Be brief."}, {"text": "Answer in English."}]
    assert [c["role"] for c in body["contents"]] == ["user"]


def assert_calls(result: AttemptResult, names: list[str]) -> list[dict]:
    assert result.error is None and result.protocol_error is None
    calls = result.tool_calls()
    assert [c["name"] for c in calls] == names
    assert all(c["id"].startswith("call_") for c in calls) and len({c["id"] for c in calls}) == len(calls)
    schemas = {"get_weather": WEATHER, "get_time": TIME}
    for c in calls:
        jsonschema.validate(orjson.loads(c["arguments"]), schemas[c["name"]])
    assert result.finish_reason() == "tool_calls"
    assert result.text() == ""
    return calls


async def scenario_tool_single(case: Case) -> None:
    result = await case.run(pb.ChatRequest(messages=[user(f"Please use get_weather for Paris {case.marker}")],
                                           tools=[tool("get_weather", WEATHER)]))
    assert_calls(result, ["get_weather"])
    declarations = (await case.recorded())["body"]["tools"][0]["functionDeclarations"]
    assert declarations[0]["parametersJsonSchema"] == WEATHER


async def scenario_tool_parallel(case: Case) -> None:
    result = await case.run(pb.ChatRequest(
        messages=[user(f"Call get_weather and get_time {case.marker}")],
        tools=[tool("get_weather", WEATHER), tool("get_time", TIME)]))
    assert_calls(result, ["get_weather", "get_time"])
    indexes = sorted({t.index for c in result.chunks for d in c.choices for t in d.tool_calls})
    assert indexes == [0, 1]


async def scenario_tool_forced(case: Case) -> None:
    result = await case.run(pb.ChatRequest(
        messages=[user(f"What should I wear? {case.marker}")],
        tools=[tool("get_weather", WEATHER), tool("get_time", TIME)],
        tool_choice=pb.ToolChoice(function_name="get_time")))
    assert_calls(result, ["get_time"])
    config = (await case.recorded())["body"]["toolConfig"]["functionCallingConfig"]
    assert config == {"mode": "ANY", "allowedFunctionNames": ["get_time"]}


async def scenario_tool_round_trip(case: Case) -> None:
    call = pb.ToolCall(id="call_1", type="function",
                       function=pb.FunctionCall(name="get_weather", arguments='{"city":"Paris","unit":"celsius"}'))
    result = await case.run(pb.ChatRequest(messages=[
        user(f"Weather in Paris? {case.marker}"), pb.Message(role="assistant", tool_calls=[call]),
        pb.Message(role="tool", tool_call_id="call_1", text='{"temperature": 21}')],
        tools=[tool("get_weather", WEATHER)]))
    assert result.error is None and result.protocol_error is None
    assert result.tool_calls() == []
    assert "get_weather" in result.text() and '{"temperature":21}' in result.text()
    assert result.finish_reason() == "stop"
    contents = (await case.recorded())["body"]["contents"]
    assert contents[1]["parts"][0]["functionCall"] == {"name": "get_weather",
                                                       "args": {"city": "Paris", "unit": "celsius"}}
    assert contents[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"temperature": 21}}}]}


async def scenario_tool_stream(case: Case) -> None:
    result = await case.run(pb.ChatRequest(messages=[user(f"get_weather in Rome {case.marker}")],
                                           tools=[tool("get_weather", WEATHER)]))
    [call] = assert_calls(result, ["get_weather"])
    deltas = [t for c in result.chunks for d in c.choices for t in d.tool_calls]
    assert deltas[0].id == call["id"] and deltas[0].name == "get_weather"
    assert all(not t.id and not t.name for t in deltas[1:])
    assert orjson.loads("".join(t.arguments for t in deltas)) == orjson.loads(call["arguments"])


async def scenario_json_object(case: Case) -> None:
    result = await case.run(pb.ChatRequest(messages=[user(f"Give JSON {case.marker}")],
                                           response_format=pb.ResponseFormat(type="json_object")))
    assert result.error is None and result.finish_reason() == "stop"
    assert isinstance(orjson.loads(result.text()), dict)
    assert (await case.recorded())["body"]["generationConfig"]["responseMimeType"] == "application/json"


async def scenario_json_schema(case: Case) -> None:
    schema = {"type": "object", "additionalProperties": False, "required": ["name", "tags", "score", "kind", "meta"],
              "properties": {"name": {"type": "string", "minLength": 3}, "tags": {"type": "array",
                             "items": {"type": "string"}, "minItems": 2}, "score": {"type": "integer", "minimum": 5},
                             "kind": {"enum": ["a", "b"]}, "meta": {"$ref": "#/$defs/meta"}},
              "$defs": {"meta": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}}
    response_format = pb.ResponseFormat(type="json_schema", schema_name="thing",
                                        schema_json=orjson.dumps(schema).decode(), strict=True)
    result = await case.run(pb.ChatRequest(messages=[user(f"Describe {case.marker}")], response_format=response_format))
    assert result.error is None and result.finish_reason() == "stop"
    jsonschema.validate(orjson.loads(result.text()), schema)
    assert (await case.recorded())["body"]["generationConfig"]["responseJsonSchema"] == schema


async def scenario_image(case: Case) -> None:
    parts = pb.ContentParts(parts=[pb.ContentPart(text=f"What is in this image? {case.marker}"),
                                   pb.ContentPart(image_url=pb.ImageUrl(url=f"data:image/png;base64,{PNG}"))])
    result = await case.run(pb.ChatRequest(messages=[pb.Message(role="user", parts=parts)]))
    assert_text_answer(result)
    assert result.usage is not None and result.usage.prompt_tokens > 258  # Gemini bills 258 tokens per image
    parts_seen = (await case.recorded())["body"]["contents"][0]["parts"]
    assert parts_seen[1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}


async def scenario_reasoning(case: Case) -> None:
    result = await case.run(pb.ChatRequest(messages=[user(f"Think first [[sim reasoning=5]] {case.marker}")],
                                           sampling=pb.Sampling(reasoning_effort="low")))
    assert result.error is None and result.finish_reason() == "stop"
    assert len(result.reasoning().split()) == 5
    assert result.text().startswith("Simulated answer")
    assert result.usage is not None and result.usage.reasoning_tokens == 5
    assert result.usage.completion_tokens == len(result.text().split()) + 5
    signatures = [b.signature for c in result.chunks for d in c.choices for b in d.reasoning_blocks]
    assert len(signatures) == 1 and signatures[0]
    thinking = (await case.recorded())["body"]["generationConfig"]["thinkingConfig"]
    assert thinking == {"thinkingBudget": 1024, "includeThoughts": True}


async def scenario_stop(case: Case) -> None:
    result = await case.run(pb.ChatRequest(messages=[user(f"Anything {case.marker}")],
                                           sampling=pb.Sampling(stop=["from"])))
    assert result.error is None and result.finish_reason() == "stop"
    assert result.text() == "Simulated answer "
    assert (await case.recorded())["body"]["generationConfig"]["stopSequences"] == ["from"]


async def scenario_max_tokens_length(case: Case) -> None:
    result = await case.run(pb.ChatRequest(messages=[user(f"Write a lot {case.marker}")],
                                           sampling=pb.Sampling(max_tokens=3)))
    assert result.error is None and result.finish_reason() == "length"
    assert result.text() == "Simulated answer from"
    assert result.usage is not None and result.usage.completion_tokens == 3
    assert (await case.recorded())["body"]["generationConfig"]["maxOutputTokens"] == 3


ERRORS = {400: (400, "invalid_request_error", False), 401: (502, "api_error", True),
          404: (404, "invalid_request_error", False), 429: (429, "rate_limit_error", True),
          500: (502, "api_error", True), 503: (503, "api_error", True)}


def error_scenario(status: int) -> Callable[[Case], Awaitable[None]]:
    async def check(case: Case) -> None:
        extra = " retry_after=2" if status == 429 else ""
        result = await case.run(pb.ChatRequest(messages=[user(f"[[sim status={status}{extra}]] {case.marker}")]))
        assert result.status == status and result.events == []
        error = result.error
        assert error is not None
        assert (error.status, error.type, error.retryable) == ERRORS[status]
        assert (error.upstream_status, error.provider) == (status, "gemini-sim")
        assert error.message and case.translator.api_key not in error.message
        assert error.retry_after_ms == (2000 if status == 429 else 0)
        if status == 401:
            assert error.code == "upstream_auth_error"
    return check


async def scenario_stream_cut(case: Case) -> None:
    result = await case.run(pb.ChatRequest(messages=[user(f"[[sim cut_after=2 tokens=12]] {case.marker}")]))
    assert result.protocol_error is not None and result.error is None
    assert result.finish_reason() == ""
    assert result.text() == "Simulated answer "


CHECKS: dict[str, Callable[[Case], Awaitable[None]]] = {
    "text": scenario_text, "multi_turn": scenario_multi_turn, "system_prompt": scenario_system_prompt,
    "tool_single": scenario_tool_single, "tool_parallel": scenario_tool_parallel,
    "tool_forced": scenario_tool_forced, "tool_round_trip": scenario_tool_round_trip,
    "tool_stream": scenario_tool_stream, "json_object": scenario_json_object, "json_schema": scenario_json_schema,
    "image": scenario_image, "reasoning": scenario_reasoning, "stop": scenario_stop,
    "max_tokens_length": scenario_max_tokens_length, "stream_cut": scenario_stream_cut,
    **{f"error_{status}": error_scenario(status) for status in ERRORS},
}
STREAM_ONLY = {"stream_cut"}
CASES = [(name, stream) for name in SCENARIOS for stream in (False, True) if stream or name not in STREAM_ONLY]


def test_every_scenario_has_a_check() -> None:
    assert set(SCENARIOS) <= set(CHECKS)


@pytest.mark.parametrize(("scenario", "stream"), CASES,
                         ids=[f"{name}-{'stream' if stream else 'json'}" for name, stream in CASES])
async def test_scenario(scenario: str, stream: bool, simulator_url: str, http: aiohttp.ClientSession) -> None:
    translator = sim_translator(simulator_url)
    await CHECKS[scenario](Case(translator, http, simulator_url, stream, secrets.token_hex(8)))


# ------------------------------------------------- Gemini-specific extras --


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_native_n_choices(stream: bool, simulator_url: str, http: aiohttp.ClientSession) -> None:
    translator = sim_translator(simulator_url)
    request = pb.ChatRequest(messages=[user("Three ways [[sim tokens=4]]")], sampling=pb.Sampling(n=3))
    result = await run_attempt(http, translator, request, MODEL, stream=stream)
    assert [len(result.text(i).split()) for i in range(3)] == [4, 4, 4]
    assert [result.finish_reason(i) for i in range(3)] == ["stop"] * 3
    assert result.usage is not None and result.usage.completion_tokens == 12


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_safety_stop_is_content_filter(stream: bool, simulator_url: str, http: aiohttp.ClientSession) -> None:
    translator = sim_translator(simulator_url)
    request = pb.ChatRequest(messages=[user("[[sim finish=content_filter]] tell me")])
    result = await run_attempt(http, translator, request, MODEL, stream=stream)
    assert result.error is None and result.finish_reason() == "content_filter" and result.text() == ""


async def test_gemini3_signature_round_trip(simulator_url: str, http: aiohttp.ClientSession) -> None:
    """The signature a Gemini 3 call comes back with is what makes the next
    turn acceptable to the (signature-checking) upstream."""
    translator = sim_translator(simulator_url)
    model = "gemini-3-pro-preview"
    question = user("Use get_weather for Oslo [[sim reasoning=4]]")
    tools = [tool("get_weather", WEATHER)]
    first = await run_attempt(http, translator, pb.ChatRequest(messages=[question], tools=tools,
                                                               sampling=pb.Sampling(reasoning_effort="high")),
                              model, stream=True)
    [called] = first.tool_calls()
    assert called["signature"], "the call's thoughtSignature must reach the client"
    assert len(first.reasoning().split()) == 4
    call = pb.ToolCall(id=called["id"], type="function", signature=called["signature"],
                       function=pb.FunctionCall(name=called["name"], arguments=called["arguments"]))
    history = [question, pb.Message(role="assistant", tool_calls=[call]),
               pb.Message(role="tool", tool_call_id=called["id"], text="sunny")]
    second = await run_attempt(http, translator, pb.ChatRequest(messages=history, tools=tools), model, stream=False)
    assert second.error is None and "sunny" in second.text()
    async with http.get(f"{simulator_url}/_sim/requests", params={"contains": called["signature"]}) as response:
        [seen] = await response.json()
    assert seen["body"]["contents"][1]["parts"][0]["thoughtSignature"] == called["signature"]
