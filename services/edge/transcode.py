"""Between the OpenAI wire format and the canonical proto.

Request side: a validated ``ChatCompletionRequest`` becomes a ``ChatRequest``.
Response side: ``ChatEvent``s become either one ``chat.completion`` object
(``CompletionBuilder``) or SSE ``chat.completion.chunk`` frames
(``ChunkEncoder``). Tool-call arguments and logprobs are copied as the
upstream produced them, never re-serialised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from edge import conventions
from edge.openai_schema import (
    ChatCompletionContentPartFile,
    ChatCompletionContentPartImage,
    ChatCompletionContentPartInputAudio,
    ChatCompletionContentPartRefusal,
    ChatCompletionRequest,
    ThinkingBlock,
)
from switchyard.config import ApiKeySpec, RateLimitSpec
from switchyard.errors import error_envelope
from switchyard.v1 import chat_pb2 as pb

DONE = b"data: [DONE]\n\n"

# Declared request fields the proto does not type: passed through in ``extra``.
_PASSTHROUGH = ("audio", "function_call", "functions", "prediction", "web_search_options", "min_p")
_OPTIONAL_SAMPLING = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "presence_penalty",
                      "frequency_penalty", "seed", "top_logprobs", "parallel_tool_calls")

# ------------------------------------------------------------------ request --


def identity_of(key: ApiKeySpec) -> pb.Identity:
    """The key's identity and scope, for the router to apply."""
    identity = pb.Identity(key_id=key.id, tenant=key.tenant, default_model=key.default_model or "")
    if key.allowed_models is not None:
        identity.restricted = True
        identity.allowed_models.extend(key.allowed_models)
    if key.limits is not None:
        _rate_limit(identity.key_limit, key.limits)
    if key.end_user_limits is not None:
        _rate_limit(identity.end_user_limit, key.end_user_limits)
    for budget in key.budgets:
        identity.budgets.add(usd=budget.usd, period=budget.period, window_s=budget.window_s, scope=budget.per,
                             hard=budget.hard, fail_open=budget.on_store_unavailable == "open")
    if key.max_concurrent:
        identity.max_concurrent = key.max_concurrent
    if key.metadata:
        identity.tags.update(key.metadata)
    return identity


def _rate_limit(out: pb.RateLimit, spec: RateLimitSpec) -> None:
    out.rpm, out.tpm, out.fail_closed = spec.rpm or 0, spec.tpm or 0, spec.on_store_unavailable == "closed"


def to_chat_request(req: ChatCompletionRequest, *, request_id: str, identity: pb.Identity | None = None,
                    routing: pb.RoutingContext | None = None) -> pb.ChatRequest:
    """The canonical request. ``routing`` holds what the header conventions
    gave (``conventions.apply_headers``); the body's extension fields are
    applied on top of it here, once."""
    if not req.model and req.models:
        req.model = req.models[0]  # Mesh/OpenRouter: the first of `models` is the primary
    # The model may still be empty: the router takes it from a template or the key's default.
    if routing is None:
        routing = pb.RoutingContext()
    conventions.apply_body(req, routing)
    out = pb.ChatRequest(
        request_id=request_id,
        model=req.model or "",
        messages=[_message(m) for m in req.messages],
        sampling=_sampling(req),
        stream=bool(req.stream),
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
        user=req.user or "",
        routing=routing,
        identity=identity,
        metadata=req.metadata or {},
        prompt_cache_key=req.prompt_cache_key or "",
        safety_identifier=req.safety_identifier or "",
    )
    if req.tools:
        out.tools.extend(
            pb.Tool(type=t.type, function=_function_definition(t.function.name, t.function.description,
                                                               t.function.parameters, t.function.strict))
            for t in req.tools)
    if isinstance(req.tool_choice, str):
        out.tool_choice.mode = req.tool_choice
    elif req.tool_choice is not None:
        out.tool_choice.function_name = req.tool_choice.function.name
    if req.response_format is not None:
        out.response_format.CopyFrom(_response_format(req))
    if req.store is not None:
        out.store = req.store
    extra = dict(req.model_extra or {})
    for name in _PASSTHROUGH:
        value = getattr(req, name)
        if value is not None:
            extra[name] = value
    if extra:
        out.extra.update(extra)
    return out


def _function_definition(name: str, description: str | None, parameters: dict | None,
                         strict: bool | None) -> pb.FunctionDefinition:
    fn = pb.FunctionDefinition(name=name, description=description or "",
                               parameters_json=orjson.dumps(parameters).decode() if parameters is not None else "")
    if strict is not None:
        fn.strict = strict
    return fn


