"""Simulated Anthropic Messages API: ``POST /v1/messages``.

Follows the documented wire format: an API key (``x-api-key``, or
``Authorization: Bearer`` as the 2.x SDK sends it) and ``anthropic-version``
headers, the request checks the real API makes (required ``max_tokens``,
user/assistant roles only, non-empty content, ``tool_result`` answering the
previous turn's ``tool_use``, temperature 0..1, no unknown fields, valid
thinking signatures), the ``{"type": "error", "error": {...}}`` error body,
and the stream event sequence ``message_start``, ``content_block_start``,
``ping``, ``content_block_delta``..., ``content_block_stop``,
``message_delta``, ``message_stop``.

Like a model following instructions, it answers with a JSON object when the
system prompt asks for one, and with a schema instance for
``output_config.format``. Thinking signatures are HMACs under a per-process
key, so only blocks this simulator produced verify when handed back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from simulator.scenarios import Recorder, Script, count_tokens, parse_script, strip_directives, words_for
from simulator.schema_instances import instance_for
from simulator.streaming import Frame, send_json, send_stream

API = "anthropic"
KNOWN_FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature", "top_p",
    "top_k", "tools", "tool_choice", "thinking", "output_config", "service_tier", "container", "inference_geo",
    "speed", "cache_control", "context_management", "diagnostics", "mcp_servers",
})
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 503: "api_error", 504: "timeout_error", 529: "overloaded_error"}
# OpenAI-style finish names accepted by the ``finish`` script key.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
DEFAULT_THINKING_WORDS = 12
_SIGNING_KEY = secrets.token_bytes(32)
_JSON_OBJECT_ASKED = re.compile(r"\bJSON object\b", re.IGNORECASE)
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


class RequestError(Exception):
    """A request the real API rejects with 400 invalid_request_error."""


COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config",
                          "cache_control", "speed", "context_management", "mcp_servers"})


def add_routes(app: web.Application, recorder: Recorder) -> None:
    async def messages(request: web.Request) -> web.StreamResponse:
        return await handle_messages(request, recorder)

    async def count(request: web.Request) -> web.StreamResponse:
        return await handle_count_tokens(request, recorder)

    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count)


async def handle_count_tokens(request: web.Request, recorder: Recorder) -> web.StreamResponse:
    """``/v1/messages/count_tokens``: a Messages body without the fields that
    shape the answer (``max_tokens``, ``stream``, sampling are refused)."""
    body, _, item = await recorder.record_request(API, request)
    script = parse_script(request.headers, all_text(body) if isinstance(body, dict) else "")

    async def fail(status: int, message: str) -> web.Response:
        payload, headers = error_body(status, ERROR_TYPES.get(status, "api_error"), message)
        return await send_json(request, recorder, item, script, status, payload, headers)

    if not api_key(request):
        return await fail(401, "x-api-key header is required")
    if not request.headers.get("anthropic-version"):
        return await fail(400, "anthropic-version: header is required")
    if not isinstance(body, dict):
        return await fail(400, "There was an error parsing the body: request body must be a JSON object")
    unknown = sorted(set(body) - COUNT_FIELDS)
    if unknown:
        return await fail(400, f"{unknown[0]}: Extra inputs are not permitted")
    try:
        validate({**body, "max_tokens": 1 << 30})
    except RequestError as exc:
        return await fail(400, str(exc))
    if script.status >= 400:
        return await fail(script.status, f"Simulated {ERROR_TYPES.get(script.status, 'api_error')}")
    tools = " ".join(orjson.dumps(t).decode().replace(",", " ") for t in body.get("tools") or [])
    tokens = max(count_tokens(strip_directives(all_text(body))), 1) + count_tokens(tools)
    return await send_json(request, recorder, item, script, 200, orjson.dumps({"input_tokens": tokens}))


async def handle_messages(request: web.Request, recorder: Recorder) -> web.StreamResponse:
    body, _, item = await recorder.record_request(API, request)
    model = body.get("model") if isinstance(body, dict) and isinstance(body.get("model"), str) else None
    script = parse_script(request.headers, all_text(body) if isinstance(body, dict) else "", model)

    async def fail(status: int, message: str, error_type: str = "") -> web.Response:
        payload, headers = error_body(status, error_type or ERROR_TYPES.get(status, "api_error"), message)
        if script.retry_after is not None and status >= 400:
            headers["retry-after"] = str(script.retry_after)
        return await send_json(request, recorder, item, script, status, payload, headers)

    if not api_key(request):
        return await fail(401, "x-api-key header is required")
    if not request.headers.get("anthropic-version"):
        return await fail(400, "anthropic-version: header is required")
    if not isinstance(body, dict):
        return await fail(400, "There was an error parsing the body: request body must be a JSON object")
    try:
        turns = validate(body)
    except RequestError as exc:
        return await fail(400, str(exc))
    if script.status >= 400:
        kind = script.error_type or ERROR_TYPES.get(script.status, "api_error")
        return await fail(script.status, "Overloaded" if kind == "overloaded_error" else f"Simulated {kind}", kind)
    answer = plan_answer(body, turns, script)
    if body.get("stream"):
        error_frame = sse({"type": "error", "error": {"type": script.error_type or "overloaded_error",
                                                        "message": "Overloaded"}})
        return await send_stream(request, recorder, item, script, stream_frames(answer),
                                 malformed=b'event: content_block_delta\ndata: {"type": "content_block_delta", \n\n',
                                 error_frame=error_frame)
    return await send_json(request, recorder, item, script, 200, orjson.dumps(answer.message()),
                           {"request-id": answer.request_id})


def api_key(request: web.Request) -> str:
    """The key from ``x-api-key``, or from ``Authorization: Bearer``, which is
    how the official Python SDK (2.x) sends an API key."""
    key = request.headers.get("x-api-key", "")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return key or (token.strip() if scheme.lower() == "bearer" else "")


def error_body(status: int, error_type: str, message: str) -> tuple[bytes, dict[str, str]]:
    request_id = f"req_sim{secrets.token_hex(10)}"
    payload = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}
    return orjson.dumps(payload), {"request-id": request_id, "x-should-retry": str(status >= 429).lower()}


# --------------------------------------------------------------- validation --


def validate(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Raise RequestError as the real API would; return the turns with
    consecutive same-role messages combined (each with its first index)."""
    for key in body:
        if key not in KNOWN_FIELDS:
            raise RequestError(f"{key}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise RequestError("model: Field required")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise RequestError("max_tokens: Field required")
    if not _is_int(max_tokens) or max_tokens < 0:
        raise RequestError("max_tokens: Input should be a valid integer greater than or equal to 0")
    for name, high in (("temperature", 1), ("top_p", 1)):
        value = body.get(name)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise RequestError(f"{name}: Input should be a valid number")
        if value is not None and value > high:
            raise RequestError(f"{name}: Input should be less than or equal to {high}")
        if value is not None and value < 0:
            raise RequestError(f"{name}: Input should be greater than or equal to 0")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise RequestError("stream: Input should be a valid boolean")
    stops = body.get("stop_sequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise RequestError("stop_sequences: Input should be a valid list of strings")
    _validate_system(body.get("system"))
    _validate_tools(body)
    _validate_thinking(body, max_tokens)
    _validate_output_config(body.get("output_config"))
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or set(metadata) - {"user_id"}):
        raise RequestError("metadata: only user_id is allowed")
    turns = _combined_turns(body.get("messages"))
    _validate_tool_pairs(turns)
    _validate_thinking_history(body, turns)
    return turns


def _validate_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise RequestError("system: Input should be a valid string or list of text blocks")
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise RequestError(f"system.{i}: Input should be a text block")
        if not block["text"]:
            raise RequestError("system: text content blocks must be non-empty")


def _combined_turns(messages: Any) -> list[dict[str, Any]]:
    if messages is None:
        raise RequestError("messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages: at least one message is required")
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages.{i}: Input should be a valid dictionary")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise RequestError(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        blocks = _blocks(message.get("content"), i, role, last=i == len(messages) - 1)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks, "index": i})
    if turns[0]["role"] != "user":
        raise RequestError('messages: first message must use the "user" role')
    return turns


def _blocks(content: Any, i: int, role: str, *, last: bool) -> list[dict[str, Any]]:
    if isinstance(content, str):
        content = [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise RequestError(f"messages.{i}.content: Input should be a valid string or list of content blocks")
    if not content and not (last and role == "assistant"):
        raise RequestError(f"messages.{i}: all messages must have non-empty content except for the optional "
                           "final assistant message")
    allowed = {"user": ("text", "image", "document", "tool_result"),
               "assistant": ("text", "tool_use", "thinking", "redacted_thinking")}[role]
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        where = f"messages.{i}.content.{j}"
        if kind not in allowed:
            raise RequestError(f"{where}.type: Input tag {kind!r} does not match any of the expected tags for "
                               f"{role} messages: {', '.join(allowed)}")
        if kind == "text" and (not isinstance(block.get("text"), str) or not block["text"]):
            raise RequestError("messages: text content blocks must be non-empty")
        if kind == "image":
            _validate_image(block.get("source"), f"{where}.source")
        if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
            raise RequestError(f"{where}.tool_use_id: Field required")
        if kind == "tool_use" and not (isinstance(block.get("id"), str) and isinstance(block.get("input"), dict)):
            raise RequestError(f"{where}: tool_use blocks need an id and an object input")
    return list(content)


def _validate_image(source: Any, where: str) -> None:
    if not isinstance(source, dict):
        raise RequestError(f"{where}: Field required")
    if source.get("type") == "base64":
        if source.get("media_type") not in IMAGE_MEDIA_TYPES:
            raise RequestError(f"{where}.base64.media_type: Input should be "
                               + ", ".join(repr(t) for t in IMAGE_MEDIA_TYPES))
        if not isinstance(source.get("data"), str) or not source["data"]:
            raise RequestError(f"{where}.base64.data: Field required")
    elif source.get("type") == "url":
        if not isinstance(source.get("url"), str) or not source["url"].startswith(("http://", "https://")):
            raise RequestError(f"{where}.url.url: Input should be a valid URL")
    else:
        raise RequestError(f"{where}.type: Input tag {source.get('type')!r} does not match 'base64', 'url', 'file'")


def _validate_tool_pairs(turns: list[dict[str, Any]]) -> None:
    for k, turn in enumerate(turns):
        if turn["role"] == "assistant":
            used = [b["id"] for b in turn["content"] if b.get("type") == "tool_use"]
            if used and k + 1 < len(turns):
                answered = {b["tool_use_id"] for b in turns[k + 1]["content"] if b.get("type") == "tool_result"}
                missing = [u for u in used if u not in answered]
                if missing:
                    raise RequestError(
                        f"messages.{turn['index']}: `tool_use` ids were found without `tool_result` blocks "
                        f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a corresponding "
                        "`tool_result` block in the next message.")
            continue
        previous = turns[k - 1]["content"] if k else []
        offered = {b["id"] for b in previous if b.get("type") == "tool_use"}
        for j, block in enumerate(turn["content"]):
            if block.get("type") == "tool_result" and block["tool_use_id"] not in offered:
                raise RequestError(
                    f"messages.{turn['index']}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{block['tool_use_id']}. Each `tool_result` block must have a corresponding `tool_use` block "
                    "in the previous message.")


def _validate_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools", [])
    if not isinstance(tools, list):
        raise RequestError("tools: Input should be a valid list")
    names = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise RequestError(f"tools.{i}: Input should be a valid dictionary")
        if tool.get("type") not in (None, "custom"):
            continue  # server tools carry their own versioned type
        if not isinstance(tool.get("name"), str) or not _TOOL_NAME.match(tool["name"]):
            raise RequestError(f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise RequestError(f"tools.{i}.custom.input_schema.type: Input should be 'object'")
        names.append(tool["name"])
    choice = body.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise RequestError("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if choice["type"] == "tool" and choice.get("name") not in names:
        raise RequestError(f"tool_choice: Tool '{choice.get('name')}' not found in provided tools")


def _validate_thinking(body: dict[str, Any], max_tokens: int) -> None:
    thinking = body.get("thinking")
    if thinking is None:
        return
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled", "adaptive"):
        raise RequestError("thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'")
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if not _is_int(budget):
            raise RequestError("thinking.enabled.budget_tokens: Field required")
        if budget < 1024:
            raise RequestError("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
        if max_tokens <= budget:
            raise RequestError("`max_tokens` must be greater than `thinking.budget_tokens`")
    if thinking_on(body) and (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
        raise RequestError("Thinking may not be enabled when tool_choice forces tool use.")


def _validate_output_config(config: Any) -> None:
    if config is None:
        return
    if not isinstance(config, dict) or set(config) - {"effort", "format"}:
        raise RequestError("output_config: only effort and format are allowed")
    if config.get("effort") not in (None, "low", "medium", "high", "xhigh", "max"):
        raise RequestError("output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'")
    fmt = config.get("format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "json_schema"
                            or not isinstance(fmt.get("schema"), dict)):
        raise RequestError("output_config.format: expected {type: 'json_schema', schema: {...}}")


def _validate_thinking_history(body: dict[str, Any], turns: list[dict[str, Any]]) -> None:
    for turn in turns:
        for j, block in enumerate(turn["content"]):
            if block.get("type") == "thinking" and not verify_signature(str(block.get("thinking", "")),
                                                                       str(block.get("signature", ""))):
                raise RequestError(f"messages.{turn['index']}.content.{j}: Invalid `signature` in `thinking` block")
    if not thinking_on(body) or len(turns) < 2 or not _has_tool_results(turns[-1]):
        return
    previous = turns[-2]
    if previous["content"] and previous["content"][0].get("type") not in ("thinking", "redacted_thinking"):
        raise RequestError(
            f"messages.{previous['index']}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
            f"`{previous['content'][0].get('type')}`. When `thinking` is enabled, a final `assistant` message must "
            "start with a thinking block.")


# ------------------------------------------------------------------ answers --


@dataclass
class Answer:
    model: str
    thinking: str = ""
    text: str | None = None
    tool_calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    message_id: str = field(default_factory=lambda: f"msg_sim{secrets.token_hex(10)}")
    request_id: str = field(default_factory=lambda: f"req_sim{secrets.token_hex(10)}")

    def blocks(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.thinking:
            out.append({"type": "thinking", "thinking": self.thinking, "signature": sign(self.thinking)})
        if self.text is not None:
            out.append({"type": "text", "text": self.text})
        out.extend({"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in self.tool_calls)
        return out

    def usage(self) -> dict[str, Any]:
        usage: dict[str, Any] = {"input_tokens": self.input_tokens, "cache_creation_input_tokens": 0,
                                 "cache_read_input_tokens": 0, "output_tokens": self.output_tokens}
        if self.thinking_tokens:
            usage["output_tokens_details"] = {"thinking_tokens": self.thinking_tokens}
        return usage

    def message(self) -> dict[str, Any]:
        return {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                "content": self.blocks(), "stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence,
                "usage": {**self.usage(), "service_tier": "standard"}}


def plan_answer(body: dict[str, Any], turns: list[dict[str, Any]], script: Script) -> Answer:
    """What the simulated model says: thinking, then tool calls or text."""
    model = body["model"]
    answer = Answer(model=model, input_tokens=max(count_tokens(strip_directives(all_text(body))), 1))
    last = turns[-1] if turns[-1]["role"] == "user" else {"content": []}
    prompt = " ".join(b["text"] for b in last["content"] if b.get("type") == "text")
    budget = body["max_tokens"]
    if thinking_on(body) or script.reasoning:
        count = script.reasoning or DEFAULT_THINKING_WORDS
        answer.thinking = " ".join(_cycle(f"Considering the request: {strip_directives(prompt)}".split(), count))
        answer.thinking_tokens = count
        budget = max(budget - count, 0)
    calls = tools_to_call(body, last, prompt)
    if calls:
        answer.tool_calls = [(f"toolu_sim{secrets.token_hex(10)}", tool["name"],
                              instance_for(tool.get("input_schema") or {})) for tool in calls]
        answer.stop_reason = "tool_use"
    else:
        _write_text(answer, body, script, _tool_results_text(last) or prompt, budget)
    tool_tokens = sum(count_tokens(orjson.dumps(args).decode()) for _, _, args in answer.tool_calls)
    answer.output_tokens = answer.thinking_tokens + count_tokens(answer.text or "") + tool_tokens
    if script.finish:
        answer.stop_reason = STOP_REASONS.get(script.finish, script.finish)
    return answer


def _write_text(answer: Answer, body: dict[str, Any], script: Script, prompt: str, budget: int) -> None:
    fmt = (body.get("output_config") or {}).get("format")
    if fmt:
        words = orjson.dumps(instance_for(fmt["schema"])).decode().split(" ")
    elif _JSON_OBJECT_ASKED.search(system_text(body)) and not script.disobey:
        plain, _ = words_for(prompt, answer.model, script.tokens, None)
        words = orjson.dumps({"answer": " ".join(plain)}).decode().split(" ")
    else:
        words, _ = words_for(prompt, answer.model, script.tokens, None)
    text = " ".join(words[:budget])
    if len(words) > budget:
        answer.stop_reason = "max_tokens"
    cut = min(((text.find(s), s) for s in body.get("stop_sequences", []) if s and s in text), default=None)
    if cut is not None:
        text = text[:cut[0]]
        answer.stop_reason, answer.stop_sequence = "stop_sequence", cut[1]
    answer.text = text


def tools_to_call(body: dict[str, Any], last: dict[str, Any], prompt: str) -> list[dict[str, Any]]:
    tools = [t for t in body.get("tools", []) if t.get("type") in (None, "custom")]
    choice = body.get("tool_choice") or {"type": "auto"}
    if not tools or choice["type"] == "none":
        return []
    if choice["type"] == "tool":
        return [t for t in tools if t["name"] == choice["name"]][:1]
    if _has_tool_results(last) and choice["type"] != "any":
        return []
    mentioned = [t for t in tools if re.search(rf"(?<![\w-]){re.escape(t['name'])}(?![\w-])", prompt)]
    if choice["type"] == "any" and not mentioned:
        mentioned = tools[:1]
    return mentioned[:1] if choice.get("disable_parallel_tool_use") else mentioned


# ---------------------------------------------------------------- streaming --


def stream_frames(answer: Answer) -> list[Frame]:
    start = {**answer.message(), "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**answer.usage(), "output_tokens": 1}}
    start["usage"].pop("output_tokens_details", None)
    frames = [Frame(sse({"type": "message_start", "message": start}))]
    blocks = answer.blocks()
    if not blocks:
        frames.append(Frame(sse({"type": "ping"})))
    for index, block in enumerate(blocks):
        block_frames = _block_frames(index, block)
        if index == 0:
            block_frames.insert(1, Frame(sse({"type": "ping"})))  # the API pings after the first block opens
        frames.extend(block_frames)
    frames.append(Frame(sse({"type": "message_delta",
                             "delta": {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence},
                             "usage": answer.usage()})))
    frames.append(Frame(sse({"type": "message_stop"})))
    return frames


def _block_frames(index: int, block: dict[str, Any]) -> list[Frame]:
    kind = block["type"]
    if kind == "thinking":
        opening = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": piece} for piece in _pieces(block["thinking"])]
    elif kind == "text":
        opening = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(block["text"])]
    else:
        opening = {**block, "input": {}}
        arguments = orjson.dumps(block["input"]).decode()
        deltas = [{"type": "input_json_delta", "partial_json": arguments[k:k + 12]}
                  for k in range(0, len(arguments), 12)]
        deltas.insert(0, {"type": "input_json_delta", "partial_json": ""})
    frames = [Frame(sse({"type": "content_block_start", "index": index, "content_block": opening}))]
    frames.extend(Frame(sse({"type": "content_block_delta", "index": index, "delta": d}), content=True)
                  for d in deltas)
    if kind == "thinking":
        frames.append(Frame(sse({"type": "content_block_delta", "index": index,
                                 "delta": {"type": "signature_delta", "signature": block["signature"]}})))
    frames.append(Frame(sse({"type": "content_block_stop", "index": index})))
    return frames


def sse(payload: dict[str, Any]) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


# ------------------------------------------------------------------ helpers --


def sign(thinking: str) -> str:
    mac = hmac.new(_SIGNING_KEY, thinking.encode(), hashlib.sha256).digest()
    return base64.b64encode(b"simsig1" + mac).decode()


def verify_signature(thinking: str, signature: str) -> bool:
    return hmac.compare_digest(sign(thinking), signature)


def thinking_on(body: dict[str, Any]) -> bool:
    return (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")


def system_text(body: dict[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, str):
        return system
    return " ".join(b.get("text", "") for b in system or [] if isinstance(b, dict))


def all_text(body: dict[str, Any]) -> str:
    """Every text the model reads: system, message text and tool results."""
    parts = [system_text(body)]
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif isinstance(block, dict) and block.get("type") == "tool_result":
                parts.append(_result_text(block))
    return " ".join(p for p in parts if p)


def _has_tool_results(turn: dict[str, Any]) -> bool:
    return any(b.get("type") == "tool_result" for b in turn.get("content", []))


def _tool_results_text(turn: dict[str, Any]) -> str:
    return " ".join(_result_text(b) for b in turn["content"] if b.get("type") == "tool_result")


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content", "")
    if isinstance(content, str):
        return content
    return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")


def _pieces(text: str) -> list[str]:
    """Word-sized pieces that join back to exactly ``text``."""
    return re.findall(r"\S+\s*|\s+", text)


def _cycle(words: list[str], count: int) -> list[str]:
    return (words * (count // max(len(words), 1) + 1))[:count]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
