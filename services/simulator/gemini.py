"""Simulated Google Gemini API: ``POST /v1beta/models/{model}:generateContent``
and ``:streamGenerateContent`` (SSE with ``alt=sse``, else a streamed JSON
array), also under ``/v1``; ``GET /v1beta/models[/{model}]``.

Like the real API it wants the key in ``x-goog-api-key`` (403 without one),
answers errors as ``{"error": {"code", "message", "status", "details"}}``, and
rejects unknown fields, roles other than user/model, empty contents, function
responses that answer no call, out-of-range sampling values and (Gemini 3)
replayed function calls without a thought signature.

Deliberate strictness beyond the real API: a ``key=`` query parameter is
refused with 400, because keys in URLs end up in access logs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from simulator.scenarios import Recorder, Script, count_tokens, parse_script, words_for
from simulator.schema_instances import instance_for
from simulator.streaming import Frame, send_json, send_stream

API = "gemini"
# method -> (body, model) -> answer, for the single-answer methods (gemini_embed.py registers them)
UNARY_METHODS: dict[str, Any] = {}
MODELS = ("gemini-3.8-flash", "gemini-3.7-flash", "gemini-3.5-flash", "gemini-3.1-pro-preview", "gemini-3.1-flash-lite",
          "gemini-3-pro-preview", "gemini-3-flash-preview", "gemini-2.5-pro", "gemini-2.5-flash",
          "gemini-2.5-flash-lite", "gemini-2.0-flash")
KNOWN_MODEL = re.compile(r"^(gemini|gemma|learnlm)-[\w.-]+$")
IMAGE_TOKENS = 258  # what Gemini bills per image
DEFAULT_THOUGHTS = 8
_THOUGHT_WORDS = ("Considering", "the", "request", "carefully,", "step", "by", "step.")
_ids = itertools.count(1)
DATA_LESS = frozenset({"thought", "thoughtSignature", "thought_signature", "partMetadata", "part_metadata"})

# Message types of the request, for the "Unknown name" check. Values: None for
# scalars and free-form JSON, "T" for a message, "[]T" repeated, "{}T" a map.
FIELDS: dict[str, dict[str, str | None]] = {
    "Request": {"model": None, "contents": "[]Content", "tools": "[]Tool", "toolConfig": "ToolConfig",
                "safetySettings": "[]SafetySetting", "systemInstruction": "Content",
                "generationConfig": "GenerationConfig", "cachedContent": None, "labels": None, "serviceTier": None,
                "store": None, "continuationToken": None},
    "Content": {"parts": "[]Part", "role": None},
    "Part": {"text": None, "inlineData": "Blob", "functionCall": "FunctionCall",
             "functionResponse": "FunctionResponse", "fileData": "FileData", "executableCode": None,
             "codeExecutionResult": None, "thought": None, "thoughtSignature": None, "videoMetadata": None,
             "partMetadata": None, "mediaResolution": None, "toolCall": None, "toolResponse": None},
    "Blob": {"mimeType": None, "data": None},
    "FileData": {"mimeType": None, "fileUri": None},
    "FunctionCall": {"id": None, "name": None, "args": None},
    "FunctionResponse": {"id": None, "name": None, "response": None, "parts": None, "willContinue": None,
                         "scheduling": None},
    "Tool": {"functionDeclarations": "[]FunctionDeclaration", "googleSearchRetrieval": None, "codeExecution": None,
             "googleSearch": None, "computerUse": None, "urlContext": None, "fileSearch": None, "googleMaps": None,
             "mcpServers": None},
    "FunctionDeclaration": {"name": None, "description": None, "behavior": None, "parameters": "Schema",
                            "parametersJsonSchema": None, "response": "Schema", "responseJsonSchema": None},
    "Schema": {"type": None, "format": None, "title": None, "description": None, "nullable": None, "enum": None,
               "maxItems": None, "minItems": None, "properties": "{}Schema", "required": None,
               "minProperties": None, "maxProperties": None, "minLength": None, "maxLength": None, "pattern": None,
               "example": None, "anyOf": "[]Schema", "propertyOrdering": None, "default": None, "items": "Schema",
               "minimum": None, "maximum": None, "additionalProperties": None, "$defs": None, "$ref": None},
    "ToolConfig": {"functionCallingConfig": "FunctionCallingConfig", "retrievalConfig": None,
                   "includeServerSideToolInvocations": None},
    "FunctionCallingConfig": {"mode": None, "allowedFunctionNames": None},
    "SafetySetting": {"category": None, "threshold": None},
    "GenerationConfig": {"stopSequences": None, "responseMimeType": None, "responseSchema": "Schema",
                         "responseJsonSchema": None, "_responseJsonSchema": None, "responseModalities": None,
                         "candidateCount": None, "maxOutputTokens": None, "temperature": None, "topP": None,
                         "topK": None, "seed": None, "presencePenalty": None, "frequencyPenalty": None,
                         "responseLogprobs": None, "logprobs": None, "enableEnhancedCivicAnswers": None,
                         "speechConfig": None, "thinkingConfig": "ThinkingConfig", "imageConfig": None,
                         "mediaResolution": None, "audioTranscriptionConfig": None},
    "ThinkingConfig": {"includeThoughts": None, "thinkingBudget": None, "thinkingLevel": None},
}
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
                500: "INTERNAL", 501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
MESSAGES = {401: "Request had invalid authentication credentials.",
            403: "The caller does not have permission",
            404: "Requested entity was not found.",
            429: "Resource has been exhausted (e.g. check quota).",
            500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
            503: "The model is overloaded. Please try again later.",
            504: "The request timed out. Please try again."}


class GeminiError(Exception):
    """An error answered in Gemini's own shape."""

    def __init__(self, status: int, message: str, *, g_status: str = "", details: list[dict] | None = None) -> None:
        super().__init__(message)
        self.status = status
        name = g_status or STATUS_NAMES.get(status, "UNKNOWN")
        self.body: dict[str, Any] = {"error": {"code": status, "message": message, "status": name}}
        if details:
            self.body["error"]["details"] = details


