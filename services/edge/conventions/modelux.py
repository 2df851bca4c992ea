"""Modelux: the top-level ``mlx:tags``, ``mlx:end_user``, ``mlx:cache``
(``{"skip": true}``) and ``mlx:trace`` body fields."""

from __future__ import annotations

from collections.abc import Mapping

from edge.openai_schema import ChatCompletionRequest
from switchyard.v1 import chat_pb2 as pb


def apply(headers: Mapping[str, str], req: ChatCompletionRequest, routing: pb.RoutingContext) -> None:
    if req.mlx_tags:
        routing.tags.update(req.mlx_tags)
    if req.mlx_end_user:
        routing.end_user = req.mlx_end_user
    if req.mlx_cache is not None and req.mlx_cache.skip:
        routing.cache_skip = True
    if req.mlx_trace:
        routing.trace = True
