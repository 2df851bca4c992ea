"""Modelux: the top-level ``mlx:tags``, ``mlx:end_user``, ``mlx:cache``
(``{"skip": true}``; Switchyard also takes ``no_store`` and ``ttl``) and
``mlx:trace`` body fields."""

from __future__ import annotations

from collections.abc import Mapping

from edge.openai_schema import ChatCompletionRequest
from switchyard.v1 import chat_pb2 as pb


def apply(headers: Mapping[str, str], req: ChatCompletionRequest, routing: pb.RoutingContext) -> None:
    if req.mlx_tags:
        routing.tags.update(req.mlx_tags)
    if req.mlx_end_user:
        routing.end_user = req.mlx_end_user
    if (cache := req.mlx_cache) is not None:
        if cache.skip:
            routing.cache_skip = True
        if cache.no_store:
            routing.cache_no_store = True
        if cache.ttl is not None:  # the body wins over a header's max-age
            routing.cache_ttl_s = cache.ttl
    if req.mlx_trace:
        routing.trace = True
