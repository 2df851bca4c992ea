"""The request conventions of the gateways Switchyard stands in for, turned
into routing context. One module per gateway, each with
``apply(headers, req, routing)``; ``apply_all`` runs them in order: header
conventions first, then body extensions, so a value in the body wins over
the same value in a header. Every ``apply`` is idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping

from multidict import CIMultiDict, CIMultiDictProxy

from edge.conventions import bifrost, http, mesh, modelux, muxx
from edge.openai_schema import ChatCompletionRequest
from switchyard.v1 import chat_pb2 as pb

# Headers that may carry the client's API key, besides ``Authorization: Bearer``.
API_KEY_HEADERS = ("x-muxx-api-key", "api-key", "x-api-key")

CONVENTIONS = (http, muxx, modelux, bifrost, mesh)


def apply_all(headers: Mapping[str, str], req: ChatCompletionRequest, routing: pb.RoutingContext) -> None:
    """Apply every convention. ``headers`` may be aiohttp's case-insensitive
    headers or any mapping (its names are lower-cased here)."""
    if not isinstance(headers, CIMultiDictProxy | CIMultiDict):
        headers = {name.lower(): value for name, value in headers.items()}
    for convention in CONVENTIONS:
        convention.apply(headers, req, routing)
