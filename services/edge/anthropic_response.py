"""Canonical events → Anthropic Messages JSON or SSE.

The stream follows the documented sequence: ``message_start``, ``ping``, then
per content block ``content_block_start``, its deltas (``text_delta``,
``thinking_delta`` + ``signature_delta``, ``input_json_delta``) and
``content_block_stop``; then ``message_delta`` (stop reason, usage) and
``message_stop``. A failure after the start ends the stream with an
``error`` event. Blocks open in the order the upstream produced them, so
interleaved thinking and tool use keep their order.

Usage follows Anthropic's convention: ``input_tokens`` excludes cache reads
and writes, which are reported apart. Token counts are known only at the end,
so ``message_start`` carries zeros and ``message_delta`` the totals (the SDKs
take the totals from there).
"""

from __future__ import annotations

from typing import Any

import orjson

from switchyard.errors import SwitchyardError
from switchyard.v1 import chat_pb2 as pb

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal",
                "function_call": "tool_use"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 408: "timeout_error", 413: "request_too_large",
               429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error"}
_OVERLOADED_CODES = frozenset({"overloaded", "upstream_overloaded"})


class UnrenderableAnswerError(SwitchyardError):
    """The upstream's answer has no Anthropic form (tool arguments that are not a JSON object)."""

    status = 502
    type = "api_error"
    code = "upstream_invalid_tool_arguments"


def error_type(err: pb.Error) -> str:
    if err.code in _OVERLOADED_CODES:
        return "overloaded_error"
    return ERROR_TYPES.get(err.status, "api_error")


def error_object(err: pb.Error) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(err), "message": err.message or "error"}}


def error_body(err: pb.Error) -> bytes:
    return orjson.dumps(error_object(err))


def usage_dict(usage: pb.Usage | None) -> dict[str, Any]:
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    fresh = max(usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens, 0)
    out: dict[str, Any] = {"input_tokens": fresh, "output_tokens": usage.completion_tokens,
                           "cache_creation_input_tokens": usage.cache_write_tokens,
                           "cache_read_input_tokens": usage.cached_tokens}
    if usage.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return out


class _Stop:
    """Why the answer ended, in Anthropic's words."""

    __slots__ = ("reason", "sequence")

    def __init__(self) -> None:
        self.reason = ""
        self.sequence = ""

    def see(self, delta: pb.ChoiceDelta) -> None:
        if delta.stop_reason:  # an Anthropic upstream said it itself
            self.reason, self.sequence = delta.stop_reason, delta.stop_sequence
        elif delta.finish_reason:
            self.reason = STOP_REASONS.get(delta.finish_reason, "end_turn")

    def fields(self, has_tools: bool) -> dict[str, Any]:
        return {"stop_reason": self.reason or ("tool_use" if has_tools else "end_turn"),
                "stop_sequence": self.sequence or None}


def _covered(delta: pb.ChoiceDelta) -> bool:
    """Whether the delta's reasoning text is the text of its signed blocks
    (a whole non-streamed answer carries both): then the blocks alone count."""
    if not delta.reasoning or not delta.reasoning_blocks:
        return False
    return "".join(b.text for b in delta.reasoning_blocks if not b.redacted_data) == delta.reasoning


