"""Mesh: stored prompt ``template`` with ``variables``, ``session_id`` for
usage grouping, and the OpenRouter-style ``models`` fallback list.

``models`` is the ordered list of models to try; an entry equal to the
requested ``model`` is that first attempt, not a fallback. When ``model`` is
omitted the handler resolves it (key default or template), and every entry
of ``models`` becomes a fallback.
"""

from __future__ import annotations

from collections.abc import Mapping

from edge.openai_schema import ChatCompletionRequest
from switchyard.v1 import chat_pb2 as pb


def apply(headers: Mapping[str, str], req: ChatCompletionRequest, routing: pb.RoutingContext) -> None:
    if req.template:
        routing.template = req.template
    if req.variables:
        routing.variables.update(req.variables)
    if req.session_id:
        routing.session_id = req.session_id
    for model in req.models or ():
        if model != req.model and model not in routing.fallbacks:
            routing.fallbacks.append(model)
