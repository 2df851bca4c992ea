"""Gemini request mapping: the canonical ChatRequest as a generateContent
body (see ``gemini.py`` for the whole picture)."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from switchyard.errors import InvalidRequestError
from switchyard.v1 import chat_pb2 as pb

API_VERSION = "v1beta"
# Gemini 2.5 takes a token budget; these are the budgets per OpenAI effort.
THINKING_BUDGETS = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
# Gemini 3 and later take a level instead (see thinking_level for per-model limits).
THINKING_LEVELS = {"none": "MINIMAL", "minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH",
                   "xhigh": "HIGH"}
# Accepted in place of a real signature on replayed calls that never had one
# (e.g. history produced by another provider); Gemini 3 rejects unsigned calls.
SKIP_SIGNATURE = "skip_thought_signature_validator"
_DATA_URI = re.compile(r"^data:([^;,]+)?((?:;[^;,]*)*?);base64,(.*)$", re.DOTALL)


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


