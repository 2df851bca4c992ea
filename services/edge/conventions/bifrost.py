"""Bifrost: request-level ``fallbacks`` (``provider/model`` names), tried in
order after the requested model."""

from __future__ import annotations

from collections.abc import Mapping

from edge.openai_schema import ChatCompletionRequest
from switchyard.v1 import chat_pb2 as pb


def apply(headers: Mapping[str, str], req: ChatCompletionRequest, routing: pb.RoutingContext) -> None:
    for model in req.fallbacks or ():
        if model not in routing.fallbacks:
            routing.fallbacks.append(model)
