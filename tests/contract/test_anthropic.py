"""AnthropicTranslator against the simulated Messages API: every row of the
shared scenario table, streaming and not (n > 1 is the runtime's fan-out)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import jsonschema
import orjson
import pytest

from providers.anthropic import AnthropicTranslator
from providers.attempt import AttemptFailedError, AttemptSpec, stream_attempt
from switchyard.config import ProviderSpec, Timeouts
from switchyard.v1 import chat_pb2 as pb
from tests.contract.harness import AttemptResult, run_attempt
from tests.contract.scenarios import SCENARIOS

MODEL = "claude-haiku-4-5"
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="


@dataclass
class Ctx:
    http: aiohttp.ClientSession
    url: str
    stream: bool
    marker: str

    def translator(self) -> AnthropicTranslator:
        return AnthropicTranslator("claude", ProviderSpec(type="anthropic", base_url=self.url), secrets.token_hex(16))

    async def run(self, request: pb.ChatRequest) -> AttemptResult:
        request.stream = self.stream
        return await run_attempt(self.http, self.translator(), request, MODEL, stream=self.stream)

    async def upstream_body(self) -> dict:
        """What the simulator received for this case's request."""
        async with self.http.get(f"{self.url}/_sim/requests", params={"contains": self.marker}) as response:
            items = [i for i in await response.json() if i["api"] == "anthropic"]
        assert items, f"no recorded request contains {self.marker}"
        return items[-1]["body"]


def user(text: str) -> pb.Message:
    return pb.Message(role="user", text=text)


def tool(name: str) -> pb.Tool:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
              "required": ["city"]}
    return pb.Tool(type="function", function=pb.FunctionDefinition(
        name=name, description=f"The {name} tool", parameters_json=orjson.dumps(schema).decode()))


def assert_ok(result: AttemptResult) -> None:
    assert result.error is None, result.error
    assert result.protocol_error is None, result.protocol_error
    assert result.status == 200


CASES: dict[str, Callable[[Ctx], Awaitable[None]]] = {}


def case(name: str) -> Callable[[Callable[[Ctx], Awaitable[None]]], Callable[[Ctx], Awaitable[None]]]:
    def register(fn: Callable[[Ctx], Awaitable[None]]) -> Callable[[Ctx], Awaitable[None]]:
        CASES[name] = fn
        return fn
    return register


@case("text")
async def _text(ctx: Ctx) -> None:
    result = await ctx.run(pb.ChatRequest(messages=[user(f"Hello there {ctx.marker}")]))
    assert_ok(result)
    assert result.text() == f"Simulated answer from {MODEL}: Hello there {ctx.marker}"
    assert result.finish_reason() == "stop"
    first = next(d for c in result.chunks for d in c.choices)
    assert first.role == "assistant"
    usage = result.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 7, 10)


@case("multi_turn")
async def _multi_turn(ctx: Ctx) -> None:
    result = await ctx.run(pb.ChatRequest(messages=[
        pb.Message(role="system", text="You are terse."), user("first question"),
        pb.Message(role="assistant", text="first answer"), user(f"second question {ctx.marker}")]))
    assert_ok(result)
    assert result.text().endswith(f"second question {ctx.marker}")
    body = await ctx.upstream_body()
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["system"] == [{"type": "text", "text": "You are terse."}]


@case("system_prompt")
async def _system_prompt(ctx: Ctx) -> None:
    result = await ctx.run(pb.ChatRequest(messages=[
        pb.Message(role="system", text="Rule one."), pb.Message(role="developer", text="Rule two."),
        user(f"hi {ctx.marker}")]))
    assert_ok(result)
    body = await ctx.upstream_body()
    assert body["system"] == [{"type": "text", "text": "Rule one."}, {"type": "text", "text": "Rule two."}]
    assert all(m["role"] in ("user", "assistant") for m in body["messages"])


@case("tool_single")
async def _tool_single(ctx: Ctx) -> None:
    result = await ctx.run(pb.ChatRequest(messages=[user(f"Use get_weather for Paris {ctx.marker}")],
                                          tools=[tool("get_weather")]))
    assert_ok(result)
    assert result.finish_reason() == "tool_calls"
    (call,) = result.tool_calls()
    assert call["id"].startswith("toolu_")
    assert call["name"] == "get_weather"
    assert "city" in orjson.loads(call["arguments"])


