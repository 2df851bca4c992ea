"""Standard HTTP ``Cache-Control`` on the request (RFC 9111), read by the
router's response cache: ``no-cache`` answers fresh (the fresh answer may
still be stored), ``no-store`` stores nothing, ``max-age=N`` stores for at
most N seconds and accepts no cached answer older than N, ``only-if-cached``
answers from the cache or with 504, never from an upstream. Muxx's
``X-Muxx-Cache-Control`` takes the same directives. Other directives are
ignored.
"""

from __future__ import annotations

from collections.abc import Mapping

from edge.openai_schema import ChatCompletionRequest
from switchyard.errors import InvalidRequestError
from switchyard.v1 import chat_pb2 as pb

CACHE_CONTROL = "cache-control"
MAX_AGE_S = 2**31 - 1


def apply(headers: Mapping[str, str], req: ChatCompletionRequest, routing: pb.RoutingContext) -> None:
    if value := headers.get(CACHE_CONTROL):
        apply_cache_control(value, "Cache-Control", routing)


def apply_cache_control(value: str, param: str, routing: pb.RoutingContext) -> None:
    """Set the cache controls ``value`` asks for; a malformed ``max-age`` is a
    400 naming the header ``param``."""
    for directive in value.split(","):
        name, _, argument = directive.strip().partition("=")
        name = name.strip().lower()
        if name == "no-cache":
            routing.cache_skip = True
        elif name == "no-store":
            routing.cache_no_store = True
        elif name == "only-if-cached":
            routing.cache_only = True
        elif name == "max-age":
            seconds = argument.strip().strip('"')
            if not seconds.isdigit() or not seconds.isascii():
                raise InvalidRequestError(f"{param}: max-age must be a number of seconds", param=param)
            age = min(int(seconds), MAX_AGE_S)
            if not routing.HasField("cache_ttl_s") or age < routing.cache_ttl_s:
                routing.cache_ttl_s = age
