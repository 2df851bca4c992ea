"""OpenAI Chat Completions as api.openai.com speaks it (``/v1``), and as an
OpenAI-compatible local server in the vLLM mould speaks it (``/compat/v1``).

The strict flavour requires a bearer key and rejects what the real API
rejects, with its message, ``param`` and ``code``. The compat flavour accepts
any model and no key, type-checks the extra sampling fields local servers
understand, ignores other unknown fields (as vLLM does), answers errors in
vLLM's shape (``code`` is the HTTP status) and streams ``reasoning_content``
for ``[[sim reasoning=N]]``. On the strict flavour that directive only adds
hidden ``reasoning_tokens`` to the usage of reasoning models (o-series,
gpt-5), since Chat Completions never returns reasoning text.

Answers are deterministic functions of the prompt (see ``scenarios.py``).
One directive key is read here as well as the shared ones: ``cached_tokens=N``
(reported in ``prompt_tokens_details.cached_tokens``).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import secrets
import string
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from simulator.scenarios import Recorder, Script, count_tokens, parse_script, strip_directives, words_for
from simulator.schema_instances import instance_for
from simulator.streaming import Frame, send_json, send_stream

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
IMAGE_TOKENS = 85  # what one low-detail image costs on the real API
FINGERPRINT = "fp_5e3a1b1d"
CREATED = 1715367049
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")
_TOKEN = re.compile(r"\s*\S+")
_FRAGMENT = re.compile(r"[A-Za-z0-9_]+|\s+|[^A-Za-z0-9_\s]+")
_ID_CHARS = string.ascii_letters + string.digits
_BAD_JSON = ("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
             "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)")
_NO_KEY = ("You didn't provide an API key. You need to provide your API key in an Authorization header using "
           "Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
_IMAGE_HINT = ("Expected a base64-encoded data URL with an image MIME type "
               "(e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU=')")


@dataclass(frozen=True, slots=True)
class Flavour:
    strict: bool   # api.openai.com rules; else a vLLM-style local server
    owned_by: str


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STRICT = Flavour(strict=True, owned_by="system")
COMPAT = Flavour(strict=False, owned_by="vllm")


class RejectionError(Exception):
    """A request the simulated API refuses, with its error fields."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}


def add_routes(app: web.Application, recorder: Recorder) -> None:
    for prefix, flavour in (("/v1", STRICT), ("/compat/v1", COMPAT)):
        app.router.add_post(f"{prefix}/chat/completions", _chat_handler(recorder, flavour))
        app.router.add_get(f"{prefix}/models", _models_handler(recorder, flavour))


def _chat_handler(recorder: Recorder, flavour: Flavour) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await _chat(request, recorder, flavour)
    return handle


def _models_handler(recorder: Recorder, flavour: Flavour) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        item = await recorder.record("openai", request, None)
        script = Script()
        try:
            _authenticate(request, flavour)
        except RejectionError as exc:
            return await send_json(request, recorder, item, script, exc.status, _error_body(exc, flavour))
        ids = sorted(SNAPSHOTS) if flavour.strict else list(COMPAT_MODELS)
        data = [{"id": m, "object": "model", "created": CREATED, "owned_by": flavour.owned_by} for m in ids]
        return await send_json(request, recorder, item, script, 200, orjson.dumps({"object": "list", "data": data}))
    return handle


async def _chat(request: web.Request, recorder: Recorder, flavour: Flavour) -> web.StreamResponse:
    raw = await request.read()
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    item = await recorder.record("openai", request, body if body is not None else raw.decode("utf-8", "replace"))
    script = Script()
    headers = {"x-request-id": "req_" + secrets.token_hex(16)}
    try:
        _authenticate(request, flavour)
        if not isinstance(body, dict):
            raise RejectionError(400, _BAD_JSON)
        script = _script_for(request, body)
        if script.status:
            raise _scripted_error(script, body)
        validate(body, flavour)
        answer = compose(body, script, flavour, _scripted_int(request, body, "cached_tokens"))
    except RejectionError as exc:
        return await send_json(request, recorder, item, script, exc.status, _error_body(exc, flavour),
                               {**headers, **exc.headers})
    if body.get("stream"):
        return await send_stream(request, recorder, item, script, stream_frames(answer),
                                 malformed=b'data: {"id": "chatcmpl-broken", "choices": [{"delta": \n\n',
                                 error_frame=_sse({"error": _error_fields(_IN_STREAM_ERROR, flavour)}))
    return await send_json(request, recorder, item, script, 200, orjson.dumps(completion_body(answer)), headers)


# ------------------------------------------------------------------ scripting --


