"""The Gemini simulator speaks the real wire format: the official google-genai
SDK parses its answers and raises its own errors for its error bodies, and the
simulator rejects what the real API rejects."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import aiohttp
import jsonschema
import orjson
import pytest
from google import genai
from google.genai import errors, types

from simulator import gemini
from tests.conftest import SimServer

# The SDK's own aiohttp subclass warns on import of every client; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
MODEL = "gemini-2.5-flash"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture(scope="module")
def sim(simulator: SimServer) -> SimServer:
    return simulator


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[genai.Client]:
    options = types.HttpOptions(base_url=sim.url, api_version="v1beta")
    client = genai.Client(api_key=secrets.token_hex(16), http_options=options)
    try:
        yield client
    finally:
        await client.aio.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def no_afc(**kwargs: object) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
                                       **kwargs)


# --------------------------------------------------------------- SDK parses --


async def test_sdk_text_usage_and_key_header(client: genai.Client, sim: SimServer) -> None:
    marker = secrets.token_hex(6)
    response = await client.aio.models.generate_content(model=MODEL, contents=f"Hello [[sim tokens=6]] {marker}")
    assert response.text is not None and len(response.text.split()) == 6
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.usage_metadata.candidates_token_count == 6
    assert response.usage_metadata.total_token_count == response.usage_metadata.prompt_token_count + 6
    [seen] = sim.recorder.matching(marker)
    assert seen.path.startswith(f"/v1beta/models/{MODEL}:generateContent")
    assert seen.headers["x-goog-api-key"] and "key=" not in seen.path


async def test_sdk_default_api_version_and_stream(sim: SimServer) -> None:
    prompt = f"Stream me please {secrets.token_hex(6)}"
    async with genai.Client(api_key=secrets.token_hex(16), http_options=types.HttpOptions(base_url=sim.url)).aio as aio:
        whole = await aio.models.generate_content(model=MODEL, contents=prompt)
        chunks = [c async for c in await aio.models.generate_content_stream(model=MODEL, contents=prompt)]
    assert [r.path.split(":")[0] for r in sim.recorder.matching(prompt)] == [f"/v1/models/{MODEL}"] * 2
    assert len(chunks) > 2
    assert "".join(c.text or "" for c in chunks) == whole.text
    assert [c.candidates[0].finish_reason for c in chunks][-1] == types.FinishReason.STOP
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])


async def test_sdk_parallel_function_calls(client: genai.Client) -> None:
    tools = [types.Tool(function_declarations=[
        types.FunctionDeclaration(name="get_weather", description="Weather", parameters_json_schema=WEATHER),
        types.FunctionDeclaration(name="get_time", description="Time", parameters=types.Schema(
            type=types.Type.OBJECT, properties={"zone": types.Schema(type=types.Type.STRING)}, required=["zone"])),
    ])]
    response = await client.aio.models.generate_content(model=MODEL, contents="Use get_weather and get_time",
                                                        config=no_afc(tools=tools))
    calls = response.function_calls
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    jsonschema.validate(calls[0].args, WEATHER)
    assert isinstance(calls[1].args["zone"], str)
    assert response.candidates[0].finish_reason == types.FinishReason.STOP


async def test_sdk_forced_call_and_function_response(client: genai.Client) -> None:
    tools = [types.Tool(function_declarations=[types.FunctionDeclaration(name="get_weather",
                                                                         parameters_json_schema=WEATHER)])]
    forced = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY"))
    first = await client.aio.models.generate_content(model=MODEL, contents="What to wear?",
                                                     config=no_afc(tools=tools, tool_config=forced))
    [call] = first.function_calls
    history = [types.Content(role="user", parts=[types.Part(text="What to wear?")]),
               first.candidates[0].content,
               types.Content(role="user", parts=[types.Part.from_function_response(
                   name=call.name, response={"temperature": 18})])]
    second = await client.aio.models.generate_content(model=MODEL, contents=history, config=no_afc(tools=tools))
    assert second.function_calls is None
    assert "get_weather" in second.text and '{"temperature":18}' in second.text


async def test_sdk_thoughts_with_signature(client: genai.Client) -> None:
    config = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True,
                                                                              thinking_budget=1024))
    response = await client.aio.models.generate_content(model=MODEL, contents="Think about it", config=config)
    parts = response.candidates[0].content.parts
    thoughts = [p for p in parts if p.thought]
    answer = [p for p in parts if not p.thought]
    assert thoughts and len(" ".join(p.text for p in thoughts).split()) == gemini.DEFAULT_THOUGHTS
    assert answer[-1].thought_signature and isinstance(answer[-1].thought_signature, bytes)
    assert response.usage_metadata.thoughts_token_count == gemini.DEFAULT_THOUGHTS
    streamed = [c async for c in await client.aio.models.generate_content_stream(
        model=MODEL, contents="Think [[sim reasoning=3]]")]
    streamed_thoughts = [p for c in streamed for p in c.candidates[0].content.parts if p.thought]
    assert len(streamed_thoughts) == 3


async def test_sdk_json_mode_and_schema(client: genai.Client) -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}, "year": {"type": "integer"},
                                               "genres": {"type": "array", "items": {"type": "string"}}},
              "required": ["title", "year", "genres"], "additionalProperties": False}
    generate = client.aio.models.generate_content
    typed = await generate(model=MODEL, contents="A film", config=types.GenerateContentConfig(
        response_mime_type="application/json", response_json_schema=schema))
    jsonschema.validate(orjson.loads(typed.text), schema)
    plain = await generate(model=MODEL, contents="Any JSON",
                           config=types.GenerateContentConfig(response_mime_type="application/json"))
    assert isinstance(orjson.loads(plain.text), dict)
    legacy_schema = types.Schema(type=types.Type.OBJECT, properties={"n": types.Schema(type=types.Type.INTEGER)},
                                 required=["n"])
    legacy = await generate(model=MODEL, contents="A film", config=types.GenerateContentConfig(
        response_mime_type="application/json", response_schema=legacy_schema))
    assert isinstance(orjson.loads(legacy.text)["n"], int)


async def test_sdk_candidate_count_and_max_tokens(client: genai.Client) -> None:
    config = types.GenerateContentConfig(candidate_count=3, max_output_tokens=2)
    response = await client.aio.models.generate_content(model=MODEL, contents="Go", config=config)
    assert [c.index or 0 for c in response.candidates] == [0, 1, 2]
    assert all(c.finish_reason == types.FinishReason.MAX_TOKENS for c in response.candidates)
    assert all(len(c.content.parts[0].text.split()) == 2 for c in response.candidates)


async def test_sdk_safety_stop(client: genai.Client) -> None:
    response = await client.aio.models.generate_content(model=MODEL, contents="[[sim finish=content_filter]]")
    candidate = response.candidates[0]
    assert candidate.finish_reason == types.FinishReason.SAFETY
    assert any(r.blocked for r in candidate.safety_ratings)


@pytest.mark.parametrize(("status", "error_class", "name"), [
    (400, errors.ClientError, "INVALID_ARGUMENT"), (401, errors.ClientError, "UNAUTHENTICATED"),
    (404, errors.ClientError, "NOT_FOUND"), (429, errors.ClientError, "RESOURCE_EXHAUSTED"),
    (500, errors.ServerError, "INTERNAL"), (503, errors.ServerError, "UNAVAILABLE"),
])
async def test_sdk_raises_for_scripted_errors(client: genai.Client, status: int, error_class: type,
                                              name: str) -> None:
    with pytest.raises(error_class) as info:
        await client.aio.models.generate_content(model=MODEL, contents=f"[[sim status={status} retry_after=4]]")
    assert (info.value.code, info.value.status) == (status, name)
    if status == 429:
        assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "4s"} in \
            info.value.details["error"]["details"]


async def test_sdk_raises_for_in_band_stream_error(client: genai.Client) -> None:
    seen: list[str] = []
    with pytest.raises(errors.ServerError) as info:
        async for chunk in await client.aio.models.generate_content_stream(model=MODEL,
                                                                           contents="[[sim error_after=2]] go"):
            seen.append(chunk.text or "")
    assert info.value.code == 503 and len(seen) == 2


async def test_sdk_lists_and_gets_models(client: genai.Client) -> None:
    names = [m.name async for m in await client.aio.models.list()]
    assert f"models/{MODEL}" in names
    model = await client.aio.models.get(model=MODEL)
    assert model.name == f"models/{MODEL}" and model.output_token_limit
    with pytest.raises(errors.ClientError) as info:
        await client.aio.models.get(model="gemini-0-nope")
    assert info.value.code == 404


async def test_sdk_assistant_role_is_rejected(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as info:
        await client.aio.models.generate_content(model=MODEL, contents=[
            types.Content(role="user", parts=[types.Part(text="hi")]),
            types.Content(role="assistant", parts=[types.Part(text="hello")])])
    assert info.value.code == 400 and info.value.message == "Please use a valid role: user, model."


# -------------------------------------------------------------- rejections --


async def post(http: aiohttp.ClientSession, sim: SimServer, body: object, *, path: str = f"{MODEL}:generateContent",
               key: str | None = "header") -> tuple[int, dict]:
    headers = {"x-goog-api-key": secrets.token_hex(8)} if key == "header" else {}
    async with http.post(f"{sim.url}/v1beta/models/{path}", data=orjson.dumps(body), headers=headers) as response:
        return response.status, await response.json(content_type=None)


def hello() -> list[dict]:
    return [{"role": "user", "parts": [{"text": "hi"}]}]


async def test_key_in_query_is_rejected(http: aiohttp.ClientSession, sim: SimServer) -> None:
    status, body = await post(http, sim, {"contents": hello()}, path=f"{MODEL}:generateContent?key=abc", key=None)
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    assert "x-goog-api-key" in body["error"]["message"]


async def test_missing_key_is_rejected(http: aiohttp.ClientSession, sim: SimServer) -> None:
    status, body = await post(http, sim, {"contents": hello()}, key=None)
    assert (status, body["error"]["status"]) == (403, "PERMISSION_DENIED")


@pytest.mark.parametrize(("body", "message"), [
    ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "Please use a valid role: user, model."),
    ({"contents": []}, "contents is not specified"),
    ({"contents": [{"role": "user", "parts": []}]}, "contents.parts must not be empty"),
    ({"contents": hello(), "generationConfig": {"maxTokens": 5}},
     "Unknown name \"maxTokens\" at 'generation_config': Cannot find field."),
    ({"contents": hello(), "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
        "type": "object", "properties": {}, "additionalPropertiez": False}}]}]},
     "Unknown name \"additionalPropertiez\" at 'tools[0].function_declarations[0].parameters'"),
    ({"contents": hello(), "temperature": 1}, 'Unknown name "temperature": Cannot find field.'),
    ({"contents": hello(), "generationConfig": {"temperature": 2.5}}, "temperature must be in [0.0, 2.0]"),
    ({"contents": hello(), "generationConfig": {"candidateCount": 9}}, "candidate_count must be in [1, 8]"),
    ({"contents": hello(), "generationConfig": {"temperature": "hot"}},
     "Invalid value at 'generation_config.temperature' (TYPE_FLOAT)"),
    ({"contents": hello(), "generationConfig": {"stopSequences": list("abcdef")}}, "at most 5 stop sequences"),
    ({"contents": [{"role": "user", "parts": {"text": "x"}}]}, "Expected a list at 'contents[0].parts'"),
    ({"contents": [*hello(), {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
     "function response turn comes immediately after a function call turn"),
    ({"contents": [*hello(), {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                   {"role": "user", "parts": [{"functionResponse": {"name": "g", "response": {}}}]}]},
     "Function response name 'g' does not match"),
    ({"contents": [*hello(), {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}},
                                                          "thoughtSignature": "not base64!"}]}]},
     "Base64 decoding failed"),
])
async def test_invalid_requests_are_rejected(http: aiohttp.ClientSession, sim: SimServer, body: dict,
                                             message: str) -> None:
    status, answer = await post(http, sim, body)
    assert status == 400 and answer["error"]["status"] == "INVALID_ARGUMENT"
    assert message in answer["error"]["message"]


async def test_snake_case_field_names_are_accepted(http: aiohttp.ClientSession, sim: SimServer) -> None:
    status, answer = await post(http, sim, {"contents": hello(), "generation_config": {"max_output_tokens": 1}})
    assert status == 200 and answer["candidates"][0]["finishReason"] == "MAX_TOKENS"


async def test_gemini3_needs_signatures_on_replayed_calls(http: aiohttp.ClientSession, sim: SimServer) -> None:
    def turn(signature: str | None) -> dict:
        part: dict = {"functionCall": {"name": "f", "args": {}}}
        if signature:
            part["thoughtSignature"] = signature
        return {"contents": [*hello(), {"role": "model", "parts": [part]},
                             {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]}
    path = "gemini-3-pro-preview:generateContent"
    status, answer = await post(http, sim, turn(None), path=path)
    assert status == 400 and "missing a thought_signature" in answer["error"]["message"]
    status, _ = await post(http, sim, turn("skip_thought_signature_validator"), path=path)
    assert status == 200


async def test_unknown_model_is_not_found(http: aiohttp.ClientSession, sim: SimServer) -> None:
    status, answer = await post(http, sim, {"contents": hello()}, path="gpt-4o:generateContent")
    assert (status, answer["error"]["status"]) == (404, "NOT_FOUND")


async def test_stream_without_alt_sse_is_a_json_array(http: aiohttp.ClientSession, sim: SimServer) -> None:
    async with http.post(f"{sim.url}/v1beta/models/{MODEL}:streamGenerateContent",
                         data=orjson.dumps({"contents": hello()}),
                         headers={"x-goog-api-key": secrets.token_hex(8)}) as response:
        assert response.content_type == "application/json"
        items = orjson.loads(await response.read())
    assert isinstance(items, list) and len(items) > 1
    assert items[-1]["candidates"][0]["finishReason"] == "STOP"
    assert "".join(p["text"] for i in items for p in i["candidates"][0]["content"]["parts"]).startswith("Simulated")
