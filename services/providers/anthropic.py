"""The Anthropic Messages API (``POST /v1/messages``).

Request side: system/developer messages are lifted to ``system``, turns are
merged so roles alternate, tool calls and results become ``tool_use`` and
``tool_result`` blocks, signed reasoning is handed back as ``thinking`` blocks,
``reasoning_effort`` becomes a thinking budget (older models) or adaptive
thinking with an effort level (models that only accept that), and
``json_schema`` uses native structured outputs (``output_config.format``).
``json_object`` has no native switch, so it is asked for in the system prompt.

Response side: content blocks (text, tool_use, thinking, redacted_thinking)
become one canonical choice; tool calls are numbered among tool_use blocks
only, and a finished thinking block is emitted whole with its signature.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

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

ANTHROPIC_VERSION = "2023-06-01"

# Thinking budgets for models that take a manual budget (budget_tokens >= 1024).
THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768}
# OpenAI reasoning_effort -> output_config.effort for adaptive-thinking models.
ADAPTIVE_EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"}
# Models that reject manual thinking budgets and temperature/top_p/top_k.
ADAPTIVE_ONLY_PREFIXES = ("claude-opus-4-7", "claude-opus-4-8", "claude-opus-5", "claude-sonnet-5",
                          "claude-haiku-5", "claude-fable", "claude-mythos")
# Models where adaptive thinking is the recommended mode (manual budgets are deprecated).
ADAPTIVE_PREFERRED_PREFIXES = ("claude-opus-4-6", "claude-sonnet-4-6")

# Default max_tokens (the model's documented output limit) by model id prefix; first match wins.
MAX_OUTPUT_BY_PREFIX = (
    ("claude-3-haiku", 4096), ("claude-3-opus", 4096), ("claude-3-5", 8192), ("claude-3-7", 64000),
    ("claude-opus-4-6", 128000), ("claude-opus-4-7", 128000), ("claude-opus-4-8", 128000),
    ("claude-opus-4-5", 64000), ("claude-opus-4", 32000), ("claude-sonnet-4", 64000), ("claude-haiku-4", 64000),
    ("claude-opus-5", 128000), ("claude-sonnet-5", 128000), ("claude-haiku-5", 128000),
    ("claude-fable", 128000), ("claude-mythos", 128000),
)
FALLBACK_MAX_TOKENS = 4096
# Anthropic's SDKs refuse non-streaming calls expected to run past ten minutes
# (128k tokens an hour); a default for such a call stays under that.
NON_STREAMING_DEFAULT_CAP = 21_333

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
JSON_OBJECT_INSTRUCTION = ("Respond only with a single valid JSON object. Do not wrap it in Markdown code fences "
                           "and do not add any text before or after it.")
PLACEHOLDER_USER_TEXT = "(continue)"

FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
                  "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}

# Anthropic field names (the first segment of an error message) -> the OpenAI request field.
ERROR_PARAMS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "max_tokens": "max_tokens",
                "stop_sequences": "stop", "tools": "tools", "tool_choice": "tool_choice", "messages": "messages",
                "system": "messages", "thinking": "reasoning_effort", "output_config": "response_format",
                "metadata": "user"}

_DATA_URI = re.compile(r"^data:([\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(.*)$", re.DOTALL)
_ERROR_FIELD = re.compile(r"^([a-z_]+)(?:\.[\w.]+)?\s*:")


class AnthropicTranslator(Translator):
    type = "anthropic"
    capabilities = Capabilities(
        n=False, json_schema=True,
        extra_fields=frozenset({"thinking", "top_k", "output_config", "service_tier", "inference_geo", "speed",
                                "cache_control", "container", "context_management"}),
    )

    def needs_output_validation(self, request: pb.ChatRequest) -> bool:
        """Structured outputs is native, but bounds it cannot enforce are only
        described to the model, so such schemas are validated afterwards."""
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

    def parse_response(self, body: bytes, model: str) -> Iterable[ppb.GenerateEvent]:
        message = _load_json(body)
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise UpstreamProtocolError("Anthropic response has no content list")
        delta = message_delta(message)
        return [ppb.GenerateEvent(chunk=pb.Chunk(choices=[delta])),
                ppb.GenerateEvent(usage=usage_from(message.get("usage") or {}))]

    async def stream_events(self, events: AsyncIterator[SSEEvent], model: str) -> AsyncIterator[ppb.GenerateEvent]:
        state = StreamState(self)
        async for event in events:
            if not event.data:
                continue
            payload = _load_json(event.data.encode())
            if not isinstance(payload, dict):
                raise UpstreamProtocolError("Anthropic stream event is not a JSON object")
            for out in state.feed(payload):
                yield out
            if state.stopped:
                return
        raise UpstreamProtocolError("Anthropic stream ended without message_stop")

    def map_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> pb.Error:
        error_type, message = _error_fields(body)
        error = classify_error(status, error_type, self._scrub(message) or f"Anthropic returned HTTP {status}")
        error.provider = self.provider
        error.upstream_status = status
        error.retry_after_ms = retry_after_ms(headers)
        return error

    def stream_error(self, payload: dict[str, Any]) -> pb.Error:
        """The canonical error for an in-band ``error`` event."""
        err = payload.get("error") if isinstance(payload.get("error"), dict) else {}
        error_type = str(err.get("type") or "api_error")
        message = self._scrub(str(err.get("message") or "")) or "Anthropic stream failed"
        error = classify_error(STATUS_FOR_TYPE.get(error_type, 500), error_type, message)
        error.provider = self.provider
        return error

    def _configured_max(self, model: str) -> int | None:
        spec = self.spec.model(model)
        return spec.max_output_tokens if spec else None

    def _scrub(self, message: str) -> str:
        return message.replace(self.api_key, "[redacted]") if self.api_key else message


# ------------------------------------------------------------------ request --


def request_body(request: pb.ChatRequest, model: str, *, stream: bool, configured_max: int | None) -> dict[str, Any]:
    """The Messages API body for one canonical request (n is always 1 here)."""
    sampling = request.sampling
    _reject_unsupported(sampling)
    system, turns = convert_messages(request.messages)
    if request.response_format.type == "json_object":
        system.append({"type": "text", "text": JSON_OBJECT_INSTRUCTION})
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens_for(sampling, model, stream, configured_max)}
    if system:
        body["system"] = system
    body["messages"] = turns
    if request.tools:
        body["tools"] = tool_definitions(request.tools)
        choice = tool_choice_param(request.tool_choice, sampling)
        if choice:
            body["tool_choice"] = choice
    if sampling.stop:
        body["stop_sequences"] = list(sampling.stop)
    _add_sampling(body, sampling, model)
    if request.user or request.safety_identifier:
        body["metadata"] = {"user_id": request.user or request.safety_identifier}
    output_config: dict[str, Any] = {}
    if request.response_format.type == "json_schema":
        output_config["format"] = output_format(request.response_format)
    _add_thinking(body, output_config, sampling.reasoning_effort, model)
    extra = plain_extra(request)
    for key in sorted(AnthropicTranslator.capabilities.extra_fields & extra.keys()):
        if key == "output_config" and isinstance(extra[key], dict):
            output_config.update(extra[key])
        else:
            body[key] = extra[key]
    if output_config:
        body["output_config"] = output_config
    _fit_thinking_budget(body)
    _check_thinking_with_forced_tool(body)
    if stream:
        body["stream"] = True
    return body


def _reject_unsupported(sampling: pb.Sampling) -> None:
    if sampling.logprobs or sampling.HasField("top_logprobs"):
        raise InvalidRequestError("logprobs are not available from Anthropic models", param="logprobs")
    if sampling.logit_bias:
        raise InvalidRequestError("logit_bias is not supported by Anthropic models", param="logit_bias")
    if "audio" in sampling.modalities:
        raise InvalidRequestError("Anthropic models cannot produce audio output", param="modalities")
    if sampling.HasField("temperature") and not 0 <= sampling.temperature <= 1:
        raise InvalidRequestError(
            f"temperature {sampling.temperature:g} is out of range for Anthropic models, which accept 0 to 1 "
            "(OpenAI's 0 to 2 scale does not carry over)", param="temperature")


def max_tokens_for(sampling: pb.Sampling, model: str, stream: bool, configured_max: int | None) -> int:
    """The client's limit, else the configured model limit, else the model's documented limit."""
    if sampling.HasField("max_completion_tokens"):
        return sampling.max_completion_tokens
    if sampling.HasField("max_tokens"):
        return sampling.max_tokens
    if configured_max:
        return configured_max
    default = next((limit for prefix, limit in MAX_OUTPUT_BY_PREFIX if model.startswith(prefix)), FALLBACK_MAX_TOKENS)
    return default if stream else min(default, NON_STREAMING_DEFAULT_CAP)


def uses_adaptive_thinking(model: str) -> bool:
    return model.startswith(ADAPTIVE_ONLY_PREFIXES + ADAPTIVE_PREFERRED_PREFIXES)


def _add_sampling(body: dict[str, Any], sampling: pb.Sampling, model: str) -> None:
    # The adaptive-only models reject sampling parameters outright; a hint the
    # model cannot take is dropped rather than failing the whole request.
    if model.startswith(ADAPTIVE_ONLY_PREFIXES):
        return
    if sampling.HasField("temperature"):
        body["temperature"] = sampling.temperature
    if sampling.HasField("top_p"):
        body["top_p"] = sampling.top_p
    if sampling.HasField("top_k"):
        body["top_k"] = sampling.top_k


def _add_thinking(body: dict[str, Any], output_config: dict[str, Any], effort: str, model: str) -> None:
    if not effort or effort == "none":
        return
    if uses_adaptive_thinking(model):
        body["thinking"] = {"type": "adaptive"}
        output_config["effort"] = ADAPTIVE_EFFORTS.get(effort, effort)
        return
    budget = THINKING_BUDGETS.get(effort)
    if budget is None:
        raise InvalidRequestError(f"reasoning_effort {effort!r} is not supported for Anthropic models",
                                  param="reasoning_effort")
    body["thinking"] = {"type": "enabled", "budget_tokens": budget}


def _fit_thinking_budget(body: dict[str, Any]) -> None:
    """max_tokens covers thinking too and must exceed the budget: keep the
    requested room for the answer on top of the budget."""
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and body["max_tokens"] <= budget:
            body["max_tokens"] += budget


def _check_thinking_with_forced_tool(body: dict[str, Any]) -> None:
    thinking = body.get("thinking") or {}
    if thinking.get("type") in ("enabled", "adaptive") and body.get("tool_choice", {}).get("type") in ("any", "tool"):
        raise InvalidRequestError("Anthropic models cannot think (reasoning_effort) and be forced to call a tool "
                                  "(tool_choice required or a named function) in the same request",
                                  param="tool_choice")


def convert_messages(messages: Iterable[pb.Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating turns). Consecutive same-role turns are
    merged; tool results go first in their user turn, as the API requires."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.role
        if role in ("system", "developer"):
            system.extend(_text_blocks(message, i))
        elif role == "user":
            blocks = user_blocks(message, i)
            if not blocks:
                raise InvalidRequestError("Anthropic models reject user messages with empty content",
                                          param=f"messages[{i}].content")
            _append_turn(turns, "user", blocks)
        elif role == "assistant":
            _append_turn(turns, "assistant", assistant_blocks(message, i))
        elif role == "tool":
            _append_turn(turns, "user", [tool_result_block(message, i)])
        else:
            raise InvalidRequestError(f"role {role!r} is not supported for Anthropic models; use tool messages",
                                      param=f"messages[{i}].role")
    for turn in turns:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    if not turns or turns[0]["role"] != "user":
        # The API needs a user turn first; OpenAI accepts a bare system prompt
        # or an assistant opener.
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": PLACEHOLDER_USER_TEXT}]})
    return system, turns


def _append_turn(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _text_blocks(message: pb.Message, i: int) -> list[dict[str, Any]]:
    if message.HasField("text"):
        return [{"type": "text", "text": message.text}] if message.text else []
    blocks = []
    for j, part in enumerate(message.parts.parts):
        kind = part.WhichOneof("part")
        if kind not in ("text", "refusal"):
            raise InvalidRequestError(f"{message.role} messages may only contain text for Anthropic models",
                                      param=f"messages[{i}].content[{j}]")
        text = part.text if kind == "text" else part.refusal
        if text:
            blocks.append({"type": "text", "text": text})
    return blocks


def user_blocks(message: pb.Message, i: int) -> list[dict[str, Any]]:
    if message.HasField("text"):
        return [{"type": "text", "text": message.text}] if message.text else []
    return [block for j, part in enumerate(message.parts.parts)
            if (block := content_block(part, f"messages[{i}].content[{j}]")) is not None]


def content_block(part: pb.ContentPart, param: str) -> dict[str, Any] | None:
    """One user content part as an Anthropic block (None for empty text)."""
    kind = part.WhichOneof("part")
    if kind in ("text", "refusal"):
        text = part.text if kind == "text" else part.refusal
        return {"type": "text", "text": text} if text else None
    if kind == "image_url":
        return image_block(part.image_url.url, param)
    if kind == "file":
        return document_block(part.file, param)
    if kind == "input_audio":
        raise InvalidRequestError("audio input is not supported by Anthropic models", param=param)
    raise InvalidRequestError("empty content part", param=param)


def image_block(url: str, param: str) -> dict[str, Any]:
    match = _DATA_URI.match(url)
    if match:
        media_type = match.group(1).lower()
        if media_type not in IMAGE_MEDIA_TYPES:
            raise InvalidRequestError(f"image type {media_type} is not supported by Anthropic models "
                                      f"(use {', '.join(sorted(IMAGE_MEDIA_TYPES))})", param=param)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": match.group(2)}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequestError("image_url must be an http(s) URL or a base64 data: URI", param=param)


def document_block(file: pb.FileInput, param: str) -> dict[str, Any]:
    match = _DATA_URI.match(file.file_data)
    if not match or match.group(1).lower() != "application/pdf":
        raise InvalidRequestError("Anthropic models accept files only as base64 PDF data: URIs", param=param)
    block: dict[str, Any] = {"type": "document",
                             "source": {"type": "base64", "media_type": "application/pdf", "data": match.group(2)}}
    if file.filename:
        block["title"] = file.filename
    return block


def assistant_blocks(message: pb.Message, i: int) -> list[dict[str, Any]]:
    """Signed reasoning first (the API checks it when thinking is on), then
    text, then tool_use blocks."""
    blocks = [block for rb in message.reasoning_blocks if (block := thinking_block(rb)) is not None]
    blocks.extend(_text_blocks(message, i))
    if message.HasField("refusal") and message.refusal:
        blocks.append({"type": "text", "text": message.refusal})
    for j, call in enumerate(message.tool_calls):
        blocks.append(tool_use_block(call, f"messages[{i}].tool_calls[{j}]"))
    return blocks


def thinking_block(block: pb.ReasoningBlock) -> dict[str, Any] | None:
    if block.redacted_data:
        return {"type": "redacted_thinking", "data": block.redacted_data}
    if block.signature:
        return {"type": "thinking", "thinking": block.text, "signature": block.signature}
    return None  # unsigned reasoning cannot be handed back


def tool_use_block(call: pb.ToolCall, param: str) -> dict[str, Any]:
    arguments = call.function.arguments.strip()
    try:
        parsed = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        raise InvalidRequestError("tool call arguments are not valid JSON",
                                  param=f"{param}.function.arguments") from None
    if not isinstance(parsed, dict):
        raise InvalidRequestError("tool call arguments must be a JSON object for Anthropic models",
                                  param=f"{param}.function.arguments")
    return {"type": "tool_use", "id": call.id, "name": call.function.name, "input": parsed}


def tool_result_block(message: pb.Message, i: int) -> dict[str, Any]:
    if not message.tool_call_id:
        raise InvalidRequestError("tool messages need tool_call_id", param=f"messages[{i}].tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    if message.HasField("text"):
        if message.text:
            block["content"] = message.text
    elif message.HasField("parts"):
        parts = user_blocks(message, i)
        if parts:
            block["content"] = parts
    return block


def tool_definitions(tools: Iterable[pb.Tool]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        if tool.type and tool.type != "function":
            raise InvalidRequestError(f"tool type {tool.type!r} is not supported", param=f"tools[{i}].type")
        function = tool.function
        schema: Any = {"type": "object", "properties": {}}
        if function.parameters_json:
            try:
                schema = orjson.loads(function.parameters_json)
            except orjson.JSONDecodeError:
                raise InvalidRequestError("parameters is not valid JSON",
                                          param=f"tools[{i}].function.parameters") from None
        definition: dict[str, Any] = {"name": function.name}
        if function.description:
            definition["description"] = function.description
        definition["input_schema"] = schema
        if function.HasField("strict") and function.strict:
            definition["strict"] = True
        out.append(definition)
    return out


def tool_choice_param(choice: pb.ToolChoice, sampling: pb.Sampling) -> dict[str, Any] | None:
    kind = choice.WhichOneof("choice")
    serial = sampling.HasField("parallel_tool_calls") and not sampling.parallel_tool_calls
    if kind is None and not serial:
        return None  # the API's default (auto) needs no field
    if kind == "function_name":
        param: dict[str, Any] = {"type": "tool", "name": choice.function_name}
    elif kind is None:
        param = {"type": "auto"}
    elif choice.mode in ("none", "auto", "required"):
        param = {"type": {"none": "none", "auto": "auto", "required": "any"}[choice.mode]}
    else:
        raise InvalidRequestError(f"tool_choice {choice.mode!r} is not supported", param="tool_choice")
    if serial and param["type"] != "none":
        param["disable_parallel_tool_use"] = True
    return param


def output_format(response_format: pb.ResponseFormat) -> dict[str, Any]:
    try:
        schema = orjson.loads(response_format.schema_json) if response_format.schema_json else {"type": "object"}
    except orjson.JSONDecodeError:
        raise InvalidRequestError("json_schema.schema is not valid JSON", param="response_format") from None
    if not isinstance(schema, dict):
        raise InvalidRequestError("json_schema.schema must be a JSON object", param="response_format")
    return {"type": "json_schema", "schema": strict_schema(schema)}


_SCHEMA_KEYWORDS = frozenset({"type", "description", "title", "properties", "required", "items", "enum", "const",
                              "anyOf", "allOf", "$ref", "$defs", "definitions", "additionalProperties", "format",
                              "minItems", "default"})
_STRING_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6",
                             "uuid"})


def has_unenforced_keywords(schema: Any) -> bool:
    """True if ``strict_schema`` would move any keyword into a description."""
    if isinstance(schema, list):
        return any(has_unenforced_keywords(item) for item in schema)
    if not isinstance(schema, dict):
        return False
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            if any(has_unenforced_keywords(sub) for sub in value.values()):
                return True
        elif key in ("items", "anyOf", "allOf", "oneOf"):
            if has_unenforced_keywords(value):
                return True
        elif (key == "format" and value not in _STRING_FORMATS) or (key == "minItems" and value not in (0, 1)):
            return True
        elif key not in _SCHEMA_KEYWORDS:
            return True
    return False


def strict_schema(schema: Any) -> Any:
    """A schema structured outputs accepts: every object closed
    (``additionalProperties: false``), ``oneOf`` as ``anyOf``, and keywords it
    cannot enforce (numeric/length bounds, patterns...) moved into the
    description so the model still sees them."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    unsupported: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf", "allOf"):
            out[key] = strict_schema(value)
        elif key == "oneOf":
            out["anyOf"] = strict_schema(value)
        elif key == "format" and value not in _STRING_FORMATS:
            unsupported[key] = value
        elif key == "minItems" and value not in (0, 1):
            unsupported[key] = value
        elif key in _SCHEMA_KEYWORDS:
            out[key] = value
        else:
            unsupported[key] = value
    if out.get("type") == "object" or "properties" in out:
        out["additionalProperties"] = False
    if unsupported:
        note = "{" + ", ".join(f"{k}: {orjson.dumps(v).decode()}" for k, v in unsupported.items()) + "}"
        out["description"] = f"{out['description']}\n\n{note}" if out.get("description") else note
    return out


