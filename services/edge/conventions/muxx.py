"""Muxx: ``X-Muxx-Metadata`` (a JSON object of tags), ``X-Muxx-Cache-Control``
(``no-cache``, ``no-store``, ``max-age=N``, as ``Cache-Control``) and
``X-Muxx-User-Id``. The API key header is read by ``auth``.

``headers`` must look names up case-insensitively (aiohttp's headers) or
hold lower-case names.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from edge.conventions.http import apply_cache_control
from edge.openai_schema import ChatCompletionRequest, identifier_problem
from switchyard.errors import InvalidRequestError
from switchyard.v1 import chat_pb2 as pb

METADATA = "x-muxx-metadata"
CACHE_CONTROL = "x-muxx-cache-control"
USER_ID = "x-muxx-user-id"


def apply(headers: Mapping[str, str], req: ChatCompletionRequest | None, routing: pb.RoutingContext) -> None:
    if raw := headers.get(METADATA):
        routing.tags.update(parse_metadata(raw))
    if cache := headers.get(CACHE_CONTROL):
        apply_cache_control(cache, "X-Muxx-Cache-Control", routing)
    if user := headers.get(USER_ID, "").strip():
        if problem := identifier_problem(user):
            raise InvalidRequestError(f"X-Muxx-User-Id {problem}", param="X-Muxx-User-Id")
        routing.end_user = user


def parse_metadata(raw: str) -> dict[str, str]:
    """Tags from the metadata header: a JSON object of scalar values (numbers
    and booleans are written as JSON text; nulls are dropped)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise InvalidRequestError("X-Muxx-Metadata must be a JSON object", param="X-Muxx-Metadata")
    tags: dict[str, str] = {}
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict | list):
            raise InvalidRequestError(f"X-Muxx-Metadata: the value of {key!r} must be a string, number or boolean",
                                      param="X-Muxx-Metadata")
        tags[key] = value if isinstance(value, str) else orjson.dumps(value).decode()
        if problem := identifier_problem(key) or identifier_problem(tags[key]):
            raise InvalidRequestError(f"X-Muxx-Metadata: every key and value {problem}", param="X-Muxx-Metadata")
    return tags
