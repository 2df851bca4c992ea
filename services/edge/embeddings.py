"""``POST /v1/embeddings``: the OpenAI request to the canonical
``EmbedRequest``, and the router's answer back to OpenAI's JSON.

Vectors travel as float32 little-endian bytes, which is exactly what
``encoding_format: base64`` asks for; floats are rendered from them only
when the client wants floats.
"""

from __future__ import annotations

import base64
from array import array
from typing import Any

import orjson
from pydantic import ValidationError

from edge import conventions
from edge.openai_schema import EmbeddingRequest
from edge.validation import load_json_object, request_error
from switchyard.config import Limits
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb


def parse_embedding_request(body: bytes, limits: Limits) -> EmbeddingRequest:
    data = load_json_object(body, limits)
    try:
        return EmbeddingRequest.model_validate(data)
    except ValidationError as exc:
        raise request_error(exc.errors(include_url=False)[0], data) from None


def to_embed_request(req: EmbeddingRequest, *, request_id: str, identity: pb.Identity,
                     routing: pb.RoutingContext) -> epb.EmbedRequest:
    """The canonical request; ``routing`` holds what the header conventions gave."""
    if not req.model and req.models:
        req.model = req.models[0]
    conventions.apply_body(req, routing)  # type: ignore[arg-type] - the same extension fields as chat
    out = epb.EmbedRequest(request_id=request_id, model=req.model or "", user=req.user or "", identity=identity,
                           routing=routing)
    value = req.input
    if isinstance(value, str):
        out.inputs.add(text=value)
    elif isinstance(value[0], str):
        out.inputs.extend(epb.EmbedInput(text=text) for text in value)
    elif isinstance(value[0], int):
        out.inputs.add(tokens=value)
    else:
        out.inputs.extend(epb.EmbedInput(tokens=tokens) for tokens in value)
    if req.dimensions is not None:
        out.dimensions = req.dimensions
    if req.model_extra:
        out.extra.update(req.model_extra)
    return out


def render(reply: epb.EmbedResponse, *, as_base64: bool) -> bytes:
    """OpenAI's ``list`` of ``embedding`` objects."""
    data: list[dict[str, Any]] = []
    for index, raw in enumerate(reply.vectors):
        if as_base64:
            vector: Any = base64.b64encode(raw).decode()
        else:
            values = array("f")
            values.frombytes(raw)
            vector = values.tolist()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    usage = reply.usage
    return orjson.dumps({"object": "list", "data": data, "model": reply.started.model,
                         "usage": {"prompt_tokens": usage.prompt_tokens,
                                   "total_tokens": usage.total_tokens or usage.prompt_tokens}})