@case("tool_parallel")
async def _tool_parallel(ctx: Ctx) -> None:
    result = await ctx.run(pb.ChatRequest(messages=[user(f"Call get_weather and get_time {ctx.marker}")],
                                          tools=[tool("get_weather"), tool("get_time")]))
    assert_ok(result)
    indexes = {t.index for c in result.chunks for d in c.choices for t in d.tool_calls}
    assert indexes == {0, 1}
    calls = result.tool_calls()
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    assert calls[0]["id"] != calls[1]["id"]
    assert all(isinstance(orjson.loads(c["arguments"]), dict) for c in calls)
    assert result.finish_reason() == "tool_calls"


@case("tool_forced")
async def _tool_forced(ctx: Ctx) -> None:
    result = await ctx.run(pb.ChatRequest(messages=[user(f"What now? {ctx.marker}")],
                                          tools=[tool("get_weather"), tool("get_time")],
                                          tool_choice=pb.ToolChoice(function_name="get_time")))
    assert_ok(result)
    assert [c["name"] for c in result.tool_calls()] == ["get_time"]
    assert (await ctx.upstream_body())["tool_choice"] == {"type": "tool", "name": "get_time"}


@case("tool_round_trip")
async def _tool_round_trip(ctx: Ctx) -> None:
    call = pb.ToolCall(id="toolu_roundtrip1", type="function",
                       function=pb.FunctionCall(name="get_weather", arguments='{"city": "Paris"}'))
    result = await ctx.run(pb.ChatRequest(
        messages=[user("Weather in Paris?"), pb.Message(role="assistant", tool_calls=[call]),
                  pb.Message(role="tool", tool_call_id="toolu_roundtrip1", text=f"Sunny and 21C {ctx.marker}")],
        tools=[tool("get_weather")]))
    assert_ok(result)
    assert f"Sunny and 21C {ctx.marker}" in result.text()
    assert result.finish_reason() == "stop"
    assert result.tool_calls() == []
    body = await ctx.upstream_body()
    assert body["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_roundtrip1",
                                                 "content": f"Sunny and 21C {ctx.marker}"}


@case("tool_stream")
async def _tool_stream(ctx: Ctx) -> None:
    result = await ctx.run(pb.ChatRequest(messages=[user(f"get_weather please {ctx.marker}")],
                                          tools=[tool("get_weather")]))
    assert_ok(result)
    deltas = [t for c in result.chunks for d in c.choices for t in d.tool_calls]
    assert deltas[0].id.startswith("toolu_") and deltas[0].name == "get_weather"
    if ctx.stream:
        fragments = [t for t in deltas[1:]]
        assert len(fragments) >= 2
        assert all(not t.id and not t.name and t.arguments for t in fragments)
    else:
        assert len(deltas) == 1
    assert orjson.loads(result.tool_calls()[0]["arguments"]) == {"city": "city"}  # schema_instances


@case("json_object")
async def _json_object(ctx: Ctx) -> None:
    result = await ctx.run(pb.ChatRequest(messages=[user(f"List a fruit {ctx.marker}")],
                                          response_format=pb.ResponseFormat(type="json_object")))
    assert_ok(result)
    assert isinstance(orjson.loads(result.text()), dict)
    assert result.finish_reason() == "stop"


@case("json_schema")
async def _json_schema(ctx: Ctx) -> None:
    # Only keywords structured outputs enforces (bounds like ``minimum`` are
    # moved into descriptions, so the upstream does not guarantee them).
    place = {"type": "object", "properties": {"city": {"type": "string"}, "when": {"type": "string", "format": "date"}},
             "required": ["city", "when"], "additionalProperties": False}
    schema = {"type": "object", "additionalProperties": False, "required": ["name", "count", "tags", "kind", "place"],
              "properties": {"name": {"type": "string"}, "count": {"type": "integer"},
                             "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                             "kind": {"type": "string", "enum": ["a", "b"]}, "place": place,
                             "ok": {"type": "boolean"}}}
    result = await ctx.run(pb.ChatRequest(
        messages=[user(f"Describe {ctx.marker}")],
        response_format=pb.ResponseFormat(type="json_schema", schema_name="thing",
                                          schema_json=orjson.dumps(schema).decode())))
    assert_ok(result)
    jsonschema.validate(orjson.loads(result.text()), schema)
    assert result.finish_reason() == "stop"
    assert (await ctx.upstream_body())["output_config"]["format"]["type"] == "json_schema"