def _response_format(req: ChatCompletionRequest) -> pb.ResponseFormat:
    fmt = req.response_format
    out = pb.ResponseFormat(type=fmt.type)
    if fmt.type == "json_schema":
        spec = fmt.json_schema
        out.schema_name = spec.name
        out.description = spec.description or ""
        out.schema_json = orjson.dumps(spec.schema_).decode() if spec.schema_ is not None else ""
        if spec.strict is not None:
            out.strict = spec.strict
    return out


def _sampling(req: ChatCompletionRequest) -> pb.Sampling:
    out = pb.Sampling(
        n=req.n or 1,
        logprobs=bool(req.logprobs),
        reasoning_effort=req.reasoning_effort or "",
        verbosity=req.verbosity or "",
        service_tier=req.service_tier or "",
        modalities=req.modalities or (),
        logit_bias=req.logit_bias or {},
    )
    for name in _OPTIONAL_SAMPLING:
        value = getattr(req, name)
        if value is not None:
            setattr(out, name, value)
    if req.top_k is not None and req.top_k > 0:  # -1 and 0 mean "no top-k"
        out.top_k = req.top_k
    if isinstance(req.stop, str):
        out.stop.append(req.stop)
        out.stop_is_string = True
    elif req.stop:
        out.stop.extend(req.stop)
    return out


def _message(m: Any) -> pb.Message:
    out = pb.Message(role=m.role)
    content = m.content
    if isinstance(content, str):
        out.text = content
    elif content is not None:
        out.parts.SetInParent()  # an empty list is still "parts", not null
        out.parts.parts.extend(_part(p) for p in content)
    if name := getattr(m, "name", None):
        out.name = name
    if m.role == "tool":
        out.tool_call_id = m.tool_call_id
    elif m.role == "assistant":
        _assistant(m, out)
    return out


def _assistant(m: Any, out: pb.Message) -> None:
    if m.tool_calls:
        out.tool_calls.extend(
            pb.ToolCall(id=c.id, type=c.type, function=pb.FunctionCall(name=c.function.name,
                                                                        arguments=c.function.arguments),
                        signature=_thought_signature(c.extra_content))
            for c in m.tool_calls)
    if m.refusal is not None:
        out.refusal = m.refusal
    if m.reasoning_content is not None:
        out.reasoning_content = m.reasoning_content
    for block in m.thinking_blocks or ():
        if isinstance(block, ThinkingBlock):
            out.reasoning_blocks.add(text=block.thinking, signature=block.signature or "")
        else:
            out.reasoning_blocks.add(redacted_data=block.data)


def _part(p: Any) -> pb.ContentPart:
    if isinstance(p, ChatCompletionContentPartImage):
        return pb.ContentPart(image_url=pb.ImageUrl(url=p.image_url.url, detail=p.image_url.detail or ""))
    if isinstance(p, ChatCompletionContentPartInputAudio):
        return pb.ContentPart(input_audio=pb.InputAudio(data=p.input_audio.data, format=p.input_audio.format))
    if isinstance(p, ChatCompletionContentPartFile):
        f = p.file
        return pb.ContentPart(file=pb.FileInput(file_id=f.file_id or "", file_data=f.file_data or "",
                                                filename=f.filename or ""))
    if isinstance(p, ChatCompletionContentPartRefusal):
        return pb.ContentPart(refusal=p.refusal)
    return pb.ContentPart(text=p.text)


# ----------------------------------------------------------------- response --


def usage_dict(usage: pb.Usage) -> dict[str, Any]:
    """OpenAI's ``usage`` object (prompt_tokens include cache reads and writes)."""
    prompt_details = {"cached_tokens": usage.cached_tokens, "audio_tokens": usage.audio_prompt_tokens}
    if usage.cache_write_tokens:
        prompt_details["cache_write_tokens"] = usage.cache_write_tokens
    out = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens,
                                      "audio_tokens": usage.audio_completion_tokens},
    }
    if usage.estimated:  # the upstream reported no counts: these are the gateway's estimate
        out["estimated"] = True
    return out


def _thinking_blocks(blocks: Any) -> list[dict[str, str]]:
    """Signed reasoning blocks in LiteLLM's shape, which clients hand back."""
    return [{"type": "redacted_thinking", "data": b.redacted_data} if b.redacted_data
            else {"type": "thinking", "thinking": b.text, "signature": b.signature} for b in blocks]


def _thought_signature(extra_content: dict[str, Any] | None) -> str:
    google = (extra_content or {}).get("google")
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) else ""


def _extra_content(signature: str) -> dict[str, Any]:
    return {"google": {"thought_signature": signature}}


@dataclass(slots=True)
class _ToolCallState:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    signature: str = ""


@dataclass(slots=True)
class _ChoiceState:
    content: list[str] = field(default_factory=list)
    has_content: bool = False
    reasoning: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, _ToolCallState] = field(default_factory=dict)
    blocks: list[pb.ReasoningBlock] = field(default_factory=list)
    logprobs: dict[str, list[Any]] | None = None
    finish_reason: str = ""


