"""Gemini embeddings: ``models/{model}:embedContent`` for one input,
``:batchEmbedContents`` for several (at most 100 per call, as the API
allows). Gemini reports no token counts for embeddings, so usage is
estimated (and flagged so in the usage event). ``task_type`` and ``title``
pass through from the request's provider-specific fields."""

from __future__ import annotations

import re
from array import array
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from providers.base import Embeddings, UpstreamProtocolError, estimated_tokens, plain_extra
from switchyard.errors import InvalidRequestError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb

API_VERSION = "v1beta"
MAX_BATCH = 100
EXTRA_FIELDS = {"task_type": "taskType", "title": "title"}


def embed_url(base_url: str, model: str, *, batch: bool) -> str:
    base = base_url.rstrip("/")
    if not re.search(r"/v1(beta\d*|alpha)?$", urlsplit(base).path):
        base = f"{base}/{API_VERSION}"
    name = quote(model.removeprefix("models/"), safe="-._~")
    return f"{base}/models/{name}:{'batchEmbedContents' if batch else 'embedContent'}"


def embed_body(request: epb.EmbedRequest, model: str) -> tuple[bool, dict[str, Any]]:
    """(batch?, body)."""
    inputs = request.inputs
    if any(i.tokens for i in inputs):
        raise InvalidRequestError("Gemini embeds text only; token-id input is not supported", param="input")
    if len(inputs) > MAX_BATCH:
        raise InvalidRequestError(f"Gemini embeds at most {MAX_BATCH} inputs per request, got {len(inputs)}",
                                  param="input")
    options: dict[str, Any] = {}
    if request.HasField("dimensions"):
        options["outputDimensionality"] = request.dimensions
    for name, value in plain_extra(request).items():
        if name not in EXTRA_FIELDS:
            raise InvalidRequestError(f"{name} is not supported for Gemini embeddings", param=name)
        options[EXTRA_FIELDS[name]] = value
    if len(inputs) == 1:
        return False, {"content": {"parts": [{"text": inputs[0].text}]}, **options}
    name = "models/" + model.removeprefix("models/")
    return True, {"requests": [{"model": name, "content": {"parts": [{"text": i.text}]}, **options} for i in inputs]}


def _values(item: Any) -> bytes:
    values = item.get("values") if isinstance(item, dict) else None
    if not isinstance(values, list):
        raise UpstreamProtocolError("a Gemini embedding has no values")
    try:
        return array("f", values).tobytes()
    except (TypeError, OverflowError):
        raise UpstreamProtocolError("a Gemini embedding holds a value that is not a number") from None


def parse_embeddings(body: bytes, request: epb.EmbedRequest) -> Embeddings:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError("the embeddings answer is not JSON") from None
    if not isinstance(data, dict):
        raise UpstreamProtocolError("the embeddings answer is not a JSON object")
    items = data["embeddings"] if "embeddings" in data else [data.get("embedding")]
    if not isinstance(items, list) or len(items) != len(request.inputs):
        raise UpstreamProtocolError(f"Gemini answered {len(items) if isinstance(items, list) else 'no'} embeddings "
                                    f"for {len(request.inputs)} inputs")
    vectors = [_values(item) for item in items]
    metadata = data.get("usageMetadata") if isinstance(data.get("usageMetadata"), dict) else {}
    counted = metadata.get("promptTokenCount")
    if isinstance(counted, int) and counted > 0:
        return Embeddings(vectors, pb.Usage(prompt_tokens=counted, total_tokens=counted))
    tokens = estimated_tokens(request.inputs)
    return Embeddings(vectors, pb.Usage(prompt_tokens=tokens, total_tokens=tokens), estimated=True)
