"""The OpenTelemetry GenAI semantic conventions (semantic-conventions
v1.41.1, docs/gen-ai/) applied to Switchyard's requests: provider names,
server addresses, request parameters, usage and, only when explicitly
enabled, message content.

``gen_ai.provider.name`` uses the well-known values: ``openai``,
``anthropic``, ``gcp.gemini`` (``gcp.vertex_ai`` for an aiplatform.googleapis.com
base URL). An ``openai_compat`` server (vLLM, Ollama, llama.cpp) is reported as
``openai``: the conventions name the provider by the API flavour the client
speaks ("acts as a discriminator that identifies the GenAI telemetry format
flavor") and let ``server.address`` and the model attributes tell which
system actually answered.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import orjson

from switchyard import attributes as a
from switchyard.v1 import chat_pb2 as pb

OPERATION_CHAT = "chat"
OPERATION_EMBEDDINGS = "embeddings"
# Not among the conventions' well-known values (they have no token counting);
# Anthropic's and Gemini's own name for the call.
OPERATION_COUNT_TOKENS = "count_tokens"
OTHER_ERROR = "_OTHER"
_PROVIDER_NAMES = {"openai": "openai", "openai_compat": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


def provider_name(provider_type: str, base_url: str = "") -> str:
    """``gen_ai.provider.name`` for a provider of this config ``type``."""
    if provider_type == "gemini" and "aiplatform.googleapis.com" in base_url:
        return "gcp.vertex_ai"
    return _PROVIDER_NAMES.get(provider_type, provider_type or OTHER_ERROR)


@lru_cache(maxsize=256)
def server_address(base_url: str) -> tuple[str, int] | None:
    """(host, port) of an upstream base URL (the port made explicit)."""
    try:
        parts = urlsplit(base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname else None


def response_id(request: pb.ChatRequest) -> str:
    """The completion's id as the client receives it (the edge's front doors
    name it after the request id)."""
    prefix = "msg_" if request.native.api == "anthropic" else "chatcmpl-"
    return prefix + request.request_id


def request_attributes(request: pb.ChatRequest) -> dict[str, Any]:
    """``gen_ai.request.*`` set on the request (sampling overrides included)."""
    s = request.sampling
    out: dict[str, Any] = {a.GEN_AI_REQUEST_STREAM: request.stream} if request.stream else {}
    max_tokens = s.max_completion_tokens if s.HasField("max_completion_tokens") else \
        s.max_tokens if s.HasField("max_tokens") else None
    if max_tokens is not None:
        out[a.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
    if s.HasField("temperature"):
        out[a.GEN_AI_REQUEST_TEMPERATURE] = s.temperature
    if s.HasField("top_p"):
        out[a.GEN_AI_REQUEST_TOP_P] = s.top_p
    if s.HasField("top_k"):
        out[a.GEN_AI_REQUEST_TOP_K] = float(s.top_k)
    if s.HasField("frequency_penalty"):
        out[a.GEN_AI_REQUEST_FREQUENCY_PENALTY] = s.frequency_penalty
    if s.HasField("presence_penalty"):
        out[a.GEN_AI_REQUEST_PRESENCE_PENALTY] = s.presence_penalty
    if s.HasField("seed"):
        out[a.GEN_AI_REQUEST_SEED] = s.seed
    if s.stop:
        out[a.GEN_AI_REQUEST_STOP_SEQUENCES] = list(s.stop)
    if s.n > 1:
        out[a.GEN_AI_REQUEST_CHOICE_COUNT] = s.n
    kind = request.response_format.type
    if kind:
        out[a.GEN_AI_OUTPUT_TYPE] = "text" if kind == "text" else "json"
    if request.routing.session_id:
        out[a.GEN_AI_CONVERSATION_ID] = request.routing.session_id
    return out


def usage_attributes(usage: pb.Usage) -> dict[str, int]:
    """``gen_ai.usage.*``: input tokens include cached ones, as the conventions ask."""
    out = {a.GEN_AI_USAGE_INPUT_TOKENS: usage.prompt_tokens, a.GEN_AI_USAGE_OUTPUT_TOKENS: usage.completion_tokens}
    if usage.cached_tokens:
        out[a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cached_tokens
    if usage.cache_write_tokens:
        out[a.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = usage.cache_write_tokens
    if usage.reasoning_tokens:
        out[a.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning_tokens
    return out


def error_type(error: pb.Error) -> str:
    """``error.type``: the error code the gateway or the provider reported,
    else its OpenAI error type."""
    return error.code or error.type or OTHER_ERROR


# ------------------------------------------------- opt-in content capture --

def input_messages(request: pb.ChatRequest) -> str:
    """``gen_ai.input.messages`` (JSON text, the conventions' schema): text
    parts and tool calls; other parts are named by type only."""
    messages = []
    for message in request.messages:
        parts: list[dict[str, Any]] = []
        if message.HasField("text"):
            parts.append({"type": "text", "content": message.text})
        for part in message.parts.parts:
            kind = part.WhichOneof("part")
            parts.append({"type": "text", "content": part.text} if kind == "text" else {"type": kind})
        for call in message.tool_calls:
            parts.append({"type": "tool_call", "id": call.id, "name": call.function.name,
                          "arguments": call.function.arguments})
        if message.role == "tool":
            parts = [{"type": "tool_call_response", "id": message.tool_call_id,
                      "response": message.text}]
        messages.append({"role": message.role, "parts": parts})
    return orjson.dumps(messages).decode()


def output_messages(texts: dict[int, list[str]], reasons: dict[int, str]) -> str:
    """``gen_ai.output.messages`` (JSON text): one message per choice."""
    return orjson.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "".join(texts.get(i, ()))}],
                          "finish_reason": reasons.get(i, "")} for i in sorted(set(texts) | set(reasons))]).decode()


def finish_reasons(reasons: dict[int, str]) -> list[str]:
    return [reasons[i] for i in sorted(reasons)]


def note_chunk(chunk: pb.Chunk, reasons: dict[int, str], texts: dict[int, list[str]] | None) -> None:
    """Finish reasons (and, when content is captured, text) of one chunk."""
    for delta in chunk.choices:
        if delta.finish_reason:
            reasons[delta.index] = delta.finish_reason
        if texts is not None and delta.content:
            texts.setdefault(delta.index, []).append(delta.content)