class CompletionBuilder:
    """Accumulates chunks into one OpenAI ``chat.completion`` object."""

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        self.completion_id = completion_id
        self.created = created
        self.model = model
        self.trace: pb.DecisionTrace | None = None  # set by the handler when the router sends one
        self.extra_fields: dict[str, Any] | None = None  # Bifrost's, set by the handler
        self._choices: dict[int, _ChoiceState] = {}
        self._usage: pb.Usage | None = None
        self._fingerprint = ""

    def add_chunk(self, chunk: pb.Chunk) -> None:
        if chunk.system_fingerprint:
            self._fingerprint = chunk.system_fingerprint
        for delta in chunk.choices:
            state = self._choices.get(delta.index)
            if state is None:
                state = self._choices[delta.index] = _ChoiceState()
            if delta.has_content or delta.content:
                state.has_content = True
                state.content.append(delta.content)
            if delta.reasoning:
                state.reasoning.append(delta.reasoning)
            if delta.refusal:
                state.refusal.append(delta.refusal)
            for call in delta.tool_calls:
                self._add_tool_call(state, call)
            state.blocks.extend(delta.reasoning_blocks)
            if delta.logprobs_json:
                state.logprobs = state.logprobs or {}
                for key, items in orjson.loads(delta.logprobs_json).items():
                    if items:
                        state.logprobs.setdefault(key, []).extend(items)
            if delta.finish_reason:
                state.finish_reason = delta.finish_reason

    @staticmethod
    def _add_tool_call(state: _ChoiceState, call: pb.ToolCallDelta) -> None:
        tool = state.tool_calls.get(call.index)
        if tool is None:
            tool = state.tool_calls[call.index] = _ToolCallState()
        if call.id:
            tool.id = call.id
        if call.name:
            tool.name = call.name
        if call.arguments:
            tool.arguments.append(call.arguments)
        if call.signature:
            tool.signature = call.signature

    def set_usage(self, usage: pb.Usage) -> None:
        self._usage = usage

    @property
    def usage(self) -> pb.Usage | None:
        return self._usage

    def result(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [self._choice(index, self._choices[index]) for index in sorted(self._choices)],
            "usage": usage_dict(self._usage) if self._usage is not None else None,
            "system_fingerprint": self._fingerprint or None,
        }
        if self.trace is not None:
            body["trace"] = trace_dict(self.trace)
        if self.extra_fields is not None:
            body["extra_fields"] = self.extra_fields
        return body

    @staticmethod
    def _choice(index: int, state: _ChoiceState) -> dict[str, Any]:
        refusal = "".join(state.refusal) or None
        content = "".join(state.content) if state.has_content else None
        if content is None and not state.tool_calls and refusal is None:
            content = ""
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal, "annotations": []}
        if state.tool_calls:
            message["tool_calls"] = [_tool_call(call) for _, call in sorted(state.tool_calls.items())]
        if state.reasoning:
            message["reasoning_content"] = "".join(state.reasoning)
        if state.blocks:
            message["thinking_blocks"] = _thinking_blocks(state.blocks)
        finish = state.finish_reason or ("tool_calls" if state.tool_calls else "stop")
        return {"index": index, "message": message, "logprobs": state.logprobs, "finish_reason": finish}


def trace_dict(trace: pb.DecisionTrace) -> dict[str, Any]:
    """The decision trace (Modelux ``mlx:trace``) as JSON: never prompt text or keys."""
    out = {
        "resolved_by": trace.resolved_by,
        "template": trace.template or None,
        "routes": [{"route": "@" + r.route, "version": r.version, "strategy": r.strategy,
                    "chosen": r.chosen or None, "reason": r.reason or None} for r in trace.routes],
        "attempts": [{"provider": a.provider, "model": a.model, "route": "@" + a.route if a.route else None,
                      "outcome": a.outcome, "retry": a.retry, "backoff_ms": round(a.backoff_ms, 1),
                      "error_type": a.error_type or None, "code": a.code or None, "status": a.status or None,
                      "gate": a.gate or None, "latency_ms": round(a.latency_ms, 1)} for a in trace.attempts],
    }
    if trace.HasField("cache"):
        c = trace.cache
        out["cache"] = {"status": c.status, "reason": c.reason or None, "stored": c.stored, "key": c.key or None,
                        "ttl_s": c.ttl_s or None, "age_s": c.age_s if c.status == "hit" else None}
    return out