# ----------------------------------------------------------------- response --


def message_delta(message: dict[str, Any]) -> pb.ChoiceDelta:
    """A whole non-streaming message as one complete choice."""
    delta = pb.ChoiceDelta(index=0, role="assistant")
    text: list[str] = []
    reasoning: list[str] = []
    for block in message["content"]:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "thinking":
            reasoning.append(str(block.get("thinking", "")))
            delta.reasoning_blocks.append(pb.ReasoningBlock(text=str(block.get("thinking", "")),
                                                            signature=str(block.get("signature") or "")))
        elif kind == "redacted_thinking":
            delta.reasoning_blocks.append(pb.ReasoningBlock(redacted_data=str(block.get("data", ""))))
        elif kind == "tool_use":
            delta.tool_calls.append(pb.ToolCallDelta(
                index=len(delta.tool_calls), id=str(block.get("id", "")), name=str(block.get("name", "")),
                arguments=orjson.dumps(block.get("input") or {}).decode()))
    if text or not delta.tool_calls:
        delta.content = "".join(text)
        delta.has_content = True
    delta.reasoning = "".join(reasoning)
    delta.finish_reason = finish_reason(message.get("stop_reason"))
    return delta


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(str(stop_reason), "stop")


def usage_from(usage: dict[str, Any]) -> pb.Usage:
    """OpenAI convention: prompt_tokens includes cache reads and writes."""
    fresh = _int(usage.get("input_tokens"))
    read = _int(usage.get("cache_read_input_tokens"))
    written = _int(usage.get("cache_creation_input_tokens"))
    output = _int(usage.get("output_tokens"))
    details = usage.get("output_tokens_details") or {}
    thinking = _int(details.get("thinking_tokens")) if isinstance(details, dict) else 0
    prompt = fresh + read + written
    return pb.Usage(prompt_tokens=prompt, completion_tokens=output, total_tokens=prompt + output,
                    cached_tokens=read, cache_write_tokens=written, reasoning_tokens=thinking)


