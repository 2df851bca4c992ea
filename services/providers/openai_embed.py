"""OpenAI ``POST /v1/embeddings`` (also what OpenAI-compatible servers speak).

Vectors are asked for as base64 where the upstream supports it (OpenAI):
that is the float32 little-endian bytes the canonical answer carries, so no
float is parsed or printed on the way. Servers that may not know base64
(OpenAI-compatible ones) are asked for floats.
"""

from __future__ import annotations

import base64
import binascii
from array import array
from typing import Any

import orjson

from providers.base import Embeddings, UpstreamProtocolError, UpstreamStreamError, estimated_tokens
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb


def embed_body(request: epb.EmbedRequest, model: str, *, as_base64: bool) -> dict[str, Any]:
    inputs = request.inputs
    if inputs and inputs[0].tokens:
        payload: Any = [list(i.tokens) for i in inputs]
    else:
        payload = [i.text for i in inputs]
    body: dict[str, Any] = {"model": model, "input": payload, "encoding_format": "base64" if as_base64 else "float"}
    if request.HasField("dimensions"):
        body["dimensions"] = request.dimensions
    if request.user:
        body["user"] = request.user
    return body


def _vector(value: Any) -> bytes:
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error:
            raise UpstreamProtocolError("an embedding is not valid base64") from None
        if len(raw) % 4:
            raise UpstreamProtocolError("a base64 embedding is not a whole number of float32 values")
        return raw
    if isinstance(value, list):
        try:
            return array("f", value).tobytes()
        except (TypeError, OverflowError):
            raise UpstreamProtocolError("an embedding holds a value that is not a number") from None
    raise UpstreamProtocolError("an embedding is neither a list of floats nor base64")


def parse_embeddings(body: bytes, request: epb.EmbedRequest, stream_error: Any) -> Embeddings:
    """``stream_error(error)`` turns an error envelope in a 200 into a canonical error."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError("the embeddings answer is not JSON") from None
    if not isinstance(data, dict):
        raise UpstreamProtocolError("the embeddings answer is not a JSON object")
    if data.get("error") is not None:
        raise UpstreamStreamError(stream_error(data["error"]))
    items = data.get("data")
    if not isinstance(items, list) or len(items) != len(request.inputs):
        raise UpstreamProtocolError(f"the embeddings answer has {len(items) if isinstance(items, list) else 'no'} "
                                    f"vectors for {len(request.inputs)} inputs")
    vectors: list[bytes] = [b""] * len(items)
    for position, item in enumerate(items):
        index = item.get("index", position) if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < len(items) or vectors[index]:
            raise UpstreamProtocolError("the embeddings answer's indexes do not match its inputs")
        vectors[index] = _vector(item.get("embedding"))
    raw = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    model = data["model"][:256] if isinstance(data.get("model"), str) else ""
    prompt = raw.get("prompt_tokens")
    if isinstance(prompt, int) and prompt > 0:
        return Embeddings(vectors, pb.Usage(prompt_tokens=prompt, total_tokens=raw.get("total_tokens") or prompt),
                          model=model)
    counted = estimated_tokens(request.inputs)
    return Embeddings(vectors, pb.Usage(prompt_tokens=counted, total_tokens=counted), estimated=True, model=model)
