"""The OpenAPI document the edge publishes at /openapi.json.

Request schemas are generated from the models the edge validates with
(``openai_schema``, ``anthropic_schema``). Response schemas are the models
below, closed (``additionalProperties: false``), and
``tests/e2e/test_openapi.py`` validates every kind of answer the edge sends
against them, so a field the transcoders add without adding it here fails a
test instead of drifting.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from edge.anthropic_schema import CountTokensRequest, MessagesRequest
from edge.openai_schema import ChatCompletionRequest, EmbeddingRequest


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """An object relayed as an upstream produced it (logprobs): open."""

    model_config = ConfigDict(extra="allow")


# ------------------------------------------------------- chat completions --


class ToolCallFunction(_Doc):
    name: str
    arguments: str


class GoogleExtra(_Doc):
    thought_signature: str


class ExtraContent(_Doc):
    """Google's convention for Gemini thought signatures, accepted back."""

    google: GoogleExtra


class ToolCall(_Doc):
    id: str
    type: Literal["function"]
    function: ToolCallFunction
    extra_content: ExtraContent | None = None


class ThinkingBlockOut(_Doc):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlockOut(_Doc):
    type: Literal["redacted_thinking"]
    data: str


ThinkingBlocks = list[Annotated[ThinkingBlockOut | RedactedThinkingBlockOut, Field(discriminator="type")]]


class ChoiceLogprobs(_Open):
    content: list[dict[str, Any]] | None = None
    refusal: list[dict[str, Any]] | None = None


class AssistantMessage(_Doc):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None
    annotations: list[dict[str, Any]]
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = None
    thinking_blocks: ThinkingBlocks | None = None


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class Choice(_Doc):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: FinishReason


class PromptTokensDetails(_Doc):
    cached_tokens: int
    audio_tokens: int
    cache_write_tokens: int | None = None


class CompletionTokensDetails(_Doc):
    reasoning_tokens: int
    audio_tokens: int


class CompletionUsage(_Doc):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails


class BilledUsage(_Doc):
    prompt_tokens: int
    completion_tokens: int


class ExtraFields(_Doc):
    """Bifrost's ``extra_fields``: who answered, latency and cost."""

    provider: str
    provider_type: str
    request_type: str
    model_requested: str
    model_used: str
    latency: int
    route: str | None = None
    route_version: int | None = None
    arm: str | None = None
    cost_usd: float | None = None
    billed_usage: BilledUsage | None = None


class RouteDecision(_Doc):
    route: str
    version: int
    strategy: str
    chosen: str | None
    reason: str | None


class AttemptRecord(_Doc):
    provider: str
    model: str
    route: str | None
    outcome: Literal["ok", "error", "cancelled", "skipped", "rejected"]
    retry: int
    backoff_ms: float
    error_type: str | None
    code: str | None
    status: int | None
    gate: str | None
    latency_ms: float


class CacheDecision(_Doc):
    """What the response cache did with the request, and why."""

    status: Literal["hit", "miss", "bypass"]
    reason: str | None
    stored: bool
    key: str | None
    ttl_s: int | None
    age_s: float | None


class DecisionTrace(_Doc):
    """Modelux ``mlx:trace``: never prompt text or keys."""

    resolved_by: str
    template: str | None
    routes: list[RouteDecision]
    attempts: list[AttemptRecord]
    cache: CacheDecision | None = None


class ChatCompletion(_Doc):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage | None
    system_fingerprint: str | None
    trace: DecisionTrace | None = None
    extra_fields: ExtraFields | None = None


class DeltaFunction(_Doc):
    name: str | None = None
    arguments: str


class ChoiceDeltaToolCall(_Doc):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunction
    extra_content: ExtraContent | None = None


class ChoiceDelta(_Doc):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    refusal: str | None = None
    tool_calls: list[ChoiceDeltaToolCall] | None = None
    thinking_blocks: ThinkingBlocks | None = None


class ChunkChoice(_Doc):
    index: int
    delta: ChoiceDelta
    logprobs: ChoiceLogprobs | None
    finish_reason: FinishReason | None


class ChatCompletionChunk(_Doc):
    """One ``data:`` frame of a streamed answer. The stream ends with
    ``data: [DONE]``, or, when it fails, with an ``ErrorResponse`` frame."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None
    trace: DecisionTrace | None = None
    extra_fields: ExtraFields | None = None


class ErrorBody(_Doc):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(_Doc):
    error: ErrorBody


# ------------------------------------------------------------------ models --


class Model(_Doc):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    kind: Literal["model", "alias", "route", "template"]
    version: int | None = None  # route: its current version (or the pinned one)
    strategy: Literal["fallback", "weighted", "conditional", "cascade"] | None = None
    description: str | None = None
    model: str | None = None  # alias: provider/model; template: its model


class ModelList(_Doc):
    object: Literal["list"]
    data: list[Model]


# -------------------------------------------------------------- embeddings --


class Embedding(_Doc):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # base64 of float32 little-endian with encoding_format=base64


class EmbeddingUsage(_Doc):
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(_Doc):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# ------------------------------------------------------- anthropic messages --


class TextBlockOut(_Doc):
    type: Literal["text"]
    text: str


class ToolUseBlockOut(_Doc):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


ContentBlockOut = Annotated[TextBlockOut | ThinkingBlockOut | RedactedThinkingBlockOut | ToolUseBlockOut,
                            Field(discriminator="type")]
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal",
                     "model_context_window_exceeded"]


class OutputTokensDetails(_Doc):
    thinking_tokens: int


class AnthropicUsage(_Doc):
    """``input_tokens`` excludes cache reads and writes, reported apart."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    output_tokens_details: OutputTokensDetails | None = None


