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

import mimetypes
import re
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from providers.base import (
    Capabilities,
    SSEEvent,
    Translator,
    UpstreamProtocolError,
    UpstreamRequest,
    UpstreamStreamError,
    plain_extra,
)
from providers.upstream import retry_after_ms
from switchyard.errors import InvalidRequestError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb

API_VERSION = "v1beta"
# Gemini 2.5 takes a token budget; these are the budgets per OpenAI effort.
THINKING_BUDGETS = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
# Gemini 3 and later take a level instead (see thinking_level for per-model limits).
THINKING_LEVELS = {"none": "MINIMAL", "minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH",
                   "xhigh": "HIGH"}
# Accepted in place of a real signature on replayed calls that never had one
# (e.g. history produced by another provider); Gemini 3 rejects unsigned calls.
SKIP_SIGNATURE = "skip_thought_signature_validator"
CONTENT_FILTER_REASONS = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
                                    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"})
_FIELD_PARAMS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "max_output_tokens": "max_tokens",
                 "candidate_count": "n", "stop_sequences": "stop", "seed": "seed",
                 "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
                 "response_mime_type": "response_format", "response_schema": "response_format",
                 "response_json_schema": "response_format", "thinking_config": "reasoning_effort",
                 "response_logprobs": "logprobs", "logprobs": "top_logprobs"}
_TOP_PARAMS = {"contents": "messages", "system_instruction": "messages", "tools": "tools",
               "tool_config": "tool_choice"}
_FIELD_IN_MESSAGE = re.compile(r"(?:at '|GenerateContentRequest\.)([A-Za-z_][\w.\[\]]*)")
_GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{20,}")
_DATA_URI = re.compile(r"^data:([^;,]+)?((?:;[^;,]*)*?);base64,(.*)$", re.DOTALL)


# ------------------------------------------------------------------ request --


def endpoint_url(base_url: str, model: str, *, stream: bool) -> str:
    """``{base}/v1beta/models/{model}:method``; a base that already ends in an
    API version is kept as is."""
    base = base_url.rstrip("/")
    if not re.search(r"/v1(beta\d*|alpha)?$", urlsplit(base).path):
        base = f"{base}/{API_VERSION}"
    name = quote(model.removeprefix("models/"), safe="-._~")
    if stream:
        return f"{base}/models/{name}:streamGenerateContent?alt=sse"
    return f"{base}/models/{name}:generateContent"


def message_text(message: pb.Message) -> str:
    if message.WhichOneof("content") == "text":
        return message.text
    return "".join(p.text for p in message.parts.parts if p.WhichOneof("part") == "text")


def image_part(url: str, where: str) -> dict[str, Any]:
    if url.startswith("data:"):
        return inline_part(url, where, "image/jpeg")
    if url.startswith(("http://", "https://")):
        mime = mimetypes.guess_type(urlsplit(url).path)[0] or "image/jpeg"
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise InvalidRequestError("image_url must be an http(s) URL or a base64 data URI", param=where)


def inline_part(uri: str, where: str, default_mime: str) -> dict[str, Any]:
    match = _DATA_URI.match(uri)
    if match is None:
        raise InvalidRequestError("expected a base64 data URI (data:<mime>;base64,<data>)", param=where)
    return {"inlineData": {"mimeType": match.group(1) or default_mime, "data": match.group(3)}}


def content_parts(message: pb.Message, where: str) -> list[dict[str, Any]]:
    """Gemini parts for a user/assistant message's content."""
    kind = message.WhichOneof("content")
    if kind == "text":
        return [{"text": message.text}] if message.text else []
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(message.parts.parts if kind == "parts" else ()):
        at = f"{where}.content[{j}]"
        which = part.WhichOneof("part")
        if which == "text" and part.text:
            parts.append({"text": part.text})
        elif which == "refusal" and part.refusal:
            parts.append({"text": part.refusal})
        elif which == "image_url":
            parts.append(image_part(part.image_url.url, f"{at}.image_url.url"))
        elif which == "input_audio":
            mime = "audio/mp3" if part.input_audio.format == "mp3" else f"audio/{part.input_audio.format or 'wav'}"
            parts.append({"inlineData": {"mimeType": mime, "data": part.input_audio.data}})
        elif which == "file":
            if not part.file.file_data:
                raise InvalidRequestError("Gemini needs file content inline (file_data); file_id is not supported",
                                          param=f"{at}.file.file_id")
            parts.append(inline_part(part.file.file_data, f"{at}.file.file_data", "application/pdf"))
    return parts


