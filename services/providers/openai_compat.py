"""OpenAI-compatible servers (vLLM, Ollama, llama.cpp, oMLX, DeepSeek...).

Same wire format as OpenAI, plus what such servers add: provider-specific
top-level fields (``top_k``, ``min_p``, ``chat_template_kwargs`` ...) passed
through from ``ChatRequest.extra``, reasoning text in ``reasoning_content``
(or ``reasoning``), and that reasoning kept in assistant history.

``n`` is fanned out by the runtime: many such servers ignore it silently.

``json_schema`` is sent natively, but some servers refuse it (llama.cpp's
server answers 500): after such a refusal the provider's ``json_schema``
requests go as ``json_object`` with the schema described in the system
prompt, and the runtime checks each answer against the schema (one retry,
else an error). The refusal is remembered per provider (per worker process).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import jsonschema
import orjson

from providers.base import Capabilities, UpstreamRequest, plain_extra
from providers.openai import OpenAITranslator
from switchyard.config import ProviderSpec
from switchyard.v1 import chat_pb2 as pb

log = logging.getLogger(__name__)
SCHEMA_INSTRUCTION = "Respond only with a single JSON object that validates against this JSON Schema: "
# Statuses with which servers refuse a response_format they do not support.
_REFUSAL_STATUSES = frozenset({400, 422, 500, 501})


class OpenAICompatTranslator(OpenAITranslator):
    type = "openai_compat"
    capabilities = Capabilities(n=False, json_schema=True, extra_fields=frozenset({"*"}))
    reasoning_fields: ClassVar[tuple[str, ...]] = ("reasoning_content", "reasoning")
    keeps_reasoning_history: ClassVar[bool] = True
    base64_embeddings: ClassVar[bool] = False  # not every server knows encoding_format=base64

    def __init__(self, provider: str, spec: ProviderSpec, api_key: str | None) -> None:
        super().__init__(provider, spec, api_key)
        self.json_schema_refused = False

    def build_request(self, request: pb.ChatRequest, model: str, *, stream: bool) -> UpstreamRequest:
        if self.json_schema_refused and request.response_format.type == "json_schema":
            request = as_json_object(request)
        return super().build_request(request, model, stream=stream)

    def needs_output_validation(self, request: pb.ChatRequest) -> bool:
        return self.json_schema_refused and request.response_format.type == "json_schema"

    def note_json_schema_refusal(self, request: pb.ChatRequest, error: pb.Error) -> bool:
        if self.json_schema_refused or request.response_format.type != "json_schema" or \
                error.upstream_status not in _REFUSAL_STATUSES:
            return False
        try:  # an invalid schema is the client's mistake, not the server's limit
            jsonschema.Draft202012Validator.check_schema(orjson.loads(request.response_format.schema_json or "{}"))
        except (orjson.JSONDecodeError, jsonschema.SchemaError):
            return False
        log.warning("provider %s refused json_schema (HTTP %s); using json_object with validation",
                    self.provider, error.upstream_status)
        self.json_schema_refused = True
        return True

    def forget_json_schema_refusal(self) -> None:
        self.json_schema_refused = False

    def _max_tokens_field(self, model: str) -> str:
        return "max_tokens"

    def _set_top_k(self, value: int, body: dict[str, Any]) -> None:
        body["top_k"] = value

    def _merge_extra(self, request: pb.ChatRequest, body: dict[str, Any]) -> None:
        # Typed fields win: an extra never overrides model, messages or stream.
        for key, value in plain_extra(request).items():
            body.setdefault(key, value)


def as_json_object(request: pb.ChatRequest) -> pb.ChatRequest:
    """A copy asking for ``json_object``, the schema described in the system prompt."""
    copy = pb.ChatRequest()
    copy.CopyFrom(request)
    instruction = SCHEMA_INSTRUCTION + (request.response_format.schema_json or "{}")
    copy.response_format.CopyFrom(pb.ResponseFormat(type="json_object"))
    first = copy.messages[0] if copy.messages else None
    if first is not None and first.role == "system" and first.WhichOneof("content") == "text":
        first.text = f"{first.text}\n\n{instruction}"
    else:
        copy.messages.insert(0, pb.Message(role="system", text=instruction))
    return copy
