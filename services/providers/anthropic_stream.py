"""Anthropic Messages response mapping: a whole message or the streamed
event sequence as canonical GenerateEvents."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from providers.base import (
    UpstreamProtocolError,
    UpstreamStreamError,
)
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb

FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
                  "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}


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
    delta.stop_reason = str(message.get("stop_reason") or "")
    delta.stop_sequence = str(message.get("stop_sequence") or "")
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

    def __init__(self, stream_error: Callable[[dict[str, Any]], pb.Error]) -> None:
        self.stream_error = stream_error
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
            delta = payload.get("delta") or {}
            stop_reason = delta.get("stop_reason")
            if stop_reason:
                return [self._emit(finish_reason=finish_reason(stop_reason), stop_reason=str(stop_reason),
                                   stop_sequence=str(delta.get("stop_sequence") or ""))]
        elif kind == "message_stop":
            self.stopped = True
            return [ppb.GenerateEvent(usage=usage_from(self.usage))]
        elif kind == "error":
            raise UpstreamStreamError(self.stream_error(payload))
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




def load_json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError(f"Anthropic sent invalid JSON: {exc}") from None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
