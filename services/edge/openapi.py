"""The OpenAPI document the edge publishes at /openapi.json: the request
schema from ``openai_schema`` plus response models written for it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from edge.openai_schema import ChatCompletionRequest


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class ToolCallFunction(_Doc):
    name: str
    arguments: str


class ToolCall(_Doc):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class TokenLogprob(_Doc):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[dict[str, Any]] = []


class ChoiceLogprobs(_Doc):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class AssistantMessage(_Doc):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    annotations: list[dict[str, Any]] = []
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = None
    thinking_blocks: list[dict[str, Any]] | None = None


class Choice(_Doc):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class CompletionUsage(_Doc):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None
    completion_tokens_details: dict[str, int] | None = None


class ChatCompletion(_Doc):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None


class ChoiceDeltaToolCall(_Doc):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict[str, str] | None = None


class ChoiceDelta(_Doc):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    refusal: str | None = None
    tool_calls: list[ChoiceDeltaToolCall] | None = None


class ChunkChoice(_Doc):
    index: int
    delta: ChoiceDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter", "function_call"] | None = None


class ChatCompletionChunk(_Doc):
    """One ``data:`` frame of a streamed answer; the stream ends with ``data: [DONE]``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None


class Model(_Doc):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(_Doc):
    object: Literal["list"] = "list"
    data: list[Model]


class ErrorBody(_Doc):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Doc):
    error: ErrorBody


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 for POST /v1/chat/completions and GET /v1/models."""
    _, schemas = models_json_schema(
        [(ChatCompletionRequest, "validation"), (ChatCompletion, "serialization"),
         (ChatCompletionChunk, "serialization"), (ModelList, "serialization"), (ErrorResponse, "serialization")],
        ref_template="#/components/schemas/{model}", by_alias=True)

    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    error = {"description": "OpenAI error envelope", "content": {"application/json": {"schema": ref("ErrorResponse")}}}
    errors = {str(code): error for code in (400, 401, 402, 403, 404, 413, 429, 502, 503, 504)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchyard", "version": "1", "description": "OpenAI-compatible LLM gateway."},
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/chat/completions": {"post": {
                "operationId": "createChatCompletion",
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": ref("ChatCompletionRequest")}}},
                "responses": {"200": {"description": "A completion, or an SSE stream of chunks when stream=true",
                                      "content": {"application/json": {"schema": ref("ChatCompletion")},
                                                  "text/event-stream": {"schema": ref("ChatCompletionChunk")}}},
                              **errors},
            }},
            "/v1/models": {"get": {
                "operationId": "listModels",
                "responses": {"200": {"description": "Models this key may use",
                                      "content": {"application/json": {"schema": ref("ModelList")}}},
                              "401": error, "503": error},
            }},
        },
    }
