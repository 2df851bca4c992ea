"""What the simulated Chat Completions API accepts: the request rules of
api.openai.com (strict flavour) and of a vLLM-style local server (compat
flavour), each refusal carrying the real API's message, ``param`` and code."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

# Aliases answer as their dated snapshot, like the real API.
SNAPSHOTS = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "o3": "o3-2025-04-16",
    "o3-mini": "o3-mini-2025-01-31",
    "o4-mini": "o4-mini-2025-04-16",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "gpt-5-nano": "gpt-5-nano-2025-08-07",
    "gpt-5.1": "gpt-5.1-2025-11-13",
    "gpt-5.2": "gpt-5.2-2025-12-11",
    "gpt-5.4": "gpt-5.4",
    "gpt-5.4-mini": "gpt-5.4-mini-2026-03-17",
    "gpt-5.4-nano": "gpt-5.4-nano-2026-03-17",
    "gpt-5.5": "gpt-5.5-2026-04-23",
}
KNOWN_MODELS = frozenset(SNAPSHOTS) | frozenset(SNAPSHOTS.values())
COMPAT_MODELS = ("sim-local",)
ROLES = ("system", "assistant", "user", "function", "tool", "developer")
PART_TYPES = ("text", "image_url", "input_audio", "refusal", "audio", "file")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
PARAMS = frozenset({
    "messages", "model", "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "metadata", "modalities", "moderation", "n", "parallel_tool_calls",
    "prediction", "presence_penalty", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
    "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
    "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
    "web_search_options",
})
# Extra sampling fields of local servers, with the JSON type each must have.
COMPAT_EXTRAS = {"top_k": "integer", "min_p": "number", "repetition_penalty": "number",
                 "chat_template_kwargs": "object", "structured_outputs": "object", "thinking_budget": "integer"}
IMAGE_MIME = ("image/png", "image/jpeg", "image/jpg", "image/gif", "image/webp")
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"RIFF")
_IMAGE_HINT = ("Expected a base64-encoded data URL with an image MIME type "
               "(e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU=')")
REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")


@dataclass(frozen=True, slots=True)
class Flavour:
    strict: bool   # api.openai.com rules; else a vLLM-style local server
    owned_by: str


STRICT = Flavour(strict=True, owned_by="system")
COMPAT = Flavour(strict=False, owned_by="vllm")


def text_of(content: Any) -> str:
    """The text of a message's content, whether a string or parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def all_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    return "\n".join(text_of(m.get("content")) for m in messages if isinstance(m, dict))


class RejectionError(Exception):
    """A request the simulated API refuses, with its error fields."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _bad_type(param: str, expected: str, value: Any) -> RejectionError:
    return RejectionError(400, f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.",
                          param=param, code="invalid_type")


def _missing(param: str) -> RejectionError:
    return RejectionError(400, f"Missing required parameter: '{param}'.", param=param,
                          code="missing_required_parameter")


def _invalid_value(param: str, value: Any, allowed: tuple[str, ...]) -> RejectionError:
    names = [f"'{a}'" for a in allowed]
    listed = ", ".join(names[:-1]) + f", and {names[-1]}"
    return RejectionError(400, f"Invalid value: '{value}'. Supported values are: {listed}.", param=param,
                          code="invalid_value")


def _number(body: dict, key: str, low: float | None, high: float | None, *, integer: bool = False) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise _bad_type(key, "an integer" if integer else "a decimal", value)
    word = "integer" if integer else "decimal"
    if low is not None and value < low:
        raise RejectionError(400, f"Invalid '{key}': {word} below minimum value. Expected a value >= {low:g}, but "
                                  f"got {value:g} instead.", param=key, code=f"{word}_below_min_value")
    if high is not None and value > high:
        raise RejectionError(400, f"Invalid '{key}': {word} above maximum value. Expected a value <= {high:g}, but "
                                  f"got {value:g} instead.", param=key, code=f"{word}_above_max_value")


def validate(body: dict, flavour: Flavour) -> None:
    """Raise the real API's 400/404 for a request it would refuse."""
    if flavour.strict:
        for key in body:
            if key not in PARAMS:
                raise RejectionError(400, f"Unrecognized request argument supplied: {key}")
    else:
        _check_extras(body)
    model = body.get("model")
    if model is None or model == "":
        raise RejectionError(400, "you must provide a model parameter")
    if not isinstance(model, str):
        raise _bad_type("model", "a string", model)
    if flavour.strict and model not in KNOWN_MODELS and not model.startswith("sim-"):
        raise RejectionError(404, f"The model `{model}` does not exist or you do not have access to it.",
                             code="model_not_found")
    _check_messages(body.get("messages"))
    _check_sampling(body, flavour)
    _check_tools(body)
    _check_response_format(body)