class StreamState:
    """Turns Messages stream events into canonical events, one at a time."""

    def __init__(self, translator: AnthropicTranslator) -> None:
        self.translator = translator
        self.usage: dict[str, Any] = {}
        self.blocks: dict[int, dict[str, Any]] = {}
        self.tool_count = 0
        self.role_sent = False
        self.stopped = False

    def feed(self, payload: dict[str, Any]) -> list[ppb.GenerateEvent]:
        kind = payload.get("type")
        if kind == "message_start":
            message = payload.get("message") or {}
            self.usage.update(message.get("usage") or {})
        elif kind == "content_block_start":
            return self._start(_int(payload.get("index")), payload.get("content_block") or {})
        elif kind == "content_block_delta":
            return self._delta(_int(payload.get("index")), payload.get("delta") or {})
        elif kind == "content_block_stop":
            return self._stop(_int(payload.get("index")))
        elif kind == "message_delta":
            self.usage.update({k: v for k, v in (payload.get("usage") or {}).items() if v is not None})
            stop_reason = (payload.get("delta") or {}).get("stop_reason")
            if stop_reason:
                return [self._emit(finish_reason=finish_reason(stop_reason))]
        elif kind == "message_stop":
            self.stopped = True
            return [ppb.GenerateEvent(usage=usage_from(self.usage))]
        elif kind == "error":
            raise UpstreamStreamError(self.translator.stream_error(payload))
        return []  # ping and event types added later

    def _start(self, index: int, block: dict[str, Any]) -> list[ppb.GenerateEvent]:
        kind = block.get("type")
        state: dict[str, Any] = {"type": kind, "text": "", "signature": ""}
        self.blocks[index] = state
        if kind == "tool_use":
            state["tool"] = self.tool_count
            self.tool_count += 1
            call = pb.ToolCallDelta(index=state["tool"], id=str(block.get("id", "")), name=str(block.get("name", "")))
            return [self._emit(tool_calls=[call])]
        if kind == "redacted_thinking":
            state["data"] = str(block.get("data", ""))
        if kind == "text" and block.get("text"):
            return [self._emit(content=str(block["text"]), has_content=True)]
        if kind == "thinking" and block.get("thinking"):
            state["text"] = str(block["thinking"])
            return [self._emit(reasoning=state["text"])]
        return []

    def _delta(self, index: int, delta: dict[str, Any]) -> list[ppb.GenerateEvent]:
        kind = delta.get("type")
        state = self.blocks.get(index)
        if state is None:
            raise UpstreamProtocolError(f"Anthropic stream sent a delta for unknown block {index}")
        if kind == "text_delta":
            return [self._emit(content=str(delta.get("text", "")), has_content=True)]
        if kind == "input_json_delta":
            fragment = str(delta.get("partial_json", ""))
            if not fragment or "tool" not in state:
                return []
            return [self._emit(tool_calls=[pb.ToolCallDelta(index=state["tool"], arguments=fragment)])]
        if kind == "thinking_delta":
            text = str(delta.get("thinking", ""))
            state["text"] += text
            return [self._emit(reasoning=text)] if text else []
        if kind == "signature_delta":
            state["signature"] += str(delta.get("signature", ""))
        return []

    def _stop(self, index: int) -> list[ppb.GenerateEvent]:
        state = self.blocks.get(index) or {}
        if state.get("type") == "thinking":
            block = pb.ReasoningBlock(text=state["text"], signature=state["signature"])
            return [self._emit(reasoning_blocks=[block])]
        if state.get("type") == "redacted_thinking":
            return [self._emit(reasoning_blocks=[pb.ReasoningBlock(redacted_data=state["data"])])]
        return []

    def _emit(self, **fields: Any) -> ppb.GenerateEvent:
        delta = pb.ChoiceDelta(index=0, **fields)
        if not self.role_sent:
            delta.role = "assistant"
            self.role_sent = True
        return ppb.GenerateEvent(chunk=pb.Chunk(choices=[delta]))