def invalid(message: str, field_path: str = "") -> GeminiError:
    details = [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field_path, "description": message} if field_path
                                    else {"description": message}]}]
    return GeminiError(400, message, details=details)


# --------------------------------------------------------------- validation --


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def get(obj: Any, name: str, default: Any = None) -> Any:
    """A field by its camelCase name, also accepting the proto (snake_case) name."""
    if not isinstance(obj, dict):
        return default
    if name in obj:
        return obj[name]
    return obj.get(snake(name), default)


def check_fields(value: Any, type_name: str, path: str) -> None:
    """Reject unknown field names the way Google's JSON parser does."""
    if type_name.startswith("[]"):
        if not isinstance(value, list):
            where = f" at '{path}'" if path else ""
            raise invalid(f"Invalid JSON payload received. Expected a list{where}.", path)
        for i, item in enumerate(value):
            check_fields(item, type_name[2:], f"{path}[{i}]")
        return
    if type_name.startswith("{}"):
        for key, item in (value.items() if isinstance(value, dict) else ()):
            check_fields(item, type_name[2:], f"{path}[{key}]")
        return
    if not isinstance(value, dict):
        if value is not None:
            where = f" at '{path}'" if path else ""
            raise invalid(f"Invalid JSON payload received. Expected an object{where}.", path)
        return
    known = FIELDS[type_name]
    for key, item in value.items():
        name = key if key in known else camel(key)
        if name not in known:
            where = f" at '{path}'" if path else ""
            raise invalid(f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.', path)
        child = known[name]
        child_path = f"{path}.{snake(name)}" if path else snake(name)
        if name == "thoughtSignature" and not is_base64(item):
            raise invalid(f"Invalid value at '{child_path}' (TYPE_BYTES), Base64 decoding failed for \"{item}\"",
                          child_path)
        if child is not None:
            check_fields(item, child, child_path)


def is_base64(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    padded = value + "=" * (-len(value) % 4)
    try:
        base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def check_request(body: dict[str, Any], model: str) -> None:
    check_fields(body, "Request", "")
    contents = get(body, "contents") or []
    if not contents:
        raise invalid("* GenerateContentRequest.contents: contents is not specified\n", "contents")
    for i, content in enumerate(contents):
        if get(content, "role", "user") not in ("user", "model", ""):
            raise invalid("Please use a valid role: user, model.", f"contents[{i}].role")
        parts = get(content, "parts") or []
        if not parts:
            raise invalid(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n",
                          f"contents[{i}].parts")
        for j, part in enumerate(parts):
            if not isinstance(part, dict) or not set(part) - DATA_LESS:
                raise invalid(f"* GenerateContentRequest.contents[{i}].parts[{j}].data: required oneof field "
                              "'data' must have one initialized field\n", f"contents[{i}].parts[{j}].data")
        check_function_turn(contents, i)
    check_signatures(contents, model)
    config = get(body, "generationConfig") or {}
    check_number(config, "temperature", 0.0, 2.0)
    check_number(config, "topP", 0.0, 1.0)
    check_number(config, "candidateCount", 1, 8)
    check_number(config, "maxOutputTokens", 1, 1 << 31)
    check_number(config, "topK", 1, 1 << 31)
    stops = get(config, "stopSequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(x, str) for x in stops)):
        raise invalid("Invalid value at 'generation_config.stop_sequences' (TYPE_STRING)",
                      "generation_config.stop_sequences")
    if stops and len(stops) > 5:
        raise invalid("* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences are "
                      "allowed\n", "generation_config.stop_sequences")


def check_number(config: dict[str, Any], name: str, low: float, high: float) -> None:
    """A generationConfig number: the right JSON type and within range."""
    value = get(config, name)
    if value is None:
        return
    path = f"generation_config.{snake(name)}"
    integral = isinstance(low, int)
    if isinstance(value, bool) or not isinstance(value, int if integral else (int, float)):
        kind = "TYPE_INT32" if integral else "TYPE_FLOAT"
        raise invalid(f"Invalid value at '{path}' ({kind}), {orjson.dumps(value).decode()}", path)
    if not low <= value <= high:
        shown = f"[{low}, {high}]" if high < 1 << 31 else f">= {low}"
        raise invalid(f"* GenerateContentRequest.{path}: {snake(name)} must be in {shown}\n", path)


def part_names(content: Any, kind: str) -> list[str]:
    return [get(get(p, kind), "name", "") for p in get(content, "parts") or [] if get(p, kind) is not None]


def check_function_turn(contents: list[Any], i: int) -> None:
    """Function responses must answer the function calls of the turn before."""
    responses = part_names(contents[i], "functionResponse")
    if not responses:
        return
    calls = part_names(contents[i - 1], "functionCall") if i else []
    if not calls:
        raise invalid("Please ensure that function response turn comes immediately after a function call turn.",
                      f"contents[{i}]")
    if len(responses) != len(calls):
        raise invalid("Please ensure that the number of function response parts is equal to the number of "
                      "function call parts of the function call turn.", f"contents[{i}]")
    for name in responses:
        if name not in calls:
            raise invalid(f"Function response name '{name}' does not match any function call of the preceding "
                          "function call turn.", f"contents[{i}]")


def check_signatures(contents: list[Any], model: str) -> None:
    """Gemini 3: the first function call of each model step in the current
    turn must carry its thought signature."""
    if not re.match(r"gemini-([3-9]|\d\d)\b", model):
        return
    start = 0
    for i, content in enumerate(contents):
        if get(content, "role", "user") == "user" and any("text" in p for p in get(content, "parts") or []):
            start = i
    for i in range(start, len(contents)):
        parts = [p for p in get(contents[i], "parts") or [] if get(p, "functionCall") is not None]
        if parts and not get(parts[0], "thoughtSignature"):
            name = get(get(parts[0], "functionCall"), "name", "")
            raise invalid("Function call is missing a thought_signature in functionCall parts. This is required for "
                          "tools to work correctly, and missing thought_signature may lead to degraded model "
                          f"performance. Additional data, function call `default_api:{name}` , position {i + 1}. "
                          "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more "
                          "details.", f"contents[{i}]")


def check_key(request: web.Request) -> None:
    if "key" in request.query:
        raise invalid("API keys are accepted only in the x-goog-api-key header; this gateway's simulator refuses "
                      "the key query parameter because URLs end up in logs.", "key")
    if not request.headers.get("x-goog-api-key"):
        raise GeminiError(403, "Method doesn't allow unregistered callers (callers without established identity). "
                               "Please use API Key or other form of API consumer identity to call this API.")


def scripted_error(script: Script) -> GeminiError:
    status = script.status
    details = []
    if status == 429 and script.retry_after is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{script.retry_after}s"})
    if status == 400:
        return invalid("Request contains an invalid argument.")
    return GeminiError(status, MESSAGES.get(status, f"Simulated error {status}."), g_status=script.error_type,
                       details=details)


# ------------------------------------------------------------------- answer --


@dataclass(slots=True)
class Answer:
    """One candidate's answer, before it is cut into chunks."""

    text: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    thoughts: list[str] = field(default_factory=list)
    finish: str = "STOP"
    json_text: bool = False
    blocked: bool = False


def text_of(content: Any) -> str:
    return " ".join(get(p, "text", "") for p in get(content, "parts") or [] if not get(p, "thought"))


def prompt_tokens(body: dict[str, Any]) -> int:
    tokens = count_tokens(text_of(get(body, "systemInstruction") or {}))
    for content in get(body, "contents") or []:
        for part in get(content, "parts") or []:
            if get(part, "thought"):
                continue
            if "text" in part:
                tokens += count_tokens(part["text"])
            elif get(part, "inlineData") is not None or get(part, "fileData") is not None:
                tokens += IMAGE_TOKENS
            else:
                tokens += count_tokens(orjson.dumps(part).decode().replace(",", " "))
    return max(tokens, 1)


def chosen_calls(body: dict[str, Any], last_text: str) -> list[dict[str, Any]]:
    declarations = [d for tool in get(body, "tools") or [] for d in get(tool, "functionDeclarations") or []]
    config = get(get(body, "toolConfig") or {}, "functionCallingConfig") or {}
    mode = str(get(config, "mode", "AUTO")).upper()
    if not declarations or mode == "NONE":
        return []
    allowed = get(config, "allowedFunctionNames") or []
    pool = [d for d in declarations if not allowed or d.get("name") in allowed]
    chosen = [d for d in pool if isinstance(d.get("name"), str) and d["name"] and d["name"] in last_text]
    if not chosen and mode in ("ANY", "VALIDATED") and pool:
        chosen = pool[:1]
    return [{"name": d["name"], "args": instance_for(get(d, "parametersJsonSchema") or get(d, "parameters")
                                                     or {"type": "object", "properties": {}})} for d in chosen]


def build_answer(body: dict[str, Any], model: str, script: Script) -> Answer:
    contents = get(body, "contents")
    last = contents[-1]
    config = get(body, "generationConfig") or {}
    answer = Answer()
    thinking = get(config, "thinkingConfig") or {}
    count = script.reasoning or (DEFAULT_THOUGHTS if get(thinking, "includeThoughts") else 0)
    answer.thoughts = [(_THOUGHT_WORDS * (count // len(_THOUGHT_WORDS) + 1))[i] for i in range(count)]
    finish = script.finish.lower()
    if finish == "blocked":
        answer.blocked = True
        return answer
    if finish == "content_filter":
        answer.finish = "SAFETY"
        return answer
    results = [get(p, "functionResponse") for p in get(last, "parts") or [] if get(p, "functionResponse") is not None]
    last_text = text_of(last)
    if not results:
        answer.calls = chosen_calls(body, last_text)
        if answer.calls:
            return answer
    schema = get(config, "responseJsonSchema") or get(config, "_responseJsonSchema") or get(config, "responseSchema")
    if get(config, "responseMimeType") == "application/json" or schema:
        words, _ = words_for(last_text, model, script.tokens, None)
        value = instance_for(schema) if schema else {"answer": " ".join(words)}
        answer.text, answer.json_text = orjson.dumps(value).decode(), True
        return answer
    if results:
        quoted = "; ".join(f"{get(r, 'name', '')} returned {orjson.dumps(get(r, 'response')).decode()}"
                           for r in results)
        last_text = f"Based on the tool results: {quoted}"
    words, truncated = words_for(last_text, model, script.tokens, get(config, "maxOutputTokens"))
    answer.text = " ".join(words)
    answer.finish = "MAX_TOKENS" if truncated else "STOP"
    for stop in get(config, "stopSequences") or []:
        cut = answer.text.find(stop) if stop else -1
        if cut >= 0:
            answer.text, answer.finish = answer.text[:cut], "STOP"
    if finish == "length":
        answer.finish = "MAX_TOKENS"
    elif finish:
        answer.finish = finish.upper() if finish != "stop" else "STOP"
    return answer


def signature_for(answer: Answer, model: str) -> str:
    digest = hashlib.sha256(f"{model}|{' '.join(answer.thoughts)}|{answer.text}".encode()).digest()
    return base64.b64encode(b"sim-thought:" + digest).decode()


def answer_steps(answer: Answer, model: str) -> list[list[dict[str, Any]]]:
    """The candidate's parts, one list per stream chunk. Joined, they are the
    non-streaming answer."""
    steps: list[list[dict[str, Any]]] = [[{"text": w + " ", "thought": True}] for w in answer.thoughts]
    signature = signature_for(answer, model) if answer.thoughts else ""
    if answer.calls:
        parts = [{"functionCall": {"name": c["name"], "args": c["args"]}} for c in answer.calls]
        if signature:
            parts[0]["thoughtSignature"] = signature
        steps.append(parts)
        return steps
    if answer.json_text:
        pieces = [answer.text[i: i + 16] for i in range(0, len(answer.text), 16)]
    else:
        pieces = re.findall(r"\s*\S+\s*", answer.text)
    steps.extend([{"text": piece}] for piece in pieces)
    if signature and pieces:
        steps[-1][0]["thoughtSignature"] = signature
    return steps


def usage(prompt: int, answer: Answer, n: int, emitted_text: str | None = None) -> dict[str, Any]:
    text = answer.text if emitted_text is None else emitted_text
    candidates = (count_tokens(text) + sum(count_tokens(orjson.dumps(c["args"]).decode().replace(",", " "))
                                           for c in answer.calls)) * n
    thoughts = len(answer.thoughts) * n
    meta: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
                            "totalTokenCount": prompt + candidates + thoughts,
                            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    return meta


SAFETY_RATINGS = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
                  {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]


def candidate(parts: list[dict[str, Any]], index: int, finish: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"index": index}
    if parts:
        item["content"] = {"parts": parts, "role": "model"}
    if finish:
        item["finishReason"] = finish
        if finish == "SAFETY":
            item["safetyRatings"] = SAFETY_RATINGS
    return item


def blocked_response(prompt: int, model: str, response_id: str) -> dict[str, Any]:
    return {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": SAFETY_RATINGS},
            "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt}, "modelVersion": model,
            "responseId": response_id}


def full_response(answer: Answer, n: int, prompt: int, model: str, response_id: str) -> dict[str, Any]:
    if answer.blocked:
        return blocked_response(prompt, model, response_id)
    parts = [p for step in answer_steps(answer, model) for p in step]
    merged: list[dict[str, Any]] = []
    for part in parts:  # adjacent text pieces of the same kind come back as one part
        if merged and "text" in part and "text" in merged[-1] and part.get("thought") == merged[-1].get("thought") \
                and "thoughtSignature" not in merged[-1]:
            merged[-1] = {**merged[-1], **part, "text": merged[-1]["text"] + part["text"]}
        else:
            merged.append(dict(part))
    return {"candidates": [candidate(merged, i, answer.finish) for i in range(n)],
            "usageMetadata": usage(prompt, answer, n), "modelVersion": model, "responseId": response_id}


def stream_chunks(answer: Answer, n: int, prompt: int, model: str, response_id: str) -> Iterator[dict[str, Any]]:
    if answer.blocked:
        yield blocked_response(prompt, model, response_id)
        return
    steps = answer_steps(answer, model) or [[]]
    emitted = ""
    for i, parts in enumerate(steps):
        final = i == len(steps) - 1
        emitted += "".join(p.get("text", "") for p in parts if not p.get("thought"))
        meta = usage(prompt, answer, n, None if final else emitted)
        yield {"candidates": [candidate(parts, c, answer.finish if final else None) for c in range(n)],
               "usageMetadata": meta, "modelVersion": model, "responseId": response_id}


# ------------------------------------------------------------------- routes --


def all_text(body: dict[str, Any]) -> str:
    texts = [text_of(get(body, "systemInstruction") or {})]
    texts += [text_of(c) for c in get(body, "contents") or [] if isinstance(c, dict)]
    return "\n".join(texts)


def add_routes(app: web.Application, recorder: Recorder) -> None:
    async def generate(request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["target"].partition(":")
        body, _, item = await recorder.record_request(API, request)
        script = Script()
        try:
            check_key(request)
            if method in UNARY_METHODS:
                if not isinstance(body, dict):
                    raise invalid("Invalid JSON payload received. Expected an object.")
                script = parse_script(request.headers, orjson.dumps(body).decode())
                if script.status:
                    raise scripted_error(script)
                answer = UNARY_METHODS[method](body, model)
                return await send_json(request, recorder, item, script, 200, orjson.dumps(answer))
            if method not in ("generateContent", "streamGenerateContent"):
                raise GeminiError(404, f"Method {method!r} is not supported for models/{model}.")
            if not isinstance(body, dict):
                raise invalid("Invalid JSON payload received. Expected an object (GenerateContentRequest).")
            script = parse_script(request.headers, all_text(body))
            check_request(body, model)
            if not KNOWN_MODEL.match(model):
                raise GeminiError(404, f"models/{model} is not found for API version v1beta, or is not supported "
                                       "for generateContent. Call ListModels to see the list of available models "
                                       "and their supported methods.")
            if script.status:
                raise scripted_error(script)
            try:
                answer = build_answer(body, model, script)
            except (TypeError, ValueError, AttributeError, KeyError):  # a schema or value we cannot make sense of
                raise invalid("Request contains an invalid argument.") from None
        except GeminiError as exc:
            return await send_json(request, recorder, item, script, exc.status, orjson.dumps(exc.body))
        n = get(get(body, "generationConfig") or {}, "candidateCount") or 1
        prompt = prompt_tokens(body)
        response_id = f"sim-{next(_ids)}"
        if method == "generateContent":
            payload = full_response(answer, n, prompt, model, response_id)
            return await send_json(request, recorder, item, script, 200, orjson.dumps(payload))
        chunks = [orjson.dumps(c) for c in stream_chunks(answer, n, prompt, model, response_id)]
        error = orjson.dumps({"error": {"code": 503, "message": MESSAGES[503], "status": "UNAVAILABLE"}})
        if request.query.get("alt") == "sse":
            frames = [Frame(b"data: " + c + b"\r\n\r\n", content=True) for c in chunks]
            return await send_stream(request, recorder, item, script, frames,
                                     malformed=b'data: {"candidates": [{"content": \r\n\r\n',
                                     error_frame=b"data: " + error + b"\r\n\r\n")
        frames = [Frame((b"[" if i == 0 else b"\n,\r\n") + c, content=True) for i, c in enumerate(chunks)]
        frames.append(Frame(b"\n]"))
        return await send_stream(request, recorder, item, script, frames, malformed=b'\n,\r\n{"candidates": [',
                                 error_frame=b"\n,\r\n" + error + b"\n]", content_type="application/json")

    async def models(request: web.Request) -> web.Response:
        item = await recorder.record(API, request, None)
        name = request.match_info.get("name")
        try:
            check_key(request)
            if name is not None and name not in MODELS:
                raise GeminiError(404, f"models/{name} is not found for API version v1beta.")
        except GeminiError as exc:
            return await send_json(request, recorder, item, Script(), exc.status, orjson.dumps(exc.body))
        payload = model_info(name) if name else {"models": [model_info(m) for m in MODELS]}
        return await send_json(request, recorder, item, Script(), 200, orjson.dumps(payload))

    app.router.add_post("/v1beta/models/{target}", generate)
    app.router.add_get("/v1beta/models", models)
    app.router.add_get("/v1beta/models/{name}", models)
    # google-genai 3.x defaults to v1; GET /v1/models belongs to the OpenAI simulator on the shared port.
    app.router.add_post("/v1/models/{target}", generate)


def model_info(model: str) -> dict[str, Any]:
    return {"name": f"models/{model}", "baseModelId": model, "version": "001", "displayName": model,
            "description": f"Simulated {model}", "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
            "supportedGenerationMethods": ["generateContent", "countTokens"], "temperature": 1.0,
            "maxTemperature": 2.0, "topP": 0.95, "topK": 64, "thinking": not model.startswith("gemini-2.0")}

