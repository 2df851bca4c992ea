"""The one contract every upstream translator implements.

A translator is pure format: it turns the canonical request into one upstream
HTTP request, and the upstream's answer (a JSON body, or a decoded SSE event
stream) into canonical ``GenerateEvent``s. Transport, timeouts, pooling,
n-fan-out and cost live in ``attempt.py``/``upstream.py``, so a translator can
be tested by feeding it recorded bytes, with no socket.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from google.protobuf import struct_pb2

from switchyard.config import ProviderSpec
from switchyard.errors import InvalidRequestError
from switchyard.tokens import text_tokens
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb
from switchyard.v1 import provider_pb2 as ppb


@dataclass(slots=True)
class UpstreamRequest:
    """One HTTP request to an upstream API. Keys go only in headers."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class SSEEvent:
    """One server-sent event as decoded from the upstream stream."""

    event: str = ""
    data: str = ""
    id: str = ""


@dataclass(slots=True)
class Embeddings:
    """One upstream embeddings answer: float32 little-endian vectors in
    input order, the usage, whether the token counts are estimated, and the
    model the upstream says answered ("" if it says none)."""

    vectors: list[bytes]
    usage: pb.Usage
    estimated: bool = False
    model: str = ""


def estimated_tokens(inputs: Iterable[epb.EmbedInput]) -> int:
    """Tokens of inputs an upstream did not count: token ids as given, text
    by the metering rule (``switchyard.tokens``: 4 bytes of UTF-8 a token)."""
    return sum(len(i.tokens) or max(1, text_tokens(i.text)) for i in inputs)


@dataclass(slots=True)
class Capabilities:
    """What the upstream API does natively; the rest is emulated or refused."""

    n: bool = True                 # several choices in one call
    json_schema: bool = True       # native structured output
    extra_fields: frozenset[str] = field(default_factory=frozenset)  # "*" = any


class Translator(ABC):
    """Maps between the canonical request/events and one upstream API family."""

    type: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, provider: str, spec: ProviderSpec, api_key: str | None) -> None:
        self.provider = provider
        self.spec = spec
        self.api_key = api_key

    @abstractmethod
    def build_request(self, request: pb.ChatRequest, model: str, *, stream: bool) -> UpstreamRequest:
        """The upstream HTTP request for one attempt. Raises InvalidRequestError
        (with ``param``) for a request this upstream cannot serve."""

    @abstractmethod
    def parse_response(self, body: bytes, model: str) -> Iterable[ppb.GenerateEvent]:
        """Events for a complete non-streaming answer: chunk(s) with whole
        choices and their finish reasons, then usage. Raises
        ``UpstreamStreamError`` for a 200 whose body is an error envelope."""

    @abstractmethod
    def stream_events(self, events: AsyncIterator[SSEEvent], model: str) -> AsyncIterator[ppb.GenerateEvent]:
        """Events for a streaming answer, as they arrive. Must raise
        ``UpstreamTruncatedError`` when the stream ends without its terminator,
        ``UpstreamProtocolError`` for a malformed one and ``UpstreamStreamError``
        for an in-band error event."""

    def check_extra(self, request: pb.ChatRequest) -> None:
        """Refuse provider-specific fields this upstream does not understand,
        naming the field, instead of silently dropping them."""
        allowed = self.capabilities.extra_fields
        if "*" in allowed:
            return
        for name in sorted(request.extra.fields):
            if name not in allowed:
                raise InvalidRequestError(f"{name} is not supported by provider {self.provider} ({self.type})",
                                          param=name)

    def needs_output_validation(self, request: pb.ChatRequest) -> bool:
        """Whether the runtime must check the answer against the request's
        ``response_format`` because the upstream cannot guarantee it
        (emulated, or native but with keywords the upstream does not enforce)."""
        return request.response_format.type == "json_schema" and not self.capabilities.json_schema

    def note_json_schema_refusal(self, request: pb.ChatRequest, error: pb.Error) -> bool:
        """Whether ``error`` (before any output) may be this upstream refusing
        ``json_schema``; if so the translator remembers it and sends such
        requests as ``json_object`` from now on, and the runtime retries this
        one that way, checking the answer against the schema. Default: never."""
        return False

    def forget_json_schema_refusal(self) -> None:  # noqa: B027 - optional hook, nothing to forget by default
        """The retry as ``json_object`` failed too: the refusal was not about
        ``json_schema`` after all."""

    def build_embed_request(self, request: epb.EmbedRequest, model: str) -> UpstreamRequest:
        """The upstream HTTP request for one embeddings attempt."""
        raise InvalidRequestError(f"provider {self.provider} ({self.type}) has no embeddings API", param="model",
                                  code="embeddings_not_supported")

    def parse_embed_response(self, body: bytes, request: epb.EmbedRequest) -> Embeddings:
        """The vectors (one per input, in order) and usage of an embeddings answer."""
        raise UpstreamProtocolError(f"provider {self.provider} ({self.type}) has no embeddings API")

    def build_count_request(self, request: pb.ChatRequest, model: str) -> UpstreamRequest | None:
        """The upstream's own token-counting request, or None when it has
        none (the count is then estimated)."""
        return None

    def parse_count_response(self, body: bytes) -> int:
        raise UpstreamProtocolError(f"provider {self.provider} ({self.type}) cannot count tokens")

    @abstractmethod
    def map_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> pb.Error:
        """The canonical error for a non-2xx upstream answer, with ``retryable``
        and ``retry_after_ms`` set."""


_EXACT_INT = 2**53  # beyond this a double no longer holds every integer


def plain_value(value: struct_pb2.Value) -> Any:
    """A Struct value as plain JSON data; integral numbers become ints again
    (Struct stores every number as a double)."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < _EXACT_INT else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: plain_value(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [plain_value(v) for v in value.list_value.values]
    return None


def plain_extra(request: pb.ChatRequest) -> dict[str, Any]:
    """The request's provider-specific fields as plain JSON data."""
    return {key: plain_value(value) for key, value in request.extra.fields.items()}


class UpstreamProtocolError(Exception):
    """The upstream broke its wire format (cut stream, bad JSON, no terminator)."""


class UpstreamTruncatedError(UpstreamProtocolError):
    """The upstream ended its answer early: the stream closed without its
    terminator, or the terminator came before every choice had finished."""


class UpstreamLimitError(UpstreamProtocolError):
    """The upstream's answer hit one of our caps (line, event, stream,
    decompressed size or ratio); ``code`` names the cap."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class UpstreamStreamError(Exception):
    """The upstream reported an error in band: inside an open stream, or as
    the body of a 200 answer."""

    def __init__(self, error: pb.Error) -> None:
        super().__init__(error.message)
        self.error = error
