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

from simulator.openai_rules import (
    COMPAT,
    COMPAT_MODELS,
    REASONING_MODEL,
    SNAPSHOTS,
    STRICT,
    Flavour,
    RejectionError,
    all_text,
    text_of,
    validate,
)
from simulator.scenarios import Recorder, Script, count_tokens, parse_script, strip_directives, words_for
from simulator.schema_instances import instance_for
from simulator.streaming import Frame, send_json, send_stream

IMAGE_TOKENS = 85  # what one low-detail image costs on the real API
FINGERPRINT = "fp_5e3a1b1d"
CREATED = 1715367049
_TOKEN = re.compile(r"\s*\S+")
_DESCRIBED_SCHEMA = re.compile(r"JSON Schema: (\{.*\})\s*$", re.DOTALL)
_FRAGMENT = re.compile(r"[A-Za-z0-9_]+|\s+|[^A-Za-z0-9_\s]+")
_ID_CHARS = string.ascii_letters + string.digits
_BAD_JSON = ("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
             "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)")
_NO_KEY = ("You didn't provide an API key. You need to provide your API key in an Authorization header using "
           "Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    body, is_json, item = await recorder.record_request("openai", request)
    if not is_json:
        body = None
    script = Script()
    headers = {"x-request-id": "req_" + secrets.token_hex(16)}
    try:
        _authenticate(request, flavour)
        if not isinstance(body, dict):
            raise RejectionError(400, _BAD_JSON)
        script = _script_for(request, body)
        if script.status:
            raise _scripted_error(script, body)
        if script.no_json_schema and not flavour.strict and \
                (body.get("response_format") or {}).get("type") == "json_schema":
            raise RejectionError(500, "Unsupported response_format type: json_schema (grammar conversion failed)",
                                 type_="server_error")
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
    value = _directive_value(request, all_text(body.get("messages")), key)
    return int(value) if value.isdigit() else 0


def _script_for(request: web.Request, body: dict) -> Script:
    model = body.get("model")
    try:
        return parse_script(request.headers, all_text(body.get("messages")), model if isinstance(model, str) else None)
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
    usage: dict[str, Any] | None
    logprobs: int | None     # None: not requested; else top_logprobs count
    include_usage: bool
    created: int


def _prompt_for(messages: list[dict]) -> tuple[str, bool]:
    """The text the answer is derived from, and whether it is a tool result."""
    if messages[-1]["role"] == "tool":
        results = list(itertools.takewhile(lambda m: m["role"] == "tool", reversed(messages)))
        return "tool result: " + " | ".join(text_of(m.get("content")) for m in reversed(results)), True
    users = [m for m in messages if m["role"] == "user"]
    return text_of(users[-1].get("content")) if users else "", False


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
    described = _DESCRIBED_SCHEMA.search(all_text([m for m in body["messages"] if m.get("role") == "system"]))
    if fmt == "json_object" and described:  # a model following a schema given in its instructions
        try:
            return json.dumps(instance_for(json.loads(described.group(1)), variant), ensure_ascii=False)
        except json.JSONDecodeError:
            pass
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
    hidden = script.reasoning if flavour.strict and REASONING_MODEL.match(body["model"]) else 0
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
    include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and not script.no_usage
    return Answer(flavour, _new_id("chatcmpl-", 29) if flavour.strict else "chatcmpl-" + secrets.token_hex(16),
                  model, choices, None if script.no_usage else usage, top if body.get("logprobs") else None,
                  include_usage, int(time.time()))


def _prompt_tokens(body: dict) -> int:
    total = 0
    for message in body["messages"]:
        content = message.get("content")
        total += count_tokens(text_of(content)) + 1
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
