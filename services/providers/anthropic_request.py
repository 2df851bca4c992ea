"""Anthropic Messages request mapping: the canonical ChatRequest as a
``POST /v1/messages`` body (see ``anthropic.py`` for the whole picture)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from typing import Any

import orjson

from providers.base import plain_extra, plain_value
from switchyard.errors import InvalidRequestError
from switchyard.v1 import chat_pb2 as pb

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

_DATA_URI = re.compile(r"^data:([\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(.*)$", re.DOTALL)

# Anthropic's own top-level fields accepted from ChatRequest.extra.
EXTRA_FIELDS = frozenset({"thinking", "top_k", "output_config", "service_tier", "inference_geo", "speed",
                                "cache_control", "container", "context_management"})


def request_body(request: pb.ChatRequest, model: str, *, stream: bool, configured_max: int | None) -> dict[str, Any]:
    """The Messages API body for one canonical request (n is always 1 here).
    A request that arrived in Anthropic's own format (``request.native``)
    gets its native top-level fields back verbatim (thinking as given rather
    than derived from reasoning_effort, output_config, cache_control...)."""
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
    native = native_fields(request)
    if "thinking" not in native:
        _add_thinking(body, output_config, sampling.reasoning_effort, model)
    for key, value in native.items():
        if key == "output_config" and isinstance(value, dict):
            output_config = dict(value)
        else:
            body[key] = value
    extra = plain_extra(request)
    for key in sorted(EXTRA_FIELDS & extra.keys()):
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


def native_fields(request: pb.ChatRequest) -> dict[str, Any]:
    """The client's own Anthropic top-level fields, when it spoke Anthropic's API."""
    if request.native.api != "anthropic":
        return {}
    return {key: plain_value(value) for key, value in request.native.fields.fields.items()}


def _cached(block: dict[str, Any], holder: Any) -> dict[str, Any]:
    """``block`` with the holder's cache_control breakpoint, if it has one."""
    if holder.HasField("cache_control"):
        control = {"type": holder.cache_control.type or "ephemeral"}
        if holder.cache_control.ttl:
            control["ttl"] = holder.cache_control.ttl
        block["cache_control"] = control
    return block


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
            blocks.append(_cached({"type": "text", "text": text}, part))
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
        return _cached({"type": "text", "text": text}, part) if text else None
    if kind == "image_url":
        return _cached(image_block(part.image_url.url, param), part)
    if kind == "file":
        return _cached(document_block(part.file, param), part)
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
    """PDFs (base64 data: URI or URL) and plain text (a text/plain data: URI)."""
    match = _DATA_URI.match(file.file_data)
    media_type = match.group(1).lower() if match else ""
    if file.url:
        source: dict[str, Any] = {"type": "url", "url": file.url}
    elif media_type == "application/pdf":
        source = {"type": "base64", "media_type": "application/pdf", "data": match.group(2)}
    elif media_type == "text/plain":
        try:
            text = base64.b64decode(match.group(2), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidRequestError("a text/plain file must be base64-encoded UTF-8", param=param) from None
        source = {"type": "text", "media_type": "text/plain", "data": text}
    else:
        raise InvalidRequestError("Anthropic models accept files only as PDF (base64 data: URI or URL) or "
                                  "plain text", param=param)
    block: dict[str, Any] = {"type": "document", "source": source}
    if file.filename:
        block["title"] = file.filename
    if file.context:
        block["context"] = file.context
    if file.citations:
        block["citations"] = {"enabled": True}
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
    return _cached({"type": "tool_use", "id": call.id, "name": call.function.name, "input": parsed}, call)


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
    if message.is_error:
        block["is_error"] = True
    return _cached(block, message)


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
        out.append(_cached(definition, tool))
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


