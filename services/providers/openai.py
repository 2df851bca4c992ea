"""OpenAI Chat Completions.

The canonical request is OpenAI-shaped, so the mapping is near one-to-one;
the work here is doing it without loss: JSON schemas embedded as the client
wrote them, ``stop`` as a string or a list as it came, only the fields that
were set, and streams and errors mapped faithfully. ``openai_compat.py``
subclasses this for servers that speak the same wire format with extras.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, ClassVar

import orjson

from providers import timing
from providers.base import (
    Capabilities,
    Embeddings,
    SSEEvent,
    Translator,
    UpstreamProtocolError,
    UpstreamRequest,
    UpstreamStreamError,
    UpstreamTruncatedError,
)
from providers.errors import BILLING, CONTENT_FILTER, INVALID, class_for_status, retry_after_ms, upstream_error
from providers.openai_embed import embed_body, parse_embeddings
from providers.sanitize import log_upstream_text
from switchyard.errors import InvalidRequestError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb
from switchyard.v1 import provider_pb2 as ppb

# Models that refuse max_tokens and take max_completion_tokens instead.
_COMPLETION_TOKENS_ONLY = re.compile(r"^(o\d|gpt-5)")
_FINISH_REASONS = {"function_call": "tool_calls"}
_FILTER_CODES = ("content_filter", "content_policy_violation")
_SAMPLING_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "top_logprobs",
                    "max_completion_tokens", "parallel_tool_calls")


class OpenAITranslator(Translator):
    """api.openai.com: strict about fields OpenAI does not define."""

    type = "openai"
    capabilities = Capabilities(n=True, json_schema=True)
    # Delta/message fields that carry reasoning text (OpenAI returns none).
    reasoning_fields: ClassVar[tuple[str, ...]] = ()
    # Whether assistant history keeps its ``reasoning_content``.
    keeps_reasoning_history: ClassVar[bool] = False
    # Whether embeddings may be asked for as base64 (float32 bytes, no float parsing).
    base64_embeddings: ClassVar[bool] = True

    # ------------------------------------------------------------ request --

    def build_request(self, request: pb.ChatRequest, model: str, *, stream: bool) -> UpstreamRequest:
        body: dict[str, Any] = {"model": model, "messages": [self._message(m) for m in request.messages]}
        if request.tools:
            body["tools"] = [_tool(t, i) for i, t in enumerate(request.tools)]
        choice = _tool_choice(request.tool_choice)
        if choice is not None:
            body["tool_choice"] = choice
        if request.response_format.type:
            body["response_format"] = _response_format(request.response_format)
        self._sampling(request.sampling, model, body)
        if request.user:
            body["user"] = request.user
        if request.metadata:
            body["metadata"] = dict(request.metadata)
        if request.HasField("store"):
            body["store"] = request.store
        if request.prompt_cache_key:
            body["prompt_cache_key"] = request.prompt_cache_key
        if request.safety_identifier:
            body["safety_identifier"] = request.safety_identifier
        if request.extra.fields:
            self._merge_extra(request, body)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}  # always: usage is metered
        headers = {"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        url = f"{self.spec.base_url.rstrip('/')}/chat/completions"
        return UpstreamRequest("POST", url, headers, orjson.dumps(body))

    def _message(self, message: pb.Message) -> dict[str, Any]:
        out: dict[str, Any] = {"role": message.role}
        kind = message.WhichOneof("content")
        if kind == "text":
            out["content"] = message.text
        elif kind == "parts":
            out["content"] = [_part(p) for p in message.parts.parts]
        else:
            out["content"] = None
        if message.name:
            out["name"] = message.name
        if message.tool_calls:
            out["tool_calls"] = [{"id": c.id, "type": c.type or "function",
                                  "function": {"name": c.function.name, "arguments": c.function.arguments}}
                                 for c in message.tool_calls]
        if message.tool_call_id:
            out["tool_call_id"] = message.tool_call_id
        if message.HasField("refusal"):
            out["refusal"] = message.refusal
        if self.keeps_reasoning_history and message.HasField("reasoning_content"):
            out["reasoning_content"] = message.reasoning_content
        return out

    def _sampling(self, sampling: pb.Sampling, model: str, body: dict[str, Any]) -> None:
        for name in _SAMPLING_FIELDS:
            if sampling.HasField(name):
                body[name] = getattr(sampling, name)
        if sampling.HasField("max_tokens"):
            key = self._max_tokens_field(model)
            body.setdefault(key, sampling.max_tokens)
        if sampling.n > 1:
            body["n"] = sampling.n
        if sampling.stop:
            body["stop"] = sampling.stop[0] if sampling.stop_is_string and len(sampling.stop) == 1 \
                else list(sampling.stop)
        if sampling.logit_bias:
            body["logit_bias"] = {k: int(v) if v.is_integer() else v for k, v in sampling.logit_bias.items()}
        if sampling.logprobs:
            body["logprobs"] = True
        if sampling.reasoning_effort:
            body["reasoning_effort"] = sampling.reasoning_effort
        if sampling.verbosity:
            body["verbosity"] = sampling.verbosity
        if sampling.service_tier:
            body["service_tier"] = sampling.service_tier
        if sampling.modalities:
            body["modalities"] = list(sampling.modalities)
        if sampling.HasField("top_k"):
            self._set_top_k(sampling.top_k, body)

    def _max_tokens_field(self, model: str) -> str:
        """Reasoning models reject ``max_tokens``; the limit means the same."""
        return "max_completion_tokens" if _COMPLETION_TOKENS_ONLY.match(model) else "max_tokens"

    def _set_top_k(self, value: int, body: dict[str, Any]) -> None:
        raise InvalidRequestError(f"top_k is not supported by provider {self.provider} ({self.type})", param="top_k")

    def _merge_extra(self, request: pb.ChatRequest, body: dict[str, Any]) -> None:
        field = sorted(request.extra.fields)[0]
        raise InvalidRequestError(f"{field} is not supported by provider {self.provider} ({self.type})", param=field)

    def build_embed_request(self, request: epb.EmbedRequest, model: str) -> UpstreamRequest:
        body = embed_body(request, model, as_base64=self.base64_embeddings)
        if request.extra.fields:
            self._merge_extra(request, body)
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return UpstreamRequest("POST", f"{self.spec.base_url.rstrip('/')}/embeddings", headers, orjson.dumps(body))

    def parse_embed_response(self, body: bytes, request: epb.EmbedRequest) -> Embeddings:
        return parse_embeddings(body, request, self._stream_error)

    # ----------------------------------------------------------- response --

    def parse_response(self, body: bytes, model: str) -> Iterable[ppb.GenerateEvent]:
        data = _loads(body)
        if data.get("error") is not None:
            raise UpstreamStreamError(self._stream_error(data["error"]))
        timing.note_answer(data.get("id"), data.get("model"))
        choices = data.get("choices")
        if not isinstance(choices, list):
            raise UpstreamProtocolError("the answer has no choices")
        try:
            chunk = pb.Chunk(system_fingerprint=data.get("system_fingerprint") or "")
            for choice in choices:
                chunk.choices.append(self._whole_choice(choice))
            usage = _usage(data.get("usage"))
        except (TypeError, AttributeError, ValueError):
            raise UpstreamProtocolError("the answer has an unexpected shape") from None
        return [ppb.GenerateEvent(chunk=chunk), ppb.GenerateEvent(usage=usage)]

    def _whole_choice(self, choice: dict[str, Any]) -> pb.ChoiceDelta:
        message = choice.get("message") or {}
        out = pb.ChoiceDelta(index=choice.get("index") or 0, role="assistant",
                             finish_reason=_finish(choice.get("finish_reason")))
        content = message.get("content")
        if content is not None:
            out.content = content
            out.has_content = True
        for key in self.reasoning_fields:
            if message.get(key):
                out.reasoning = message[key]
                break
        for position, call in enumerate(message.get("tool_calls") or []):
            function = call.get("function") or {}
            arguments = function.get("arguments")
            if not isinstance(arguments, str):
                arguments = orjson.dumps(arguments).decode() if arguments is not None else ""
            out.tool_calls.add(index=position, id=call.get("id") or "", name=function.get("name") or "",
                               arguments=arguments)
        if message.get("refusal"):
            out.refusal = message["refusal"]
        if choice.get("logprobs") is not None:
            out.logprobs_json = orjson.dumps(choice["logprobs"]).decode()
        return out

    async def stream_events(self, events: AsyncIterator[SSEEvent], model: str) -> AsyncIterator[ppb.GenerateEvent]:
        usage: pb.Usage | None = None
        started: set[int] = set()              # choices whose role delta was sent
        calls_seen: set[tuple[int, int]] = set()  # (choice, call index) already named
        named = False  # the answer's id and model noted (from the first chunk)
        async for event in events:
            data = event.data
            if data == "[DONE]":
                yield ppb.GenerateEvent(usage=usage or pb.Usage())
                return
            if not data:
                continue
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise UpstreamProtocolError("a chunk is not JSON") from None
            if not isinstance(payload, dict):
                raise UpstreamProtocolError("a chunk is not a JSON object")
            if payload.get("error") is not None:
                raise UpstreamStreamError(self._stream_error(payload["error"]))
            if not named:
                named = timing.note_answer(payload.get("id"), payload.get("model"))
            try:
                chunk = self._chunk(payload.get("choices") or (), payload.get("system_fingerprint"), started,
                                    calls_seen)
                if payload.get("usage"):
                    usage = _usage(payload["usage"])
            except (TypeError, AttributeError, ValueError):
                raise UpstreamProtocolError("a chunk has an unexpected shape") from None
            if chunk is not None:
                yield ppb.GenerateEvent(chunk=chunk)
        raise UpstreamTruncatedError(f"{self.provider} ended its stream without [DONE]")

    def _chunk(self, choices: Iterable[dict[str, Any]], fingerprint: str | None, started: set[int],
               calls_seen: set[tuple[int, int]]) -> pb.Chunk | None:
        chunk: pb.Chunk | None = None
        for choice in choices:
            delta = self._delta(choice, started, calls_seen)
            if delta is not None:
                if chunk is None:
                    chunk = pb.Chunk(system_fingerprint=fingerprint or "")
                chunk.choices.append(delta)
        return chunk

    def _delta(self, choice: dict[str, Any], started: set[int],
               calls_seen: set[tuple[int, int]]) -> pb.ChoiceDelta | None:
        """One upstream choice delta, or None when it carries nothing."""
        index = choice.get("index") or 0
        raw = choice.get("delta") or {}
        out = pb.ChoiceDelta(index=index)
        keep = False
        if index not in started:
            started.add(index)
            out.role = "assistant"
            keep = True
        content = raw.get("content")
        if content is not None:
            out.content = content
            out.has_content = True
            keep = keep or content != ""
        for key in self.reasoning_fields:
            if raw.get(key):
                out.reasoning = raw[key]
                keep = True
                break
        for position, call in enumerate(raw.get("tool_calls") or ()):
            function = call.get("function") or {}
            number = call.get("index")
            if number is None:
                number = position
            item = out.tool_calls.add(index=number, arguments=function.get("arguments") or "")
            if (index, number) not in calls_seen:
                calls_seen.add((index, number))
                item.id = call.get("id") or ""
                item.name = function.get("name") or ""
            keep = True
        if raw.get("refusal"):
            out.refusal = raw["refusal"]
            keep = True
        if choice.get("finish_reason"):
            out.finish_reason = _finish(choice["finish_reason"])
            keep = True
        if choice.get("logprobs"):
            out.logprobs_json = orjson.dumps(choice["logprobs"]).decode()
            keep = True
        return out if keep else None

    # ------------------------------------------------------------- errors --

    def map_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> pb.Error:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = body[:300].decode("utf-8", "replace").strip()
        error = data.get("error", data) if isinstance(data, dict) else data
        message, kind, code, param = _error_fields(error)
        return self._error(status, message, kind, code, param, retry_after_ms(headers))

    def _stream_error(self, error: Any) -> pb.Error:
        """An in-band error; its ``code`` may be an HTTP status (vLLM)."""
        message, kind, code, param = _error_fields(error)
        log_upstream_text(self.provider, 200, message)
        raw_code = error.get("code") if isinstance(error, dict) else None
        if isinstance(raw_code, int) and 400 <= raw_code < 600:
            status = raw_code
        elif kind == "invalid_request_error":
            status = 400
        elif "rate_limit" in kind or "rate_limit" in code:
            status = 429
        else:
            status = 500
        return self._error(status, message, kind, code, param, 0)

    def _error(self, status: int, message: str, kind: str, code: str, param: str, retry_ms: int) -> pb.Error:
        """OpenAI's differences from the shared table: ``insufficient_quota``
        (a 429) is the gateway's account out of credit; content-filter refusals."""
        rule = None
        if code == "insufficient_quota" or kind == "insufficient_quota":
            rule = BILLING
        elif (code in _FILTER_CODES or "content management policy" in message) and \
                class_for_status(status) is INVALID:
            rule = CONTENT_FILTER
        return upstream_error(self.provider, status, message, kind=rule, code=code, param=param,
                              retry_after_ms=retry_ms, secrets=(self.api_key,))