def _check_extras(body: dict) -> None:
    for key, value in body.items():
        expected = COMPAT_EXTRAS.get(key) or ("number" if key.startswith("xtc_") else None)
        if expected is None or value is None:
            continue
        ok = {"integer": isinstance(value, int) and not isinstance(value, bool),
              "number": isinstance(value, int | float) and not isinstance(value, bool),
              "object": isinstance(value, dict)}[expected]
        if not ok:
            kind, noun = {"integer": ("int", "integer"), "number": ("float", "number"),
                          "object": ("dict", "dictionary")}[expected]
            raise RejectionError(400, f"[{{'type': '{kind}_type', 'loc': ('body', '{key}'), 'msg': 'Input should be "
                                      f"a valid {noun}', 'input': {value!r}}}]", param=key)


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise _bad_type("messages", "an array of objects", messages)
    if not messages:
        raise RejectionError(400, "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
                                  "an empty array instead.", param="messages", code="empty_array")
    open_calls: list[str] = []   # ids of the last assistant tool_calls not yet answered
    answerable: set[str] = set()
    caller = -1
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad_type(where, "an object", message)
        role = message.get("role")
        if role is None:
            raise _missing(f"{where}.role")
        if role not in ROLES:
            raise _invalid_value(f"{where}.role", role, ROLES)
        _check_content(message, role, where)
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not call_id:
                raise _missing(f"{where}.tool_call_id")
            if caller < 0:
                raise RejectionError(400, "Invalid parameter: messages with role 'tool' must be a response to a "
                                          "preceeding message with 'tool_calls'.", param=f"messages.[{i}].role")
            if call_id not in answerable:
                raise RejectionError(400, f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in "
                                          "'tool_calls' of previous message.", param=f"messages.[{i}].tool_call_id")
            if call_id in open_calls:
                open_calls.remove(call_id)
            continue
        _raise_unanswered(open_calls, caller)
        calls = message.get("tool_calls") if role == "assistant" else None
        caller = i if calls else -1
        open_calls = [c.get("id") for c in calls if isinstance(c, dict)] if calls else []
        answerable = set(open_calls)
    _raise_unanswered(open_calls, caller)


