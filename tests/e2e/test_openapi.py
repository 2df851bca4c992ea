"""Every kind of answer the edge sends validates against the document it
publishes at /openapi.json: the status must be listed for the path, and the
body (or each SSE frame) must match its closed schema. A field the
transcoders add without the document knowing it fails here."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import jsonschema
import pytest

from deploy.local.mesh import Mesh
from tests.e2e.conftest import marker

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
WEATHER = {"name": "get_weather", "input_schema": WEATHER_TOOL["function"]["parameters"]}
HI = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> tuple[str, str, dict[str, Any]]:
    return "POST", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HI, **fields}


def messages(**fields: Any) -> tuple[str, str, dict[str, Any]]:
    return "POST", "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 2048, "messages": HI, **fields}


CASES: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "chat": chat(),
    "chat tools": chat(tools=[WEATHER_TOOL], tool_choice="required"),
    "chat n, logprobs, trace": chat(n=2, logprobs=True, top_logprobs=2, **{"mlx:trace": True}),
    "chat anthropic thinking": chat(model="claude-sonnet-4-5", reasoning_effort="low"),
    "chat compat reasoning": chat(model="sim-backup", messages=[{"role": "user", "content": "[[sim reasoning=3]] x"}]),
    "chat gemini 3 tools": chat(model="gemini-3-flash-preview", reasoning_effort="low", tools=[WEATHER_TOOL],
                                tool_choice="required"),
    "chat json": chat(response_format={"type": "json_object"}, messages=[{"role": "user", "content": "JSON"}]),
    "chat stream": chat(stream=True, stream_options={"include_usage": True}, **{"mlx:trace": True}),
    "chat stream tools": chat(stream=True, tools=[WEATHER_TOOL], tool_choice="required"),
    "chat stream thinking": chat(model="claude-sonnet-4-5", reasoning_effort="low", stream=True),
    "chat stream gemini 3 tools": chat(model="gemini-3-flash-preview", reasoning_effort="low", stream=True,
                                       tools=[WEATHER_TOOL], tool_choice="required"),
    "chat stream fails midway": chat(stream=True, messages=[{"role": "user", "content": "[[sim error_after=1]] x"}]),
    "chat 400": chat(temperature=5),
    "chat 403": chat(model="claude-sonnet-4-5"),  # with the limited key, below
    "chat 404": chat(model="no-such-model"),
    "chat 429": chat(messages=[{"role": "user", "content": "[[sim status=429 retry_after=1]]"}]),
    "chat 502": chat(messages=[{"role": "user", "content": "[[sim status=500]]"}]),
    "models": ("GET", "/v1/models", None),
    "model": ("GET", "/v1/models/@production", None),
    "model 404": ("GET", "/v1/models/no-such-model", None),
    "embeddings": ("POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"]}),
    "embeddings base64": ("POST", "/v1/embeddings", {"model": "gemini-embedding-001", "input": "a",
                                                     "encoding_format": "base64"}),
    "embeddings 400": ("POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": ""}),
    "messages": messages(system="Be brief."),
    "messages thinking and tools": messages(thinking={"type": "enabled", "budget_tokens": 1024}, tools=[WEATHER],
                                            messages=[{"role": "user", "content": "call get_weather"}]),
    "messages from openai": messages(model="gpt-4o-mini", tools=[WEATHER], tool_choice={"type": "any"}),
    "messages stream": messages(stream=True, thinking={"type": "enabled", "budget_tokens": 1024}, tools=[WEATHER],
                                messages=[{"role": "user", "content": "call get_weather"}]),
    "messages stream fails midway": messages(model="gpt-4o-mini", stream=True,
                                             messages=[{"role": "user", "content": "[[sim error_after=1]] x"}]),
    "messages 400": messages(max_tokens=0),
    "messages 404": messages(model="no-such-model"),
    "count tokens": ("POST", "/v1/messages/count_tokens", {"model": "claude-sonnet-4-5", "messages": HI}),
    "count tokens 400": ("POST", "/v1/messages/count_tokens", {"model": "claude-sonnet-4-5"}),
}


# What a case must show, so the rarer fields are really checked against the document.
SHOWS = {"chat tools": '"tool_calls"', "chat n, logprobs, trace": '"top_logprobs"',
         "chat anthropic thinking": '"thinking_blocks"', "chat compat reasoning": '"reasoning_content"',
         "chat gemini 3 tools": '"thought_signature"', "chat stream": '"extra_fields"',
         "chat stream thinking": '"thinking_blocks"', "chat stream gemini 3 tools": '"thought_signature"',
         "chat stream fails midway": '"error"', "messages thinking and tools": '"signature"',
         "messages stream": '"signature_delta"', "messages stream fails midway": 'event: error',
         "embeddings base64": '"embedding":"'}


@pytest.fixture(scope="module")
async def document(mesh: Mesh) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{mesh.public_port}/openapi.json") as r:
        return await r.json()


def validate(document: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    root = {**schema, "components": document["components"]}
    jsonschema.Draft202012Validator(root).validate(instance)


def frames(body: str) -> list[Any]:
    """The JSON payload of each SSE frame ([DONE] and comments left out)."""
    out = []
    for frame in body.strip().split("\n\n"):
        data = [line.removeprefix("data: ") for line in frame.split("\n") if line.startswith("data: ")]
        if data and data[0] != "[DONE]":
            out.append(json.loads(data[0]))
    return out


@pytest.mark.parametrize("case", list(CASES))
async def test_answer_matches_the_document(mesh: Mesh, document: dict[str, Any], case: str) -> None:
    method, path, body = CASES[case]
    key = mesh.limited_key if case == "chat 403" else mesh.api_key  # type: ignore[attr-defined]
    headers = {"authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"}
    if body is not None and "content" in str(body.get("messages", "")):
        body = json.loads(json.dumps(body).replace('"hi"', f'"hi {marker()}"'))
    async with aiohttp.ClientSession() as http, http.request(method, mesh.base_url.removesuffix("/v1") + path,
                                                             json=body, headers=headers) as response:
        status, ctype, text = response.status, response.content_type, await response.text()
        assert response.headers["x-request-id"]
    assert SHOWS.get(case, "") in text, text[:500]
    template = "/v1/models/{model}" if path.startswith("/v1/models/") else path
    responses = document["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, f"{case}: status {status} is not in the document for {template}: {text[:300]}"
    if case.split()[-1].isdigit():
        assert status == int(case.split()[-1]), text[:300]
    else:
        assert status == 200, text[:300]
    schema = responses[str(status)]["content"][ctype]["schema"]
    if ctype == "text/event-stream":
        events = frames(text)
        assert events
        for event in events:
            validate(document, schema, event)
    else:
        validate(document, schema, json.loads(text))


async def test_unknown_url_is_an_error_envelope(mesh: Mesh, document: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{mesh.base_url}/no/such/path") as response:
        assert response.status == 404 and response.headers["x-request-id"]
        validate(document, {"$ref": "#/components/schemas/ErrorResponse"}, await response.json())


def test_every_path_of_the_edge_is_documented(document: dict[str, Any]) -> None:
    paths = set(document["paths"])
    assert {"/v1/chat/completions", "/v1/embeddings", "/v1/models", "/v1/models/{model}", "/v1/messages",
            "/v1/messages/count_tokens"} <= paths
    tested = {"/v1/models/{model}" if p.startswith("/v1/models/") else p for _, p, _ in CASES.values()}
    assert {p for p in paths if not p.startswith("/v1/analytics")} == tested