# ------------------------------------------------------------------- errors --

# Error type -> the HTTP status Anthropic uses for it (for in-band stream errors).
STATUS_FOR_TYPE = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                   "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                   "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529}


def classify_error(status: int, error_type: str, message: str) -> pb.Error:
    """Status, OpenAI type, code and retryability for an Anthropic error."""
    def make(out: int, kind: str, code: str, retryable: bool) -> pb.Error:
        param = ""
        match = _ERROR_FIELD.match(message)
        if out == 400 and match:
            param = ERROR_PARAMS.get(match.group(1), "")
        return pb.Error(status=out, type=kind, code=code, message=message, param=param, retryable=retryable)

    if status in (401, 403) or error_type in ("authentication_error", "permission_error"):
        # The gateway's upstream credentials are at fault, not the client; another provider may serve it.
        return make(502, "api_error", "upstream_auth_error", True)
    if status == 402 or error_type == "billing_error":
        return make(502, "api_error", "upstream_billing_error", True)
    if status == 404 or error_type == "not_found_error":
        return make(404, "invalid_request_error", "model_not_found", False)
    if status == 413 or error_type == "request_too_large":
        return make(413, "invalid_request_error", "request_too_large", False)
    if status == 429 or error_type == "rate_limit_error":
        return make(429, "rate_limit_error", "rate_limit_exceeded", True)
    if status == 529 or error_type == "overloaded_error":
        return make(503, "api_error", "upstream_overloaded", True)
    if status == 503:
        return make(503, "api_error", "service_unavailable", True)
    if status in (408, 504) or error_type == "timeout_error":
        return make(504, "timeout_error", "upstream_timeout", True)
    if status >= 500 or error_type == "api_error":
        return make(502, "api_error", "upstream_error", True)
    return make(400, "invalid_request_error", "invalid_request", False)


def _error_fields(body: bytes) -> tuple[str, str]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "", body[:200].decode(errors="replace").strip()
    err = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict):
        return "", ""
    return str(err.get("type") or ""), str(err.get("message") or "")


# ------------------------------------------------------------------ helpers --


def _load_json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError(f"Anthropic sent invalid JSON: {exc}") from None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