class ChunkEncoder:
    """SSE bytes for one streamed completion: one ``chat.completion.chunk``
    frame per choice delta. The constant head of every frame is encoded once."""

    heartbeat = b": keep-alive\n\n"  # an SSE comment while the upstream is silent

    def __init__(self, completion_id: str, created: int, model: str, *, include_usage: bool = False) -> None:
        head = orjson.dumps({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                             "model": model})
        self._prefix = b"data: " + head[:-1] + b',"choices":['
        self.include_usage = include_usage
        # With include_usage, OpenAI sends "usage": null on every chunk but the last.
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        self._started: set[int] = set()

    @staticmethod
    def start() -> bytes:
        """Nothing precedes the first chunk."""
        return b""

    @staticmethod
    def done() -> bytes:
        return DONE

    def encode(self, chunk: pb.Chunk) -> bytes:
        tail = b"]" + self._tail
        if chunk.system_fingerprint:
            tail = b'],"system_fingerprint":' + orjson.dumps(chunk.system_fingerprint) + self._tail
        prefix = self._prefix
        return b"".join([prefix + self._choice(delta) + tail for delta in chunk.choices])

    def _choice(self, d: pb.ChoiceDelta) -> bytes:
        delta: dict[str, Any] = {}
        index, content, tool_calls = d.index, d.content, d.tool_calls
        has_content = d.has_content or bool(content)
        if index not in self._started:
            self._started.add(index)
            delta["role"] = "assistant"
            delta["content"] = content if has_content else (None if tool_calls else "")
        elif has_content:
            delta["content"] = content
        if reasoning := d.reasoning:
            delta["reasoning_content"] = reasoning
        if refusal := d.refusal:
            delta["refusal"] = refusal
        if tool_calls:
            delta["tool_calls"] = [_tool_call_delta(call) for call in tool_calls]
        if blocks := d.reasoning_blocks:
            delta["thinking_blocks"] = _thinking_blocks(blocks)
        logprobs = d.logprobs_json
        finish = d.finish_reason
        return b'{"index":%d,"delta":%s,"logprobs":%s,"finish_reason":%s}' % (
            index, orjson.dumps(delta), logprobs.encode() if logprobs else b"null",
            orjson.dumps(finish) if finish else b"null")

    def encode_usage(self, usage: pb.Usage, fields: dict[str, Any] | None = None) -> bytes:
        """The last chunk when ``stream_options.include_usage`` (else nothing):
        no choices, the usage, and Bifrost's ``extra_fields`` (cost and latency
        are known only now)."""
        if not self.include_usage:
            return b""
        tail = b',"extra_fields":' + orjson.dumps(fields) if fields is not None else b""
        return self._prefix + b'],"usage":' + orjson.dumps(usage_dict(usage)) + tail + b"}\n\n"

    def encode_trace(self, trace: pb.DecisionTrace) -> bytes:
        """The decision trace (``mlx:trace``) as a choice-less chunk before ``[DONE]``."""
        return self._prefix + b'],"trace":' + orjson.dumps(trace_dict(trace)) + self._tail

    @staticmethod
    def encode_error(err: pb.Error) -> bytes:
        """An in-stream error frame (vLLM style); the caller then ends the stream."""
        return b"data: " + orjson.dumps(error_envelope(err)) + b"\n\n"


def _tool_call(call: _ToolCallState) -> dict[str, Any]:
    out: dict[str, Any] = {"id": call.id, "type": "function",
                           "function": {"name": call.name, "arguments": "".join(call.arguments)}}
    if call.signature:
        out["extra_content"] = _extra_content(call.signature)
    return out


def _tool_call_delta(call: pb.ToolCallDelta) -> dict[str, Any]:
    if call.id or call.name:
        out: dict[str, Any] = {"index": call.index, "id": call.id, "type": "function",
                               "function": {"name": call.name, "arguments": call.arguments}}
    else:
        out = {"index": call.index, "function": {"arguments": call.arguments}}
    if call.signature:
        out["extra_content"] = _extra_content(call.signature)
    return out


def error_status(err: pb.Error) -> int:
    """The HTTP status for an error before any output."""
    return err.status if 400 <= err.status <= 599 else 500


def error_body(err: pb.Error) -> bytes:
    """The OpenAI error body."""
    return orjson.dumps(error_envelope(err))


def extra_fields(started: pb.Started, latency_ms: float, usage: pb.Usage | None) -> dict[str, Any]:
    """Bifrost's ``extra_fields``: who answered, what was asked for, latency and cost."""
    fields: dict[str, Any] = {
        "provider": started.provider,
        "provider_type": started.provider_type,
        "request_type": "chat_completion",
        "model_requested": started.model_requested,
        "model_used": started.model,
        "latency": round(latency_ms),
    }
    if started.route:
        fields["route"] = "@" + started.route
        fields["route_version"] = started.route_version
    if started.arm:
        fields["arm"] = started.arm
    if usage is not None:
        fields["cost_usd"] = round(usage.cost_usd, 8)
        fields["billed_usage"] = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
    return fields