def _raise_unanswered(open_calls: list[str], caller: int) -> None:
    if open_calls:
        raise RejectionError(400, "An assistant message with 'tool_calls' must be followed by tool messages "
                                  "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                                  f"response messages: {', '.join(open_calls)}", param=f"messages.[{caller}].role")


def _check_content(message: dict, role: str, where: str) -> None:
    content = message.get("content")
    if content is None:
        if role != "assistant" or not (message.get("tool_calls") or message.get("function_call")
                                       or message.get("refusal")):
            raise _missing(f"{where}.content")
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _bad_type(f"{where}.content", "one of a string or array of objects", content)
    for j, part in enumerate(content):
        path = f"{where}.content[{j}]"
        if not isinstance(part, dict):
            raise _bad_type(path, "an object", part)
        kind = part.get("type")
        if kind not in PART_TYPES:
            raise _invalid_value(f"{path}.type", kind, PART_TYPES)
        if kind == "text" and not isinstance(part.get("text"), str):
            raise _missing(f"{path}.text")
        if kind == "image_url":
            if role != "user":
                raise RejectionError(400, f"Invalid '{where}'. Image URLs are only allowed for messages with role "
                                          f"'user', but this message with role '{role}' contains an image URL.",
                                     param=where, code="invalid_value")
            url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else None
            if not isinstance(url, str):
                raise _missing(f"{path}.image_url.url")
            _check_image_url(url, f"{path}.image_url.url")


def _check_image_url(url: str, param: str) -> None:
    if url.startswith(("http://", "https://")):
        return
    if not url.startswith("data:"):
        raise RejectionError(400, f"Invalid image URL: '{param}'. {_IMAGE_HINT}, but got a value without the "
                                  "'data:' prefix.", param=param, code="invalid_value")
    header, comma, payload = url[5:].partition(",")
    mime, _, encoding = header.partition(";")
    problem = ""
    if not comma or encoding != "base64":
        problem = "a value that is not base64-encoded"
    elif mime.lower() not in IMAGE_MIME:
        problem = f"unsupported MIME type '{mime}'"
    elif not payload:
        problem = "empty base64-encoded bytes"
    if problem:
        raise RejectionError(400, f"Invalid '{param}'. {_IMAGE_HINT}, but got {problem}.", param=param,
                             code="invalid_value")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if not data.startswith(IMAGE_MAGIC):
        raise RejectionError(400, "You uploaded an unsupported image. Please make sure your image is valid.",
                             param=param, code="invalid_image_format")


def _check_sampling(body: dict, flavour: Flavour) -> None:
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    _number(body, "n", 1, 128, integer=True)
    _number(body, "top_logprobs", 0, 20, integer=True)
    _number(body, "max_tokens", 1, None, integer=True)
    _number(body, "max_completion_tokens", 1, None, integer=True)
    _number(body, "seed", None, None, integer=True)
    user = body.get("user")
    if isinstance(user, str) and len(user) > 256:
        raise RejectionError(400, f"Invalid 'user': string too long. Expected a string with maximum length 256, but "
                                  f"got a string with length {len(user)} instead.", param="user",
                             code="string_above_max_length")
    if body.get("top_logprobs") is not None and not body.get("logprobs"):
        raise RejectionError(400, "Invalid value for 'top_logprobs': 'logprobs' must be set to true when "
                                  "'top_logprobs' is used.", param="top_logprobs", code="invalid_value")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad_type("stop", "one of a string or array of strings", stop)
        if len(stop) > 4:
            raise RejectionError(400, "Invalid 'stop': array too long. Expected an array with maximum length 4, but "
                                      f"got an array with length {len(stop)} instead.", param="stop",
                                 code="array_above_max_length")
    if body.get("stream_options") is not None and not body.get("stream"):
        raise RejectionError(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                             param="stream_options", code="invalid_value")
    if flavour.strict:
        _check_reasoning_model(body)


def _check_reasoning_model(body: dict) -> None:
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise _invalid_value("reasoning_effort", effort, REASONING_EFFORTS)
    if not REASONING_MODEL.match(body["model"]):
        return
    if body.get("max_tokens") is not None:
        raise RejectionError(400, "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                                  "'max_completion_tokens' instead.", param="max_tokens", code="unsupported_parameter")
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1 and effort != "none":
        raise RejectionError(400, f"Unsupported value: 'temperature' does not support {temperature} with this model. "
                                  "Only the default (1) value is supported.", param="temperature",
                             code="unsupported_value")


def _check_tools(body: dict) -> None:
    tools = body.get("tools")
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad_type("tools", "an array of objects", tools)
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") not in ("function", "custom"):
                raise _invalid_value(f"tools[{i}].type", (tool or {}).get("type") if isinstance(tool, dict) else tool,
                                     ("function", "custom"))
            if tool["type"] != "function":
                continue
            function = tool.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(name, str):
                raise _missing(f"tools[{i}].function.name")
            if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
                raise RejectionError(400, f"Invalid 'tools[{i}].function.name': string does not match pattern. "
                                          "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                                     param=f"tools[{i}].function.name", code="invalid_value")
            if function.get("parameters") is not None and not isinstance(function["parameters"], dict):
                raise _bad_type(f"tools[{i}].function.parameters", "an object", function["parameters"])
            names.append(name)
    choice = body.get("tool_choice")
    if choice is None:
        return
    if not tools:
        raise RejectionError(400, "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                                  "specified.", param="tool_choice")
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise _invalid_value("tool_choice", choice, ("none", "auto", "required"))
        return
    name = ((choice.get("function") or {}).get("name")) if isinstance(choice, dict) else None
    if name not in names:
        raise RejectionError(400, f"Invalid value for 'tool_choice': function '{name}' is not one of the provided "
                                  "'tools'.", param="tool_choice", code="invalid_value")


def _check_response_format(body: dict) -> None:
    fmt = body.get("response_format")
    if fmt is None:
        return
    kinds = ("json_object", "json_schema", "text")
    if not isinstance(fmt, dict) or fmt.get("type") not in kinds:
        raise _invalid_value("response_format.type", fmt.get("type") if isinstance(fmt, dict) else fmt, kinds)
    if fmt["type"] == "json_object":
        if "json" not in all_text(body["messages"]).lower():
            raise RejectionError(400, "'messages' must contain the word 'json' in some form, to use "
                                      "'response_format' of type 'json_object'.", param="messages")
    elif fmt["type"] == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise _missing("response_format.json_schema")
        if not spec.get("name"):
            raise _missing("response_format.json_schema.name")
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            raise _bad_type("response_format.json_schema.schema", "an object", schema)
        if spec.get("strict"):
            _check_strict_schema(schema, spec["name"], ())


def _check_strict_schema(schema: Any, name: str, path: tuple[str, ...]) -> None:
    """Structured Outputs' strict-mode rules for every object in the schema."""
    if isinstance(schema, list):
        for i, item in enumerate(schema):
            _check_strict_schema(item, name, (*path, str(i)))
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "object" or "properties" in schema:
        where = f"In context=({', '.join(repr(p) for p in path)})"
        if schema.get("additionalProperties") is not False:
            raise RejectionError(400, f"Invalid schema for response_format '{name}': {where}, 'additionalProperties' "
                                      "is required to be supplied and to be false.", param="response_format",
                                 code="invalid_json_schema")
        missing = [p for p in schema.get("properties", {}) if p not in schema.get("required", [])]
        if missing:
            raise RejectionError(400, f"Invalid schema for response_format '{name}': {where}, 'required' is required "
                                      "to be supplied and to be an array including every key in properties. Missing "
                                      f"'{missing[0]}'.", param="response_format", code="invalid_json_schema")
    for key, value in schema.items():
        if isinstance(value, dict | list):
            _check_strict_schema(value, name, (*path, key))


