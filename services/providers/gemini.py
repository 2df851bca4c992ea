"""Google Gemini API translator (``generateContent`` / ``streamGenerateContent``).

Wire format: camelCase JSON on ``{base}/v1beta/models/{model}:...``; the key
goes only in ``x-goog-api-key``. Gemini function calls carry no ids, so calls
get OpenAI-style ``call_<hex>`` ids here and tool results are matched back to
function names through the assistant turn that made the calls. A call's
``thoughtSignature`` rides along in ``ToolCallDelta.signature`` and comes back
as ``ToolCall.signature``.

Decisions worth knowing:
- ``MALFORMED_FUNCTION_CALL`` (and the other non-safety, non-length stops)
  maps to ``stop``: the candidate simply ends; nothing OpenAI-shaped fits better.
- ``promptFeedback.blockReason`` without candidates becomes one empty choice
  finished by ``content_filter``.
- ``FAILED_PRECONDITION`` (HTTP 400 from Gemini) stays a 400, but a 400 whose
  reason is ``API_KEY_INVALID`` is the gateway's fault: 502 upstream_auth_error.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import orjson

from providers import timing
from providers.base import (
    Capabilities,
    Embeddings,
    SSEEvent,
    Translator,
    UpstreamProtocolError,
    UpstreamRequest,
    UpstreamStreamError,
    UpstreamTruncatedError,
    plain_extra,
)
from providers.errors import AUTH, INVALID, class_for_status, retry_after_ms, upstream_error
from providers.gemini_embed import embed_body, embed_url, parse_embeddings
from providers.gemini_request import (
    apply_extra,
    convert_messages,
    convert_tool_choice,
    convert_tools,
    endpoint_url,
    generation_config,
)
from providers.gemini_stream import (
    CandidateState,
    blocked_delta,
    candidate_delta,
    load_json,
    stream_deltas,
    usage_from,
)
from providers.sanitize import log_upstream_text
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb
from switchyard.v1 import provider_pb2 as ppb

_FIELD_PARAMS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "max_output_tokens": "max_tokens",
                 "candidate_count": "n", "stop_sequences": "stop", "seed": "seed",
                 "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
                 "response_mime_type": "response_format", "response_schema": "response_format",
                 "response_json_schema": "response_format", "thinking_config": "reasoning_effort",
                 "response_logprobs": "logprobs", "logprobs": "top_logprobs"}
_TOP_PARAMS = {"contents": "messages", "system_instruction": "messages", "tools": "tools",
               "tool_config": "tool_choice"}
_FIELD_IN_MESSAGE = re.compile(r"(?:at '|GenerateContentRequest\.)([A-Za-z_][\w.\[\]]*)")
# ------------------------------------------------------------------- errors --


def retry_delay_ms(headers: Mapping[str, str], details: list[Any]) -> int:
    """From the retry headers, else RetryInfo.retryDelay ("2s") in the error details."""
    from_headers = retry_after_ms(headers)
    if from_headers:
        return from_headers
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(detail.get("retryDelay", "")))
            if match:
                return int(float(match.group(1)) * 1000)
    return 0


def param_from(details: list[Any], message: str) -> str:
    """The OpenAI parameter behind a Gemini field path, if one is named."""
    fields = [v.get("field", "") for d in details if isinstance(d, dict)
              for v in d.get("fieldViolations") or [] if isinstance(v, dict)]
    match = _FIELD_IN_MESSAGE.search(message)
    if match:
        fields.append(match.group(1))
    for field in fields:
        path = [re.sub(r"(?<!^)([A-Z])", r"_\1", p).lower() for p in re.split(r"[.\[]", field) if p]
        path = [p for p in path if p != "generate_content_request"]
        if not path:
            continue
        if path[0] == "generation_config" and len(path) > 1:
            return _FIELD_PARAMS.get(path[1], "")
        if path[0] in _TOP_PARAMS:
            return _TOP_PARAMS[path[0]]
    return ""


# Gemini's status string -> its HTTP status, for an error body without a code.
STATUS_FOR_NAME = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
                   "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429,
                   "CANCELLED": 499, "INTERNAL": 500, "UNKNOWN": 500, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}


# --------------------------------------------------------------- translator --


class GeminiTranslator(Translator):
    type = "gemini"
    capabilities = Capabilities(n=True, json_schema=True,
                                extra_fields=frozenset({"safety_settings", "thinking_config", "thinking",
                                                        "cached_content"}))

    def build_request(self, request: pb.ChatRequest, model: str, *, stream: bool) -> UpstreamRequest:
        self.check_extra(request)
        system, contents = convert_messages(request.messages, model)
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = system
        tools = convert_tools(request.tools)
        if tools:
            body["tools"] = tools
            tool_config = convert_tool_choice(request.tool_choice)
            if tool_config:
                body["toolConfig"] = tool_config
        body["generationConfig"] = generation_config(request, model)
        apply_extra(body, plain_extra(request))
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["x-goog-api-key"] = self.api_key
        return UpstreamRequest("POST", endpoint_url(self.spec.base_url, model, stream=stream), headers,
                               orjson.dumps(body))

    def build_count_request(self, request: pb.ChatRequest, model: str) -> UpstreamRequest:
        """``models/{model}:countTokens`` over the whole generate request
        (system instruction and tools included)."""
        generate = orjson.loads(self.build_request(request, model, stream=False).body)
        generate["model"] = "models/" + model.removeprefix("models/")
        url = endpoint_url(self.spec.base_url, model, stream=False).rsplit(":", 1)[0] + ":countTokens"
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["x-goog-api-key"] = self.api_key
        return UpstreamRequest("POST", url, headers, orjson.dumps({"generateContentRequest": generate}))

    def parse_count_response(self, body: bytes) -> int:
        data = load_json(body, "response")
        tokens = data.get("totalTokens")
        if not isinstance(tokens, int):
            raise UpstreamProtocolError("Gemini's countTokens answer has no totalTokens")
        return tokens

    def build_embed_request(self, request: epb.EmbedRequest, model: str) -> UpstreamRequest:
        batch, body = embed_body(request, model)
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["x-goog-api-key"] = self.api_key
        return UpstreamRequest("POST", embed_url(self.spec.base_url, model, batch=batch), headers, orjson.dumps(body))

    def parse_embed_response(self, body: bytes, request: epb.EmbedRequest) -> Embeddings:
        return parse_embeddings(body, request)

    def parse_response(self, body: bytes, model: str) -> Iterable[ppb.GenerateEvent]:
        data = load_json(body, "response")
        if "error" in data:
            raise UpstreamStreamError(self._error_from_payload(data["error"], 0, {}))
        timing.note_answer(data.get("responseId"), data.get("modelVersion"))
        chunk = pb.Chunk()
        candidates = data.get("candidates") or []
        for position, candidate in enumerate(candidates):
            state = CandidateState()
            index = candidate.get("index", position)
            delta = candidate_delta(candidate, index, state) or pb.ChoiceDelta(index=index)
            delta.role = "assistant"
            if not delta.has_content and not delta.tool_calls:
                delta.has_content = True
            if not delta.finish_reason:
                delta.finish_reason = "tool_calls" if state.calls else "stop"
            chunk.choices.append(delta)
        if not candidates:
            if not (data.get("promptFeedback") or {}).get("blockReason"):
                raise UpstreamProtocolError("Gemini answered with no candidates and no block reason")
            chunk.choices.append(blocked_delta())
        chunk.choices.sort(key=lambda d: d.index)
        yield ppb.GenerateEvent(chunk=chunk)
        yield ppb.GenerateEvent(usage=usage_from(data.get("usageMetadata") or {}))

    async def stream_events(self, events: AsyncIterator[SSEEvent], model: str) -> AsyncIterator[ppb.GenerateEvent]:
        states: dict[int, CandidateState] = {}
        metadata: dict[str, Any] = {}
        blocked = named = False
        async for event in events:
            if not event.data.strip():
                continue
            data = load_json(event.data, "stream")
            if "error" in data:
                log_upstream_text(self.provider, 200, event.data)
                raise UpstreamStreamError(self._error_from_payload(data["error"], 0, {}))
            if not named:
                named = timing.note_answer(data.get("responseId"), data.get("modelVersion"))
            metadata = data.get("usageMetadata") or metadata
            chunk = pb.Chunk()
            for position, candidate in enumerate(data.get("candidates") or []):
                index = candidate.get("index", position)
                delta = candidate_delta(candidate, index, states.setdefault(index, CandidateState()))
                if delta is not None:
                    chunk.choices.extend(stream_deltas(delta))
            if not data.get("candidates") and (data.get("promptFeedback") or {}).get("blockReason") and not blocked:
                blocked = True
                chunk.choices.append(blocked_delta())
            if chunk.choices:
                yield ppb.GenerateEvent(chunk=chunk)
        if not blocked and (not states or not all(s.finished for s in states.values())):
            raise UpstreamTruncatedError(f"{self.provider} ended its stream before a finishReason")
        yield ppb.GenerateEvent(usage=usage_from(metadata))

    def map_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> pb.Error:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        if isinstance(payload, list) and payload:  # streamGenerateContent without alt=sse wraps it in an array
            payload = payload[0]
        error = payload.get("error") if isinstance(payload, dict) else None
        return self._error_from_payload(error if isinstance(error, dict) else {}, status, headers)

    def _error_from_payload(self, error: Mapping[str, Any], status: int, headers: Mapping[str, str]) -> pb.Error:
        """The shared table by HTTP status; Gemini's difference: a 400 whose
        reason is API_KEY_INVALID is the gateway's key, not the client's
        request. A 400 keeps Gemini's status string as its code."""
        name = str(error.get("status", ""))
        code = error.get("code")
        status = status or (code if isinstance(code, int) else 0) or STATUS_FOR_NAME.get(name, 500)
        details = [d for d in error.get("details") or [] if isinstance(d, dict)]
        reasons = {str(d.get("reason", "")) for d in details}
        message = str(error.get("message", ""))
        return upstream_error(self.provider, status, message, kind=AUTH if "API_KEY_INVALID" in reasons else None,
                              code=name.lower() if class_for_status(status) is INVALID else "",
                              param=param_from(details, message), retry_after_ms=retry_delay_ms(headers, details),
                              secrets=(self.api_key,))