def function_call_part(call: pb.ToolCall, where: str) -> dict[str, Any]:
    try:
        args = orjson.loads(call.function.arguments or "{}")
    except orjson.JSONDecodeError:
        raise InvalidRequestError("tool call arguments must be a JSON object",
                                  param=f"{where}.function.arguments") from None
    if not isinstance(args, dict):
        raise InvalidRequestError("tool call arguments must be a JSON object", param=f"{where}.function.arguments")
    part: dict[str, Any] = {"functionCall": {"name": call.function.name, "args": args}}
    if call.signature:
        part["thoughtSignature"] = call.signature
    return part


def function_response_part(message: pb.Message, names: Mapping[str, str], where: str) -> dict[str, Any]:
    """A tool (or legacy function) result; its function name is recovered from
    the assistant turn that issued ``tool_call_id``."""
    name = names.get(message.tool_call_id) or message.name
    if not name:
        raise InvalidRequestError("tool message does not answer any tool call made earlier in the conversation",
                                  param=f"{where}.tool_call_id")
    text = message_text(message)
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"result": text}
    return {"functionResponse": {"name": name, "response": response}}


def convert_messages(messages: Iterable[pb.Message], model: str) -> tuple[dict[str, Any] | None, list[dict]]:
    """(systemInstruction, contents). System and developer messages are
    collected into the one system slot; consecutive same-role turns merge."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    needs_signature = uses_thinking_levels(model)
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.role
        if role in ("system", "developer"):
            text = message_text(message)
            if text:
                system.append({"text": text})
            continue
        if role == "user":
            turn, parts = "user", content_parts(message, where)
        elif role == "assistant":
            turn, parts = "model", content_parts(message, where)
            calls = []
            for j, call in enumerate(message.tool_calls):
                names[call.id] = call.function.name
                calls.append(function_call_part(call, f"{where}.tool_calls[{j}]"))
            if needs_signature and calls and "thoughtSignature" not in calls[0]:
                calls[0]["thoughtSignature"] = SKIP_SIGNATURE
            parts += calls
        elif role in ("tool", "function"):
            turn, parts = "user", [function_response_part(message, names, where)]
        else:
            raise InvalidRequestError(f"unsupported message role {role!r}", param=f"{where}.role")
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    if not contents:
        raise InvalidRequestError("Gemini needs at least one user or assistant message", param="messages")
    return ({"parts": system} if system else None), contents


def convert_tools(tools: Iterable[pb.Tool]) -> list[dict[str, Any]]:
    declarations = []
    for i, tool in enumerate(tools):
        if tool.type and tool.type != "function":
            raise InvalidRequestError(f"Gemini supports only function tools, not {tool.type!r}",
                                      param=f"tools[{i}].type")
        declaration: dict[str, Any] = {"name": tool.function.name}
        if tool.function.description:
            declaration["description"] = tool.function.description
        if tool.function.parameters_json:
            try:
                declaration["parametersJsonSchema"] = orjson.loads(tool.function.parameters_json)
            except orjson.JSONDecodeError:
                raise InvalidRequestError("function parameters must be a JSON Schema object",
                                          param=f"tools[{i}].function.parameters") from None
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def convert_tool_choice(choice: pb.ToolChoice) -> dict[str, Any] | None:
    which = choice.WhichOneof("choice")
    if which == "function_name":
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice.function_name]}}
    mode = {"none": "NONE", "auto": "AUTO", "required": "ANY"}.get(choice.mode) if which == "mode" else None
    return {"functionCallingConfig": {"mode": mode}} if mode else None


def model_id(model: str) -> str:
    return model.removeprefix("models/")


def uses_thinking_levels(model: str) -> bool:
    """Gemini 3 and later (and the -latest aliases, which point at them) take
    ``thinkingLevel`` and sign their function calls."""
    return bool(re.match(r"gemini-([3-9]|\d\d)\b", model_id(model))) or model_id(model).endswith("-latest")


def thinking_level(effort: str, model: str) -> str:
    """The nearest level the model accepts: pro models have no MINIMAL, the
    flash models from 3.7 on start at LOW, and gemini-3-pro has no MEDIUM."""
    name = model_id(model)
    level = THINKING_LEVELS.get(effort, "HIGH")
    if level == "MINIMAL" and ("pro" in name or re.match(r"gemini-(3\.([7-9]|\d\d)|[4-9])[\d.]*-flash(?!-lite)", name)
                               or name == "gemini-flash-latest"):
        level = "LOW"
    if level == "MEDIUM" and name.startswith("gemini-3-pro"):
        level = "HIGH"
    return level


def thinking_config(effort: str, model: str) -> dict[str, Any] | None:
    """OpenAI ``reasoning_effort`` as a Gemini ``thinkingConfig`` (level for
    Gemini 3+, token budget for 2.5); None for models that do not think."""
    if not effort or re.match(r"(gemini-(1\.|2\.0)|gemma-)", model_id(model)):
        return None
    if uses_thinking_levels(model):
        config: dict[str, Any] = {"thinkingLevel": thinking_level(effort, model)}
    elif effort == "none":
        config = {"thinkingBudget": 128 if "pro" in model else 0}  # 2.5 pro cannot turn thinking off
    else:
        config = {"thinkingBudget": THINKING_BUDGETS.get(effort, THINKING_BUDGETS["medium"])}
    if effort != "none":
        config["includeThoughts"] = True
    return config


def response_format_config(fmt: pb.ResponseFormat) -> dict[str, Any]:
    if fmt.type == "json_object":
        return {"responseMimeType": "application/json"}
    if fmt.type == "json_schema":
        try:
            schema = orjson.loads(fmt.schema_json or "{}")
        except orjson.JSONDecodeError:
            raise InvalidRequestError("response_format.json_schema.schema is not valid JSON",
                                      param="response_format.json_schema.schema") from None
        return {"responseMimeType": "application/json", "responseJsonSchema": schema}
    return {}


def generation_config(request: pb.ChatRequest, model: str) -> dict[str, Any]:
    s = request.sampling
    config: dict[str, Any] = {}
    for field, key in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"), ("seed", "seed"),
                       ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        if s.HasField(field):
            config[key] = getattr(s, field)
    if s.HasField("max_completion_tokens"):
        config["maxOutputTokens"] = s.max_completion_tokens
    elif s.HasField("max_tokens"):
        config["maxOutputTokens"] = s.max_tokens
    if s.stop:
        config["stopSequences"] = list(s.stop)
    if s.n > 1:
        config["candidateCount"] = s.n
    if s.logprobs:
        config["responseLogprobs"] = True
        if s.HasField("top_logprobs"):
            config["logprobs"] = s.top_logprobs
    if s.logit_bias:
        raise InvalidRequestError("logit_bias is not supported by Gemini", param="logit_bias")
    if any(m != "text" for m in s.modalities):
        raise InvalidRequestError("Gemini chat output supports only the text modality", param="modalities")
    config.update(response_format_config(request.response_format))
    thinking = thinking_config(s.reasoning_effort, model)
    if thinking:
        config["thinkingConfig"] = thinking
    return config


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def apply_extra(body: dict[str, Any], extra: dict[str, Any]) -> None:
    """Gemini-only request fields passed through from the client."""
    config = body.setdefault("generationConfig", {})
    if "thinking" in extra and isinstance(extra["thinking"], dict):  # Anthropic-style {"budget_tokens": N}
        budget = extra["thinking"].get("budget_tokens")
        if extra["thinking"].get("type") == "disabled":
            config["thinkingConfig"] = {"thinkingBudget": 0}
        elif isinstance(budget, int):
            config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": True}
    if isinstance(extra.get("thinking_config"), dict):
        config["thinkingConfig"] = {camel(k): v for k, v in extra["thinking_config"].items()}
    if isinstance(extra.get("safety_settings"), list):
        body["safetySettings"] = [{camel(k): v for k, v in item.items()} for item in extra["safety_settings"]
                                  if isinstance(item, dict)]
    if isinstance(extra.get("cached_content"), str):
        body["cachedContent"] = extra["cached_content"]
    if not config:
        body.pop("generationConfig")


# ----------------------------------------------------------------- response --


@dataclass(slots=True)
class CandidateState:
    """What has been emitted so far for one candidate of a stream."""

    started: bool = False
    calls: int = 0
    finished: bool = False


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def finish_reason(reason: str, made_calls: bool) -> str:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in CONTENT_FILTER_REASONS:
        return "content_filter"
    return "tool_calls" if made_calls else "stop"


def openai_logprobs(result: Mapping[str, Any]) -> str:
    """Gemini ``logprobsResult`` as an OpenAI ``logprobs`` object."""
    def entry(c: Mapping[str, Any]) -> dict[str, Any]:
        token = c.get("token", "")
        return {"token": token, "logprob": c.get("logProbability", 0.0), "bytes": list(token.encode())}

    tops = result.get("topCandidates") or []
    content = []
    for i, chosen in enumerate(result.get("chosenCandidates") or []):
        item = entry(chosen)
        item["top_logprobs"] = [entry(c) for c in (tops[i].get("candidates") or [])] if i < len(tops) else []
        content.append(item)
    return orjson.dumps({"content": content, "refusal": None}).decode()


def candidate_delta(candidate: Mapping[str, Any], index: int, state: CandidateState) -> pb.ChoiceDelta | None:
    """The delta for one candidate's parts in one response (chunk)."""
    delta = pb.ChoiceDelta(index=index)
    content = candidate.get("content") or {}
    texts: list[str] = []
    has_text = False
    for part in content.get("parts") or []:
        signature = part.get("thoughtSignature", "")
        if "functionCall" in part:
            call = part["functionCall"]
            delta.tool_calls.append(pb.ToolCallDelta(
                index=state.calls, id=new_call_id(), name=call.get("name", ""),
                arguments=orjson.dumps(call.get("args") or {}).decode(), signature=signature))
            state.calls += 1
            continue
        if "text" in part:
            if part.get("thought"):
                delta.reasoning += part["text"]
            else:
                texts.append(part["text"])
                has_text = True
        if signature:
            delta.reasoning_blocks.append(pb.ReasoningBlock(signature=signature))
    if has_text:
        delta.content = "".join(texts)
        delta.has_content = True
    if candidate.get("logprobsResult"):
        delta.logprobs_json = openai_logprobs(candidate["logprobsResult"])
    if candidate.get("finishReason"):
        delta.finish_reason = finish_reason(candidate["finishReason"], state.calls > 0)
        state.finished = True
    if not (has_text or delta.reasoning or delta.tool_calls or delta.reasoning_blocks or delta.finish_reason):
        return None
    if not state.started:
        delta.role = "assistant"
        state.started = True
    return delta