def _directive_value(request: web.Request, text: str, key: str) -> str:
    header = request.headers.get("x-sim-" + key.replace("_", "-"), "")
    found = re.search(r"\[\[sim\b[^\]]*?\b" + key + r"=([^\s\]]+)", text)
    return found.group(1) if found else header


def _scripted_int(request: web.Request, body: dict, key: str) -> int:
    value = _directive_value(request, _all_text(body.get("messages")), key)
    return int(value) if value.isdigit() else 0


def _script_for(request: web.Request, body: dict) -> Script:
    model = body.get("model")
    try:
        return parse_script(request.headers, _all_text(body.get("messages")), model if isinstance(model, str) else None)
    except ValueError:
        raise RejectionError(400, "Invalid [[sim ...]] directive: numeric keys need integer values.") from None


_IN_STREAM_ERROR = RejectionError(500, "The server had an error while processing your request. Sorry about that!",
                                  type_="server_error")


def _scripted_error(script: Script, body: dict) -> RejectionError:
    """The real API's error for a scripted status (``error_type`` sets the code)."""
    status, code, model = script.status, script.error_type or None, body.get("model")
    headers = {"retry-after": str(script.retry_after)} if script.retry_after is not None else {}
    if code == "context_length_exceeded":
        return RejectionError(status, "This model's maximum context length is 128000 tokens. However, your messages "
                                      "resulted in 130412 tokens. Please reduce the length of the messages.",
                              param="messages", code=code, headers=headers)
    if code == "insufficient_quota":
        return RejectionError(status, "You exceeded your current quota, please check your plan and billing details.",
                              type_=code, code=code, headers=headers)
    known = {
        400: ("Invalid request (simulated).", "invalid_request_error", None),
        401: ("Incorrect API key provided. You can find your API key at "
              "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key"),
        403: (f"Project `proj_sim` does not have access to model `{model}`", "invalid_request_error",
              "model_not_found"),
        404: (f"The model `{model}` does not exist or you do not have access to it.", "invalid_request_error",
              "model_not_found"),
        429: (f"Rate limit reached for {model} in organization org-sim on requests per min (RPM): Limit 500, "
              "Used 500, Requested 1. Please try again in 120ms.", "requests", "rate_limit_exceeded"),
        500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
        503: ("The engine is currently overloaded, please try again later.", "server_error", None),
    }
    fallback = (f"Simulated upstream error {status}.", "invalid_request_error" if status < 500 else "server_error",
                None)
    message, type_, default_code = known.get(status, fallback)
    return RejectionError(status, message, type_=type_, code=code or default_code, headers=headers)


def _error_fields(exc: RejectionError, flavour: Flavour) -> dict[str, Any]:
    if flavour.strict:
        return {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}
    kinds = {400: "BadRequestError", 401: "UnauthorizedError", 404: "NotFoundError", 429: "RateLimitError",
             503: "ServiceUnavailableError"}
    return {"message": exc.message, "type": kinds.get(exc.status, "InternalServerError"), "param": exc.param,
            "code": exc.status}


def _error_body(exc: RejectionError, flavour: Flavour) -> bytes:
    return orjson.dumps({"error": _error_fields(exc, flavour)})


def _authenticate(request: web.Request, flavour: Flavour) -> None:
    if not flavour.strict:
        return  # local servers run without --api-key unless told otherwise
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise RejectionError(401, _NO_KEY, code="invalid_api_key")


# ----------------------------------------------------------------- validation --


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
    if not _REASONING_MODEL.match(body["model"]):
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
        if "json" not in _all_text(body["messages"]).lower():
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


# -------------------------------------------------------------------- answers --


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Choice:
    index: int
    tokens: list[str]        # content tokens, leading space included
    reasoning: list[str]     # reasoning_content tokens (compat flavour only)
    calls: list[ToolCall]
    finish: str


@dataclass(slots=True)
class Answer:
    flavour: Flavour
    id: str
    model: str
    choices: list[Choice]
    usage: dict[str, Any]
    logprobs: int | None     # None: not requested; else top_logprobs count
    include_usage: bool
    created: int


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _all_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    return "\n".join(_text(m.get("content")) for m in messages if isinstance(m, dict))


def _prompt_for(messages: list[dict]) -> tuple[str, bool]:
    """The text the answer is derived from, and whether it is a tool result."""
    if messages[-1]["role"] == "tool":
        results = list(itertools.takewhile(lambda m: m["role"] == "tool", reversed(messages)))
        return "tool result: " + " | ".join(_text(m.get("content")) for m in reversed(results)), True
    users = [m for m in messages if m["role"] == "user"]
    return _text(users[-1].get("content")) if users else "", False