# ---------------------------------------------------------------- helpers --


def _part(part: pb.ContentPart) -> dict[str, Any]:
    kind = part.WhichOneof("part")
    if kind == "text":
        return {"type": "text", "text": part.text}
    if kind == "image_url":
        image: dict[str, str] = {"url": part.image_url.url}
        if part.image_url.detail:
            image["detail"] = part.image_url.detail
        return {"type": "image_url", "image_url": image}
    if kind == "input_audio":
        return {"type": "input_audio", "input_audio": {"data": part.input_audio.data,
                                                       "format": part.input_audio.format}}
    if kind == "file":
        f = part.file
        if f.url:
            raise InvalidRequestError("documents by URL are supported only by Anthropic upstreams; send the file "
                                      "as file_data", param="messages")
        return {"type": "file", "file": {k: v for k, v in (("file_id", f.file_id), ("file_data", f.file_data),
                                                           ("filename", f.filename)) if v}}
    return {"type": "refusal", "refusal": part.refusal}


def _raw_json(text: str, param: str) -> Any:
    """Client JSON embedded as written (orjson keeps integers, key order)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidRequestError(f"{param} is not valid JSON", param=param) from None


def _tool(tool: pb.Tool, position: int) -> dict[str, Any]:
    spec = tool.function
    function: dict[str, Any] = {"name": spec.name}
    if spec.description:
        function["description"] = spec.description
    if spec.parameters_json:
        function["parameters"] = _raw_json(spec.parameters_json, f"tools[{position}].function.parameters")
    if spec.HasField("strict"):
        function["strict"] = spec.strict
    return {"type": tool.type or "function", "function": function}


def _tool_choice(choice: pb.ToolChoice) -> str | dict[str, Any] | None:
    kind = choice.WhichOneof("choice")
    if kind == "mode":
        return choice.mode
    if kind == "function_name":
        return {"type": "function", "function": {"name": choice.function_name}}
    return None


def _response_format(fmt: pb.ResponseFormat) -> dict[str, Any]:
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    spec: dict[str, Any] = {"name": fmt.schema_name or "response"}
    if fmt.description:
        spec["description"] = fmt.description
    if fmt.schema_json:
        spec["schema"] = _raw_json(fmt.schema_json, "response_format.json_schema.schema")
    if fmt.HasField("strict"):
        spec["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": spec}


def _loads(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError("the answer is not JSON") from None
    if not isinstance(data, dict):
        raise UpstreamProtocolError("the answer is not a JSON object")
    return data


def _finish(reason: str | None) -> str:
    return _FINISH_REASONS.get(reason, reason) if reason else ""


def _usage(raw: Any) -> pb.Usage:
    if not isinstance(raw, dict):
        return pb.Usage()
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    prompt = raw.get("prompt_tokens") or 0
    completion = raw.get("completion_tokens") or 0
    return pb.Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=raw.get("total_tokens") or prompt + completion,
        # DeepSeek-style servers report cache hits at the top level.
        cached_tokens=prompt_details.get("cached_tokens") or raw.get("prompt_cache_hit_tokens") or 0,
        cache_write_tokens=prompt_details.get("cache_write_tokens") or 0,
        reasoning_tokens=completion_details.get("reasoning_tokens") or 0,
        audio_prompt_tokens=prompt_details.get("audio_tokens") or 0,
        audio_completion_tokens=completion_details.get("audio_tokens") or 0,
    )


def _error_fields(error: Any) -> tuple[str, str, str, str]:
    """(message, type, code, param) from the error shapes OpenAI-style servers
    send: ``{"error": {...}}``, vLLM's integer codes, a bare string,
    FastAPI's ``{"detail": ...}``."""
    if isinstance(error, str):
        return error, "", "", ""
    if not isinstance(error, dict):
        return "", "", "", ""
    message = error.get("message") or error.get("detail") or ""
    if not isinstance(message, str):
        message = orjson.dumps(message).decode()
    code, param = error.get("code"), error.get("param")
    return (message, str(error.get("type") or ""), code if isinstance(code, str) else "",
            param if isinstance(param, str) else "")