def blocked_delta() -> pb.ChoiceDelta:
    """The answer to a prompt Gemini refused outright (promptFeedback.blockReason)."""
    return pb.ChoiceDelta(index=0, role="assistant", content="", has_content=True, finish_reason="content_filter")


def usage_from(metadata: Mapping[str, Any]) -> pb.Usage:
    """usageMetadata in the OpenAI convention: tool-use prompt tokens count as
    prompt, thoughts count as completion (and as reasoning)."""
    prompt = metadata.get("promptTokenCount", 0) + metadata.get("toolUsePromptTokenCount", 0)
    thoughts = metadata.get("thoughtsTokenCount", 0)
    completion = metadata.get("candidatesTokenCount", 0) + thoughts
    return pb.Usage(prompt_tokens=prompt, completion_tokens=completion,
                    total_tokens=metadata.get("totalTokenCount") or prompt + completion,
                    cached_tokens=metadata.get("cachedContentTokenCount", 0), reasoning_tokens=thoughts)


def load_json(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(f"Gemini sent invalid JSON in its {what}") from None
    if not isinstance(data, dict):
        raise UpstreamProtocolError(f"Gemini sent a {what} that is not a JSON object")
    return data


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


def classify(status: int, g_status: str, reasons: set[str]) -> tuple[int, str, str, bool]:
    """(client status, OpenAI type, code, retryable) for a Gemini error."""
    if status in (401, 403) or g_status in ("UNAUTHENTICATED", "PERMISSION_DENIED") or "API_KEY_INVALID" in reasons:
        return 502, "api_error", "upstream_auth_error", False
    if status == 404 or g_status == "NOT_FOUND":
        return 404, "invalid_request_error", "model_not_found", False
    if status == 413:
        return 413, "invalid_request_error", "request_too_large", False
    if status == 429 or g_status == "RESOURCE_EXHAUSTED":
        return 429, "rate_limit_error", "rate_limit_exceeded", True
    if status in (408, 504) or g_status == "DEADLINE_EXCEEDED":
        return 504, "timeout_error", "upstream_timeout", True
    if status == 503 or g_status == "UNAVAILABLE":
        return 503, "api_error", "service_unavailable", True
    if status >= 500 or status == 499 or g_status in ("INTERNAL", "UNKNOWN", "ABORTED", "CANCELLED"):
        return 502, "api_error", "upstream_error", True
    return 400, "invalid_request_error", g_status.lower() or "invalid_request", False


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

    def parse_response(self, body: bytes, model: str) -> Iterable[ppb.GenerateEvent]:
        data = load_json(body, "response")
        if "error" in data:
            raise UpstreamProtocolError(f"Gemini answered 200 with an error: {self._error_message(data['error'])}")
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
        blocked = False
        async for event in events:
            if not event.data.strip():
                continue
            data = load_json(event.data, "stream")
            if "error" in data:
                raise UpstreamStreamError(self._error_from_payload(data["error"], 0, {}))
            metadata = data.get("usageMetadata") or metadata
            chunk = pb.Chunk()
            for position, candidate in enumerate(data.get("candidates") or []):
                index = candidate.get("index", position)
                delta = candidate_delta(candidate, index, states.setdefault(index, CandidateState()))
                if delta is not None:
                    chunk.choices.append(delta)
            if not data.get("candidates") and (data.get("promptFeedback") or {}).get("blockReason") and not blocked:
                blocked = True
                chunk.choices.append(blocked_delta())
            if chunk.choices:
                yield ppb.GenerateEvent(chunk=chunk)
        if not blocked and (not states or not all(s.finished for s in states.values())):
            raise UpstreamProtocolError("Gemini stream ended before a finishReason")
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
        status = status or int(error.get("code") or 500)
        details = [d for d in error.get("details") or [] if isinstance(d, dict)]
        reasons = {str(d.get("reason", "")) for d in details}
        client_status, type_, code, retryable = classify(status, str(error.get("status", "")), reasons)
        message = self._error_message(error) or f"Gemini API returned HTTP {status}"
        return pb.Error(status=client_status, type=type_, code=code, message=message,
                        param=param_from(details, message) if client_status == 400 else "",
                        retryable=retryable, retry_after_ms=retry_delay_ms(headers, details),
                        provider=self.provider, upstream_status=status)

    def _error_message(self, error: Any) -> str:
        """The upstream's message with anything key-like removed."""
        message = str(error.get("message", "")) if isinstance(error, dict) else ""
        if self.api_key:
            message = message.replace(self.api_key, "[redacted]")
        return _GOOGLE_KEY.sub("[redacted]", message)

