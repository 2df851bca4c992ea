"""OpenAI-compatible servers (vLLM, Ollama, llama.cpp, oMLX, DeepSeek...).

Same wire format as OpenAI, plus what such servers add: provider-specific
top-level fields (``top_k``, ``min_p``, ``chat_template_kwargs`` ...) passed
through from ``ChatRequest.extra``, reasoning text in ``reasoning_content``
(or ``reasoning``), and that reasoning kept in assistant history.

``n`` is fanned out by the runtime: many such servers ignore it silently.
"""

from __future__ import annotations

from typing import Any, ClassVar

from providers.base import Capabilities, plain_extra
from providers.openai import OpenAITranslator
from switchyard.v1 import chat_pb2 as pb


class OpenAICompatTranslator(OpenAITranslator):
    type = "openai_compat"
    capabilities = Capabilities(n=False, json_schema=True, extra_fields=frozenset({"*"}))
    reasoning_fields: ClassVar[tuple[str, ...]] = ("reasoning_content", "reasoning")
    keeps_reasoning_history: ClassVar[bool] = True

    def _max_tokens_field(self, model: str) -> str:
        return "max_tokens"

    def _set_top_k(self, value: int, body: dict[str, Any]) -> None:
        body["top_k"] = value

    def _merge_extra(self, request: pb.ChatRequest, body: dict[str, Any]) -> None:
        # Typed fields win: an extra never overrides model, messages or stream.
        for key, value in plain_extra(request).items():
            body.setdefault(key, value)
