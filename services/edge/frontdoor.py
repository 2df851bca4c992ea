"""The chat endpoint's front doors: one per wire format a client may speak.

Every chat request goes through the same stages in ``handlers.py``: parse →
authenticate → conventions → canonical request → call the router → render.
A door supplies only the ends that differ between wire formats: its parser
(body → validated request → canonical ``ChatRequest``), its renderers
(canonical events → one JSON body, or SSE frames) and its error body.
Authentication, admission, header conventions, the router call, deadlines,
heartbeats and response headers are the handler's, the same for every door.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edge import anthropic_request, anthropic_response
from edge.anthropic_response import MessageBuilder, MessageStreamEncoder
from edge.transcode import ChunkEncoder, CompletionBuilder, error_body, to_chat_request
from edge.validation import parse_chat_request
from switchyard.config import Limits
from switchyard.v1 import chat_pb2 as pb


class Completion(Protocol):
    """A non-streaming answer being assembled from the router's events."""

    trace: pb.DecisionTrace | None
    extra_fields: dict[str, Any] | None

    def add_chunk(self, chunk: pb.Chunk) -> None: ...
    def set_usage(self, usage: pb.Usage) -> None: ...
    @property
    def usage(self) -> pb.Usage | None: ...
    def result(self) -> dict[str, Any]: ...


class StreamRenderer(Protocol):
    """SSE frames for one streamed answer: ``start`` once the answer is
    accepted, then one call per event, then ``done`` or ``encode_error``."""

    heartbeat: bytes

    def start(self) -> bytes: ...
    def encode(self, chunk: pb.Chunk) -> bytes: ...
    def encode_usage(self, usage: pb.Usage, fields: dict[str, Any] | None = None) -> bytes: ...
    def encode_trace(self, trace: pb.DecisionTrace) -> bytes: ...
    def encode_error(self, err: pb.Error) -> bytes: ...
    def done(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class FrontDoor:
    parse: Callable[[bytes, Limits], Any]
    # (parsed, request_id=, identity=, routing=) -> the canonical request; the
    # routing context already holds what the header conventions gave.
    to_chat: Callable[..., pb.ChatRequest]
    error_body: Callable[[pb.Error], bytes]
    completion: Callable[[pb.ChatRequest, pb.Started, str], Completion]
    stream: Callable[[pb.ChatRequest, pb.Started, str], StreamRenderer]


def _openai_completion(chat: pb.ChatRequest, started: pb.Started, request_id: str) -> CompletionBuilder:
    return CompletionBuilder("chatcmpl-" + request_id, int(time.time()), started.model or chat.model)


def _openai_stream(chat: pb.ChatRequest, started: pb.Started, request_id: str) -> ChunkEncoder:
    return ChunkEncoder("chatcmpl-" + request_id, int(time.time()), started.model or chat.model,
                        include_usage=chat.include_usage)


OPENAI_CHAT = FrontDoor(
    parse=parse_chat_request,
    to_chat=to_chat_request,
    error_body=error_body,
    completion=_openai_completion,
    stream=_openai_stream,
)


def _anthropic_message(chat: pb.ChatRequest, started: pb.Started, request_id: str) -> MessageBuilder:
    return MessageBuilder("msg_" + request_id, started.model or chat.model)


def _anthropic_stream(chat: pb.ChatRequest, started: pb.Started, request_id: str) -> MessageStreamEncoder:
    return MessageStreamEncoder("msg_" + request_id, started.model or chat.model)


ANTHROPIC_MESSAGES = FrontDoor(
    parse=anthropic_request.parse_messages_request,
    to_chat=anthropic_request.to_chat_request,
    error_body=anthropic_response.error_body,
    completion=_anthropic_message,
    stream=_anthropic_stream,
)