class Blocks:
    """The content blocks of one answer as they form. ``feed`` returns the
    block operations a delta caused: ("start", index, block), ("delta",
    index, change), ("stop", index, None). With ``keep`` the blocks' text is
    kept for a whole message; a stream keeps only what it needs to decide
    where the next fragment goes."""

    def __init__(self, *, keep: bool) -> None:
        self.keep = keep
        self.kinds: list[str] = []  # block type by index
        self._fragments: dict[int, list[str]] = {}  # block index -> text/thinking/argument fragments (keep only)
        self._blocks: dict[int, dict[str, Any]] = {}  # block index -> the block as started (keep only)
        self._open: int | None = None
        self._open_chars = 0  # thinking characters in the open block
        self._tools: dict[int, int] = {}  # canonical tool index -> block index
        self.stop = _Stop()

    def feed(self, delta: pb.ChoiceDelta) -> list[tuple[str, int, Any]]:
        ops: list[tuple[str, int, Any]] = []
        if delta.reasoning and not _covered(delta):
            self._append(ops, "thinking", delta.reasoning)
        for block in delta.reasoning_blocks:
            self._reasoning_block(ops, block)
        if delta.content:
            self._append(ops, "text", delta.content)
        if delta.refusal:
            self._append(ops, "text", delta.refusal)
        for call in delta.tool_calls:
            self._tool_call(ops, call)
        if delta.finish_reason or delta.stop_reason:
            self.stop.see(delta)
            self.close(ops)
        return ops

    def close(self, ops: list[tuple[str, int, Any]]) -> None:
        if self._open is not None:
            ops.append(("stop", self._open, None))
            self._open = None

    def _start(self, ops: list[tuple[str, int, Any]], block: dict[str, Any]) -> int:
        self.close(ops)
        index = len(self.kinds)
        self.kinds.append(block["type"])
        if self.keep:
            self._blocks[index] = block
            self._fragments[index] = []
        self._open = index
        self._open_chars = 0
        ops.append(("start", index, block))
        return index

    def _change(self, ops: list[tuple[str, int, Any]], index: int, change: dict[str, Any], text: str) -> None:
        if self.keep:
            self._fragments[index].append(text)
        ops.append(("delta", index, change))

    def _append(self, ops: list[tuple[str, int, Any]], kind: str, text: str) -> None:
        index = self._open
        if index is None or self.kinds[index] != kind:
            index = self._start(ops, {"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking"
                                else {"type": "text", "text": ""})
        if kind == "thinking":
            self._open_chars += len(text)
            self._change(ops, index, {"type": "thinking_delta", "thinking": text}, text)
        else:
            self._change(ops, index, {"type": "text_delta", "text": text}, text)

    def _reasoning_block(self, ops: list[tuple[str, int, Any]], rb: pb.ReasoningBlock) -> None:
        if rb.redacted_data:
            self._start(ops, {"type": "redacted_thinking", "data": rb.redacted_data})
            self.close(ops)
            return
        index = self._open
        # The signed block closes the thinking streamed so far, when it is that text.
        if index is None or self.kinds[index] != "thinking" or self._open_chars != len(rb.text):
            index = self._start(ops, {"type": "thinking", "thinking": "", "signature": ""})
            if rb.text:
                self._change(ops, index, {"type": "thinking_delta", "thinking": rb.text}, rb.text)
        if rb.signature:
            if self.keep:
                self._blocks[index]["signature"] = rb.signature
            ops.append(("delta", index, {"type": "signature_delta", "signature": rb.signature}))
        self.close(ops)

    def _tool_call(self, ops: list[tuple[str, int, Any]], call: pb.ToolCallDelta) -> None:
        index = self._tools.get(call.index)
        if index is None or call.id:
            index = self._start(ops, {"type": "tool_use", "id": call.id, "name": call.name, "input": {}})
            self._tools[call.index] = index
        if call.arguments:
            self._change(ops, index, {"type": "input_json_delta", "partial_json": call.arguments}, call.arguments)

    def has_tools(self) -> bool:
        return bool(self._tools)

    def content(self) -> list[dict[str, Any]]:
        """The whole blocks (``keep`` only)."""
        out = []
        for index, kind in enumerate(self.kinds):
            block = dict(self._blocks[index])
            joined = "".join(self._fragments[index])
            if kind == "text":
                block["text"] = joined
            elif kind == "thinking":
                block["thinking"] = joined
            elif kind == "tool_use":
                try:
                    value = orjson.loads(joined) if joined.strip() else {}
                except orjson.JSONDecodeError:
                    value = None
                if not isinstance(value, dict):
                    raise UnrenderableAnswerError("the upstream produced tool call arguments that are not a JSON "
                                                  "object, which Anthropic's tool_use input must be")
                block["input"] = value
            out.append(block)
        return out


def _message_head(message_id: str, model: str) -> dict[str, Any]:
    return {"id": message_id, "type": "message", "role": "assistant", "model": model}


class MessageBuilder:
    """One non-streaming ``message`` object."""

    def __init__(self, message_id: str, model: str) -> None:
        self.message_id = message_id
        self.model = model
        self.trace: pb.DecisionTrace | None = None  # not part of Anthropic's format: dropped
        self.extra_fields: dict[str, Any] | None = None
        self._blocks = Blocks(keep=True)
        self._usage: pb.Usage | None = None

    def add_chunk(self, chunk: pb.Chunk) -> None:
        for delta in chunk.choices:
            if delta.index == 0:
                self._blocks.feed(delta)

    def set_usage(self, usage: pb.Usage) -> None:
        self._usage = usage

    @property
    def usage(self) -> pb.Usage | None:
        return self._usage

    def result(self) -> dict[str, Any]:
        body = _message_head(self.message_id, self.model)
        body["content"] = self._blocks.content()
        body.update(self._blocks.stop.fields(self._blocks.has_tools()))
        body["usage"] = usage_dict(self._usage)
        return body


def sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


PING = sse({"type": "ping"})


class MessageStreamEncoder:
    """SSE frames for one streamed ``message``."""

    heartbeat = PING  # Anthropic's own keep-alive event

    def __init__(self, message_id: str, model: str) -> None:
        self.message_id = message_id
        self.model = model
        self._blocks = Blocks(keep=False)

    def start(self) -> bytes:
        message = _message_head(self.message_id, self.model)
        message.update({"content": [], "stop_reason": None, "stop_sequence": None, "usage": usage_dict(None)})
        return sse({"type": "message_start", "message": message}) + PING

    def encode(self, chunk: pb.Chunk) -> bytes:
        out: list[bytes] = []
        for delta in chunk.choices:
            if delta.index == 0:
                out.extend(self._frame(op) for op in self._blocks.feed(delta))
        return b"".join(out)

    @staticmethod
    def _frame(op: tuple[str, int, Any]) -> bytes:
        kind, index, payload = op
        if kind == "start":
            return sse({"type": "content_block_start", "index": index, "content_block": payload})
        if kind == "delta":
            return sse({"type": "content_block_delta", "index": index, "delta": payload})
        return sse({"type": "content_block_stop", "index": index})

    def encode_usage(self, usage: pb.Usage, fields: dict[str, Any] | None = None) -> bytes:
        ops: list[tuple[str, int, Any]] = []
        self._blocks.close(ops)
        closing = b"".join(self._frame(op) for op in ops)
        delta = self._blocks.stop.fields(self._blocks.has_tools())
        return closing + sse({"type": "message_delta", "delta": delta, "usage": usage_dict(usage)})

    @staticmethod
    def encode_trace(trace: pb.DecisionTrace) -> bytes:
        return b""  # not part of Anthropic's format

    @staticmethod
    def encode_error(err: pb.Error) -> bytes:
        return sse(error_object(err))

    @staticmethod
    def done() -> bytes:
        return sse({"type": "message_stop"})
