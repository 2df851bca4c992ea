"""The request conventions of the gateways Switchyard stands in for, turned
into routing context. One module per gateway, each with
``apply(headers, req, routing)``. Header conventions (Muxx) apply to every
front door, so the handler runs ``apply_headers`` once per request; body
extensions (Modelux, Bifrost, Mesh) exist only in the OpenAI body, so its
parser runs ``apply_body``. Headers go first: a value in the body wins over
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

HEADER_CONVENTIONS = (http, muxx)
BODY_CONVENTIONS = (modelux, bifrost, mesh)
CONVENTIONS = HEADER_CONVENTIONS + BODY_CONVENTIONS


def apply_headers(headers: Mapping[str, str], routing: pb.RoutingContext) -> None:
    """The header conventions. ``headers`` may be aiohttp's case-insensitive
    headers or any mapping (its names are lower-cased here)."""
    if not isinstance(headers, CIMultiDictProxy | CIMultiDict):
        headers = {name.lower(): value for name, value in headers.items()}
    for convention in HEADER_CONVENTIONS:
        convention.apply(headers, None, routing)


def apply_body(req: ChatCompletionRequest, routing: pb.RoutingContext) -> None:
    """The body extensions of an OpenAI request."""
    for convention in BODY_CONVENTIONS:
        convention.apply({}, req, routing)


def apply_all(headers: Mapping[str, str], req: ChatCompletionRequest, routing: pb.RoutingContext) -> None:
    """Every convention, headers first."""
    apply_headers(headers, routing)
    apply_body(req, routing)
