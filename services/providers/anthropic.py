"""The Anthropic Messages API (``POST /v1/messages``).

Request side: system/developer messages are lifted to ``system``, turns are
merged so roles alternate, tool calls and results become ``tool_use`` and
``tool_result`` blocks, signed reasoning is handed back as ``thinking`` blocks,
``reasoning_effort`` becomes a thinking budget (older models) or adaptive
thinking with an effort level (models that only accept that), and
``json_schema`` uses native structured outputs (``output_config.format``).
``json_object`` has no native switch, so it is asked for in the system prompt
and the answer is checked to be a JSON object (one retry, else an error).

Response side: content blocks (text, tool_use, thinking, redacted_thinking)
become one canonical choice; tool calls are numbered among tool_use blocks
only, and a finished thinking block is emitted whole with its signature.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import orjson

from providers import timing
from providers.anthropic_request import EXTRA_FIELDS, has_unenforced_keywords, request_body
from providers.anthropic_stream import StreamState, load_json, message_delta, usage_from
from providers.base import (
    Capabilities,
    SSEEvent,
    Translator,
    UpstreamProtocolError,
    UpstreamRequest,
    UpstreamStreamError,
    UpstreamTruncatedError,
)
from providers.errors import retry_after_ms, upstream_error
from providers.sanitize import log_upstream_text
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb

ANTHROPIC_VERSION = "2023-06-01"
# What /v1/messages/count_tokens accepts of a Messages body.
COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config",
                          "cache_control", "speed", "context_management", "mcp_servers"})

# Anthropic field names (the first segment of an error message) -> the OpenAI request field.
ERROR_PARAMS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "max_tokens": "max_tokens",
                "stop_sequences": "stop", "tools": "tools", "tool_choice": "tool_choice", "messages": "messages",
                "system": "messages", "thinking": "reasoning_effort", "output_config": "response_format",
                "metadata": "user"}

_ERROR_FIELD = re.compile(r"^([a-z_]+)(?:\.[\w.]+)?\s*:")


class AnthropicTranslator(Translator):
    type = "anthropic"
    capabilities = Capabilities(
        n=False, json_schema=True,
        extra_fields=EXTRA_FIELDS,
    )

    def needs_output_validation(self, request: pb.ChatRequest) -> bool:
        """``json_object`` is only asked for in the system prompt, so the
        answer is checked (and retried once). Structured outputs is native,
        but bounds it cannot enforce are only described to the model, so such
        schemas are validated afterwards."""
        if request.response_format.type == "json_object":
            return True
        if request.response_format.type != "json_schema" or not request.response_format.schema_json:
            return False
        try:
            return has_unenforced_keywords(orjson.loads(request.response_format.schema_json))
        except orjson.JSONDecodeError:
            return False

    def build_request(self, request: pb.ChatRequest, model: str, *, stream: bool) -> UpstreamRequest:
        self.check_extra(request)
        body = request_body(request, model, stream=stream, configured_max=self._configured_max(model))
        headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        if stream:
            headers["accept"] = "text/event-stream"
        root = self.spec.base_url.rstrip("/")
        url = f"{root}/messages" if root.endswith("/v1") else f"{root}/v1/messages"
        return UpstreamRequest("POST", url, headers, orjson.dumps(body))

    def build_count_request(self, request: pb.ChatRequest, model: str) -> UpstreamRequest:
        """``/v1/messages/count_tokens``: the request's body without the
        fields that only shape the answer."""
        self.check_extra(request)
        full = request_body(request, model, stream=False, configured_max=self._configured_max(model))
        body = {key: value for key, value in full.items() if key in COUNT_FIELDS}
        headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        root = self.spec.base_url.rstrip("/")
        url = f"{root}/messages/count_tokens" if root.endswith("/v1") else f"{root}/v1/messages/count_tokens"
        return UpstreamRequest("POST", url, headers, orjson.dumps(body))

    def parse_count_response(self, body: bytes) -> int:
        data = load_json(body)
        tokens = data.get("input_tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, int):
            raise UpstreamProtocolError("Anthropic's count_tokens answer has no input_tokens")
        return tokens

    def parse_response(self, body: bytes, model: str) -> Iterable[ppb.GenerateEvent]:
        message = load_json(body)
        if isinstance(message, dict) and message.get("type") == "error":
            raise UpstreamStreamError(self.stream_error(message))
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise UpstreamProtocolError("Anthropic response has no content list")
        timing.note_answer(message.get("id"), message.get("model"))
        delta = message_delta(message)
        return [ppb.GenerateEvent(chunk=pb.Chunk(choices=[delta])),
                ppb.GenerateEvent(usage=usage_from(message.get("usage") or {}))]

    async def stream_events(self, events: AsyncIterator[SSEEvent], model: str) -> AsyncIterator[ppb.GenerateEvent]:
        state = StreamState(self.stream_error)
        async for event in events:
            if not event.data:
                continue
            payload = load_json(event.data.encode())
            if not isinstance(payload, dict):
                raise UpstreamProtocolError("Anthropic stream event is not a JSON object")
            if payload.get("type") == "message_start" and isinstance(message := payload.get("message"), dict):
                timing.note_answer(message.get("id"), message.get("model"))
            for out in state.feed(payload):
                yield out
            if state.stopped:
                return
        raise UpstreamTruncatedError(f"{self.provider} ended its stream without message_stop")

    def map_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> pb.Error:
        return self._error(status, _error_message(body), retry_after_ms(headers))

    def stream_error(self, payload: dict[str, Any]) -> pb.Error:
        """The canonical error for an in-band ``error`` event (or a 200 whose
        body is one): its type stands for the status Anthropic gives it."""
        err = payload.get("error") if isinstance(payload.get("error"), dict) else {}
        message = str(err.get("message") or "")
        log_upstream_text(self.provider, 200, message)
        return self._error(STATUS_FOR_TYPE.get(str(err.get("type") or ""), 500), message, 0)

    def _error(self, status: int, message: str, retry_ms: int) -> pb.Error:
        """The shared table covers Anthropic's statuses (529 overloaded
        included); only the parameter named by the message is Anthropic's."""
        match = _ERROR_FIELD.match(message)
        param = ERROR_PARAMS.get(match.group(1), "") if match else ""
        return upstream_error(self.provider, status, message, param=param, retry_after_ms=retry_ms,
                              secrets=(self.api_key,))

    def _configured_max(self, model: str) -> int | None:
        spec = self.spec.model(model)
        return spec.max_output_tokens if spec else None


# ------------------------------------------------------------------- errors --

# Error type -> the HTTP status Anthropic uses for it (for in-band stream errors).
STATUS_FOR_TYPE = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                   "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                   "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529}


def _error_message(body: bytes) -> str:
    """The message of an Anthropic error body (the text itself when not JSON)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode(errors="replace").strip()
    err = payload.get("error") if isinstance(payload, dict) else None
    return str(err.get("message") or "") if isinstance(err, dict) else ""