class Message(_Doc):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[ContentBlockOut]
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: AnthropicUsage


class MessageStart(_Doc):
    type: Literal["message_start"]
    message: Message


class Ping(_Doc):
    type: Literal["ping"]


class ContentBlockStart(_Doc):
    type: Literal["content_block_start"]
    index: int
    content_block: ContentBlockOut


class TextDelta(_Doc):
    type: Literal["text_delta"]
    text: str


class ThinkingDelta(_Doc):
    type: Literal["thinking_delta"]
    thinking: str


class SignatureDelta(_Doc):
    type: Literal["signature_delta"]
    signature: str


class InputJSONDelta(_Doc):
    type: Literal["input_json_delta"]
    partial_json: str


class ContentBlockDelta(_Doc):
    type: Literal["content_block_delta"]
    index: int
    delta: Annotated[TextDelta | ThinkingDelta | SignatureDelta | InputJSONDelta, Field(discriminator="type")]


class ContentBlockStop(_Doc):
    type: Literal["content_block_stop"]
    index: int


class MessageDeltaBody(_Doc):
    stop_reason: StopReason
    stop_sequence: str | None


class MessageDelta(_Doc):
    type: Literal["message_delta"]
    delta: MessageDeltaBody
    usage: AnthropicUsage


class MessageStop(_Doc):
    type: Literal["message_stop"]


class AnthropicErrorBody(_Doc):
    type: Literal["invalid_request_error", "authentication_error", "billing_error", "permission_error",
                  "not_found_error", "request_too_large", "rate_limit_error", "api_error", "timeout_error",
                  "overloaded_error"]
    message: str


class AnthropicError(_Doc):
    """Errors of the Anthropic front door, as a body and as the ``error`` stream event."""

    type: Literal["error"]
    error: AnthropicErrorBody


class MessageStreamEvent(BaseModel):
    """One SSE event of a streamed message (``event:`` names its ``type``)."""

    root: Annotated[MessageStart | Ping | ContentBlockStart | ContentBlockDelta | ContentBlockStop | MessageDelta
                    | MessageStop | AnthropicError, Field(discriminator="type")]


class MessageTokensCount(_Doc):
    input_tokens: int


# ---------------------------------------------------------------- document --

RESPONSE_MODELS = (ChatCompletion, ChatCompletionChunk, ErrorResponse, ModelList, Model, CreateEmbeddingResponse,
                   Message, MessageStreamEvent, AnthropicError, MessageTokensCount)
REQUEST_MODELS = (ChatCompletionRequest, EmbeddingRequest, MessagesRequest, CountTokensRequest)
ERROR_STATUSES = (400, 401, 402, 403, 404, 408, 413, 429, 500, 502, 503, 504)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(name: str, statuses: tuple[int, ...] = ERROR_STATUSES) -> dict[str, Any]:
    return {str(status): _json(name, "Error") for status in statuses}


def _post(operation: str, request: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"post": {"operationId": operation, "requestBody": {
        "required": True, "content": {"application/json": {"schema": _ref(request)}}}, "responses": responses}}


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1: chat completions, embeddings, models, Anthropic messages."""
    _, schemas = models_json_schema(
        [(m, "validation") for m in REQUEST_MODELS] + [(m, "serialization") for m in RESPONSE_MODELS],
        ref_template="#/components/schemas/{model}", by_alias=True)
    defs = schemas["$defs"]
    # The stream event union is a plain oneOf, not an object with a "root" field.
    defs["MessageStreamEvent"] = defs["MessageStreamEvent"]["properties"]["root"]
    chat_stream = {"oneOf": [_ref("ChatCompletionChunk"), _ref("ErrorResponse")],
                   "description": "each data: frame (the stream ends with data: [DONE] unless it failed)"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchyard", "version": "1",
                 "description": "OpenAI-compatible LLM gateway, with Anthropic's Messages API as a second front door."},
        "components": {
            "schemas": defs,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {
            "/v1/chat/completions": _post("createChatCompletion", "ChatCompletionRequest", {
                "200": {"description": "A completion, or an SSE stream of chunks when stream=true",
                        "content": {"application/json": {"schema": _ref("ChatCompletion")},
                                    "text/event-stream": {"schema": chat_stream}}},
                **_errors("ErrorResponse")}),
            "/v1/embeddings": _post("createEmbedding", "EmbeddingRequest", {
                "200": _json("CreateEmbeddingResponse", "One embedding per input, in order"),
                **_errors("ErrorResponse")}),
            "/v1/models": {"get": {"operationId": "listModels", "responses": {
                "200": _json("ModelList", "Models, aliases, routing configs and templates this key may use"),
                **_errors("ErrorResponse", (401, 503))}}},
            "/v1/models/{model}": {"get": {
                "operationId": "retrieveModel",
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"},
                                "description": "a model, alias, provider/model, @slug[@version] or template"}],
                "responses": {"200": _json("Model", "The identifier as a request naming it would resolve"),
                              **_errors("ErrorResponse", (401, 403, 404, 503))}}},
            "/v1/messages": _post("createMessage", "MessagesRequest", {
                "200": {"description": "A message, or its SSE event stream when stream=true",
                        "content": {"application/json": {"schema": _ref("Message")},
                                    "text/event-stream": {"schema": _ref("MessageStreamEvent")}}},
                **_errors("AnthropicError")}),
            "/v1/messages/count_tokens": _post("countMessageTokens", "CountTokensRequest", {
                "200": _json("MessageTokensCount", "The prompt in the resolved upstream's tokens "
                                                   "(x-switchyard-tokens-estimated says whether it was estimated)"),
                **_errors("AnthropicError")}),
        },
    }