def _mentions(prompt: str, name: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", prompt, re.IGNORECASE) is not None


def _tools_to_call(body: dict, prompt: str) -> list[dict]:
    functions = {t["function"]["name"]: t["function"] for t in body.get("tools") or [] if t["type"] == "function"}
    choice = body.get("tool_choice", "auto")
    if not functions or choice == "none":
        return []
    if isinstance(choice, dict):
        names = [choice["function"]["name"]]
    else:
        names = [name for name in functions if _mentions(prompt, name)]
        if not names and choice == "required":
            names = [next(iter(functions))]
    if body.get("parallel_tool_calls") is False:
        names = names[:1]
    return [functions[name] for name in names]


def _new_id(prefix: str, size: int) -> str:
    return prefix + "".join(secrets.choice(_ID_CHARS) for _ in range(size))


def _content_text(body: dict, prompt: str, script: Script, variant: int) -> str:
    words, _ = words_for(prompt, body["model"], script.tokens, None)
    if variant and words:
        shift = variant % len(words)
        words = words[shift:] + words[:shift]
    text = " ".join(words)
    fmt = (body.get("response_format") or {}).get("type")
    if fmt == "json_object":
        return json.dumps({"answer": text}, ensure_ascii=False)
    if fmt == "json_schema":
        schema = body["response_format"]["json_schema"].get("schema") or {"type": "object"}
        return json.dumps(instance_for(schema, variant), ensure_ascii=False)
    return text


def _limit(text: str, stops: list[str], limit: int | None) -> tuple[list[str], str]:
    """Tokens after stop sequences and the token limit, and the finish reason."""
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if cuts:
        text = text[:min(cuts)]
    tokens = _TOKEN.findall(text)
    if limit is not None and len(tokens) > limit:
        return tokens[:limit], "length"
    return tokens, "stop"


def _reasoning_words(prompt: str, count: int) -> list[str]:
    base = ("Thinking about " + strip_directives(prompt)).split()
    words = list(itertools.islice(itertools.cycle(base), count))
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def compose(body: dict, script: Script, flavour: Flavour, cached: int = 0) -> Answer:
    """The deterministic answer to a validated request."""
    messages = body["messages"]
    prompt, tool_turn = _prompt_for(messages)
    functions = [] if tool_turn else _tools_to_call(body, prompt)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    hidden = script.reasoning if flavour.strict and _REASONING_MODEL.match(body["model"]) else 0
    choices: list[Choice] = []
    for i in range(body.get("n") or 1):
        reasoning = [] if flavour.strict else _reasoning_words(prompt, script.reasoning)
        if functions:
            calls = [ToolCall(_new_id("call_", 24) if flavour.strict else _new_id("chatcmpl-tool-", 32), f["name"],
                              _arguments_for(f.get("parameters"), i)) for f in functions]
            # The real API (and vLLM, to match it) finishes a call forced by name with "stop".
            named = isinstance(body.get("tool_choice"), dict)
            choice = Choice(i, [], reasoning, calls, "stop" if named else "tool_calls")
        else:
            tokens, finish = _limit(_content_text(body, prompt, script, i), stops, limit)
            choice = Choice(i, tokens, reasoning, [], finish)
        choice.finish = script.finish or choice.finish
        choices.append(choice)
    prompt_tokens = _prompt_tokens(body)
    reasoning_tokens = sum(len(c.reasoning) + hidden for c in choices)
    completion = reasoning_tokens + sum(
        len(c.tokens) + sum(count_tokens(f"{t.name} {t.arguments}") for t in c.calls) for c in choices)
    usage = {
        "prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": min(cached, prompt_tokens), "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }
    model = SNAPSHOTS.get(body["model"], body["model"]) if flavour.strict else body["model"]
    top = body.get("top_logprobs") or 0
    return Answer(flavour, _new_id("chatcmpl-", 29) if flavour.strict else "chatcmpl-" + secrets.token_hex(16),
                  model, choices, usage, top if body.get("logprobs") else None,
                  bool((body.get("stream_options") or {}).get("include_usage")), int(time.time()))


def _prompt_tokens(body: dict) -> int:
    total = 0
    for message in body["messages"]:
        content = message.get("content")
        total += count_tokens(_text(content)) + 1
        if isinstance(content, list):
            total += IMAGE_TOKENS * sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
        for call in message.get("tool_calls") or []:
            total += count_tokens(str((call.get("function") or {}).get("arguments", "")))
    for tool in body.get("tools") or []:
        function = tool.get("function") or {}
        total += count_tokens(f"{function.get('name', '')} {function.get('description', '')}")
    return total


def _arguments_for(parameters: Any, variant: int) -> str:
    value = instance_for(parameters or {"type": "object"}, variant)
    return orjson.dumps(value if isinstance(value, dict) else {}).decode()


# ------------------------------------------------------------------ rendering --


def _logprob(token: str, top: int) -> dict[str, Any]:
    """A deterministic logprob entry in the real API's shape."""
    value = -round((zlib.crc32(token.encode()) % 2000) / 1000 + 0.001, 6)
    alternatives = [token, *(token.rstrip() + suffix for suffix in ",.;:!?-'\")]}>*/+=&%$#@")]
    return {"token": token, "logprob": value, "bytes": list(token.encode()),
            "top_logprobs": [{"token": alt, "logprob": round(value - i * 1.5, 6), "bytes": list(alt.encode())}
                             for i, alt in enumerate(alternatives[:top])]}


def completion_body(answer: Answer) -> dict[str, Any]:
    strict = answer.flavour.strict
    choices = []
    for c in answer.choices:
        content = None if c.calls else "".join(c.tokens)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if strict:
            message |= {"refusal": None, "annotations": []}
        else:
            message["reasoning_content"] = "".join(c.reasoning) or None
        if c.calls or not strict:
            message["tool_calls"] = [{"id": t.id, "type": "function",
                                      "function": {"name": t.name, "arguments": t.arguments}} for t in c.calls]
        logprobs = None
        if answer.logprobs is not None:
            logprobs = {"content": [_logprob(t, answer.logprobs) for t in c.tokens], "refusal": None}
        choice = {"index": c.index, "message": message, "logprobs": logprobs, "finish_reason": c.finish}
        if not strict:
            choice["stop_reason"] = None
        choices.append(choice)
    body = {"id": answer.id, "object": "chat.completion", "created": answer.created, "model": answer.model,
            "choices": choices, "usage": answer.usage}
    if strict:
        body |= {"service_tier": "default", "system_fingerprint": FINGERPRINT}
    return body


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _chunk(answer: Answer, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
    payload: dict[str, Any] = {"id": answer.id, "object": "chat.completion.chunk", "created": answer.created,
                               "model": answer.model}
    if answer.flavour.strict:
        payload |= {"service_tier": "default", "system_fingerprint": FINGERPRINT, "choices": choices}
        if answer.include_usage:
            payload["usage"] = usage
        payload["obfuscation"] = secrets.token_urlsafe(3)
    else:
        payload["choices"] = choices
        if usage is not None:
            payload["usage"] = usage
    return _sse(payload)


def _deltas(answer: Answer, c: Choice) -> Iterator[tuple[dict[str, Any], bool]]:
    """(stream choice, carries content) for one choice, in the API's order."""
    strict = answer.flavour.strict

    def entry(delta: dict[str, Any], logprobs: Any = None, finish: str | None = None) -> dict[str, Any]:
        return {"index": c.index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}

    def head(k: int, call: ToolCall) -> dict[str, Any]:
        if strict:
            return {"index": k, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        return {"id": call.id, "type": "function", "index": k, "function": {"name": call.name}}

    if strict and c.calls:
        yield entry({"role": "assistant", "content": None, "tool_calls": [head(0, c.calls[0])], "refusal": None}), False
    elif strict:
        yield entry({"role": "assistant", "content": "", "refusal": None}), False
    else:
        yield entry({"role": "assistant", "content": ""}), False
    for token in c.reasoning:
        yield entry({"reasoning_content": token}), True
    for k, call in enumerate(c.calls):
        if k or not strict:
            yield entry({"tool_calls": [head(k, call)]}), True
        for fragment in _FRAGMENT.findall(call.arguments):
            yield entry({"tool_calls": [{"index": k, "function": {"arguments": fragment}}]}), True
    for token in c.tokens:
        logprobs = None
        if answer.logprobs is not None:
            logprobs = {"content": [_logprob(token, answer.logprobs)], "refusal": None}
        yield entry({"content": token}, logprobs), True
    last = entry({} if strict else {"content": ""}, None, c.finish)
    if not strict:
        last["stop_reason"] = None
    yield last, False


def stream_frames(answer: Answer) -> list[Frame]:
    """The SSE frames of a streamed answer: choices interleaved one per chunk,
    the usage chunk when asked for, then ``[DONE]``."""
    frames = []
    for batch in itertools.zip_longest(*(_deltas(answer, c) for c in answer.choices)):
        for item in batch:
            if item is not None:
                frames.append(Frame(_chunk(answer, [item[0]]), content=item[1]))
    if answer.include_usage:
        frames.append(Frame(_chunk(answer, [], answer.usage)))
    frames.append(Frame(b"data: [DONE]\n\n"))
    return frames