@case("image")
async def _image(ctx: Ctx) -> None:
    parts = [pb.ContentPart(text=f"What is in this image? {ctx.marker}"),
             pb.ContentPart(image_url=pb.ImageUrl(url=f"data:image/png;base64,{PNG_1PX}"))]
    result = await ctx.run(pb.ChatRequest(messages=[pb.Message(role="user", parts=pb.ContentParts(parts=parts))]))
    assert_ok(result)
    content = (await ctx.upstream_body())["messages"][0]["content"]
    assert content[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}}


@case("reasoning")
async def _reasoning(ctx: Ctx) -> None:
    result = await ctx.run(pb.ChatRequest(messages=[user(f"Think first [[sim reasoning=5]] {ctx.marker}")],
                                          sampling=pb.Sampling(reasoning_effort="low")))
    assert_ok(result)
    assert len(result.reasoning().split()) == 5
    blocks = [b for c in result.chunks for d in c.choices for b in d.reasoning_blocks]
    assert len(blocks) == 1 and blocks[0].signature and blocks[0].text == result.reasoning()
    assert result.text().startswith("Simulated answer")
    assert (await ctx.upstream_body())["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert result.usage is not None and result.usage.reasoning_tokens == 5


@case("stop")
async def _stop(ctx: Ctx) -> None:
    result = await ctx.run(pb.ChatRequest(messages=[user(f"anything {ctx.marker}")],
                                          sampling=pb.Sampling(stop=["from"])))
    assert_ok(result)
    assert result.text() == "Simulated answer "
    assert result.finish_reason() == "stop"
    assert (await ctx.upstream_body())["stop_sequences"] == ["from"]


@case("max_tokens_length")
async def _max_tokens_length(ctx: Ctx) -> None:
    result = await ctx.run(pb.ChatRequest(messages=[user(f"long please {ctx.marker}")],
                                          sampling=pb.Sampling(max_completion_tokens=3)))
    assert_ok(result)
    assert result.text() == "Simulated answer from"
    assert result.finish_reason() == "length"
    assert result.usage is not None and result.usage.completion_tokens == 3


def _error_case(status: int, expected: tuple[int, str, bool], retry_after: int | None = None) -> Callable:
    async def run(ctx: Ctx) -> None:
        directive = f"[[sim status={status}" + (f" retry_after={retry_after}" if retry_after else "") + "]]"
        result = await ctx.run(pb.ChatRequest(messages=[user(f"fail {directive} {ctx.marker}")]))
        assert result.error is not None
        error = result.error
        assert (error.status, error.type, error.retryable) == expected
        assert (error.upstream_status, error.provider) == (status, "claude")
        assert error.message
        assert result.events == []
        if retry_after:
            assert error.retry_after_ms == retry_after * 1000
    return run


CASES["error_400"] = _error_case(400, (400, "invalid_request_error", False))
CASES["error_401"] = _error_case(401, (502, "api_error", True))
CASES["error_404"] = _error_case(404, (404, "invalid_request_error", False))
CASES["error_429"] = _error_case(429, (429, "rate_limit_error", True), retry_after=2)
CASES["error_500"] = _error_case(500, (502, "api_error", True))
CASES["error_503"] = _error_case(503, (503, "api_error", True))


@case("stream_cut")
async def _stream_cut(ctx: Ctx) -> None:
    result = await ctx.run(pb.ChatRequest(messages=[user(f"cut me [[sim cut_after=2]] {ctx.marker}")]))
    if ctx.stream:
        assert result.protocol_error is not None
        assert result.error is None
        assert result.usage is None
    else:  # a cut only applies to streams; the whole answer arrives
        assert_ok(result)
        assert result.finish_reason() == "stop"


def test_every_scenario_has_a_case() -> None:
    assert set(CASES) == set(SCENARIOS)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_scenario(scenario: str, stream: bool, http: aiohttp.ClientSession, simulator_url: str) -> None:
    await CASES[scenario](Ctx(http, simulator_url, stream, f"mk{secrets.token_hex(6)}"))


# --------------------------------------------------------- beyond the table --


async def test_in_band_error_after_output(http: aiohttp.ClientSession, simulator_url: str) -> None:
    ctx = Ctx(http, simulator_url, True, f"mk{secrets.token_hex(6)}")
    result = await ctx.run(pb.ChatRequest(messages=[user(f"go [[sim error_after=2]] {ctx.marker}")]))
    assert result.text() == "Simulated answer "
    assert result.error is not None
    assert (result.error.status, result.error.code, result.error.retryable) == (503, "upstream_overloaded", True)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_overloaded_529(stream: bool, http: aiohttp.ClientSession, simulator_url: str) -> None:
    ctx = Ctx(http, simulator_url, stream, f"mk{secrets.token_hex(6)}")
    result = await ctx.run(pb.ChatRequest(messages=[user(f"busy [[sim status=529]] {ctx.marker}")]))
    assert result.error is not None
    assert (result.error.status, result.error.code, result.error.retryable) == (503, "upstream_overloaded", True)
    assert result.error.upstream_status == 529


async def test_malformed_frame_is_a_protocol_error(http: aiohttp.ClientSession, simulator_url: str) -> None:
    ctx = Ctx(http, simulator_url, True, f"mk{secrets.token_hex(6)}")
    result = await ctx.run(pb.ChatRequest(messages=[user(f"go [[sim malformed_after=1]] {ctx.marker}")]))
    assert result.protocol_error is not None


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_thinking_tool_round_trip_keeps_signatures(stream: bool, http: aiohttp.ClientSession,
                                                        simulator_url: str) -> None:
    """The simulator verifies thinking signatures and, with thinking on,
    requires the tool-calling turn to start with its thinking block."""
    ctx = Ctx(http, simulator_url, stream, f"mk{secrets.token_hex(6)}")
    sampling = pb.Sampling(reasoning_effort="low")
    ask = user(f"Use get_weather for Oslo {ctx.marker}")
    first = await ctx.run(pb.ChatRequest(messages=[ask], tools=[tool("get_weather")], sampling=sampling))
    assert_ok(first)
    (call,) = first.tool_calls()
    blocks = [b for c in first.chunks for d in c.choices for b in d.reasoning_blocks]
    assistant = pb.Message(role="assistant", reasoning_blocks=blocks, tool_calls=[pb.ToolCall(
        id=call["id"], type="function", function=pb.FunctionCall(name=call["name"], arguments=call["arguments"]))])
    answer = pb.Message(role="tool", tool_call_id=call["id"], text="Snow, -3C")
    second = await ctx.run(pb.ChatRequest(messages=[ask, assistant, answer], tools=[tool("get_weather")],
                                          sampling=sampling))
    assert_ok(second)
    assert "Snow, -3C" in second.text()

    tampered = pb.Message()
    tampered.CopyFrom(assistant)
    tampered.reasoning_blocks[0].text += " (edited)"
    third = await ctx.run(pb.ChatRequest(messages=[ask, tampered, answer], tools=[tool("get_weather")],
                                         sampling=sampling))
    assert third.error is not None
    assert third.error.status == 400 and "signature" in third.error.message


async def test_assistant_first_conversation_is_accepted(http: aiohttp.ClientSession, simulator_url: str) -> None:
    ctx = Ctx(http, simulator_url, False, f"mk{secrets.token_hex(6)}")
    result = await ctx.run(pb.ChatRequest(messages=[pb.Message(role="assistant", text="How can I help?"),
                                                    user(f"Tell me a joke {ctx.marker}")]))
    assert_ok(result)
    assert (await ctx.upstream_body())["messages"][0]["role"] == "user"


async def sim_calls(http: aiohttp.ClientSession, url: str, marker: str) -> int:
    async with http.get(f"{url}/_sim/requests", params={"contains": marker}) as response:
        return len(await response.json())


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_json_object_is_guaranteed(simulator_url: str, stream: bool) -> None:
    """json_object is only asked for in the system prompt: the runtime checks
    the answer, retries once, and fails rather than return non-JSON."""
    async with aiohttp.ClientSession() as http:
        translator = AnthropicTranslator("claude", ProviderSpec(type="anthropic", base_url=simulator_url),
                                         secrets.token_hex(16))
        spec = AttemptSpec(translator, http, MODEL, Timeouts(), None)

        async def ask(text: str) -> tuple[list, int]:
            marker = "m" + secrets.token_hex(6)
            request = pb.ChatRequest(stream=stream, messages=[user(f"{text} {marker}")],
                                     response_format=pb.ResponseFormat(type="json_object"))
            try:
                events: list = [e async for e in stream_attempt(spec, request, None)]
            except AttemptFailedError as exc:
                events = [exc.error]
            return events, await sim_calls(http, simulator_url, marker)

        events, made = await ask("List a fruit")
        text = "".join(d.content for e in events if e.HasField("chunk") for d in e.chunk.choices)
        assert isinstance(orjson.loads(text), dict) and made == 1
        [error], made = await ask("List a fruit [[sim disobey=1]]")
        assert (error.status, error.code, error.retryable) == (502, "invalid_structured_output", False)
        assert "choice 0 is not valid JSON" in error.message
        assert made == 2  # one retry
