"""OpenAI-compatible servers (vLLM, Ollama, llama.cpp, oMLX, DeepSeek...).

Same wire format as OpenAI, plus what such servers add: provider-specific
top-level fields (``top_k``, ``min_p``, ``chat_template_kwargs`` ...) passed
through from ``ChatRequest.extra``, reasoning text in ``reasoning_content``
(or ``reasoning``), and that reasoning kept in assistant history.

``n`` is fanned out by the runtime: many such servers ignore it silently.
"""

from __future__ import annotations

from typing import Any, ClassVar

from google.protobuf import struct_pb2

from providers.base import Capabilities
from providers.openai import OpenAITranslator
from switchyard.v1 import chat_pb2 as pb

_EXACT_INT = 2**53  # beyond this a double no longer holds every integer


class OpenAICompatTranslator(OpenAITranslator):
    type = "openai_compat"
    capabilities = Capabilities(n=False, json_schema=True, stream_usage=True, extra_fields=frozenset({"*"}))
    reasoning_fields: ClassVar[tuple[str, ...]] = ("reasoning_content", "reasoning")
    keeps_reasoning_history: ClassVar[bool] = True

    def _max_tokens_field(self, model: str) -> str:
        return "max_tokens"

    def _set_top_k(self, value: int, body: dict[str, Any]) -> None:
        body["top_k"] = value

    def _merge_extra(self, request: pb.ChatRequest, body: dict[str, Any]) -> None:
        # Typed fields win: an extra never overrides model, messages or stream.
        for key, value in request.extra.fields.items():
            body.setdefault(key, plain_value(value))


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
