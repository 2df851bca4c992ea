"""One table of upstream error classes, shared by every translator, and the
errors a client sees when an upstream fails, in the client's terms.

A translator reads its vendor's error body (message, the vendor's error type
or status string, code, param) and picks a class only where its vendor
differs from the HTTP status (Anthropic's ``overloaded_error``, Gemini's
``RESOURCE_EXHAUSTED``, OpenAI's ``insufficient_quota``...); ``upstream_error``
does the rest the same way for all: the class from the status, the client's
status, OpenAI type, code and retryability, the sanitised message, the
parameter, ``retry_after_ms``. Timeouts name the limit that fired; transport
and protocol failures say what happened, not which library noticed it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import aiohttp

from providers.base import UpstreamLimitError, UpstreamTruncatedError
from providers.sanitize import client_message
from switchyard.config import Timeouts
from switchyard.logs import redact
from switchyard.v1 import chat_pb2 as pb

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ErrorClass:
    """What the client sees for one kind of upstream failure."""

    status: int        # HTTP status the client gets
    type: str          # OpenAI error type
    code: str          # code when the upstream gave none (or its own is not shown)
    retryable: bool    # another attempt (another provider) may succeed
    keeps_code: bool   # the upstream's own code is shown when it gave one
    client_fault: bool  # the request itself is at fault: ``param`` is shown


# The gateway's own credentials or account are at fault, not the client's:
# a 502 that another provider may serve.
AUTH = ErrorClass(502, "api_error", "upstream_auth_error", True, False, False)
BILLING = ErrorClass(502, "api_error", "upstream_billing_error", True, False, False)
INVALID = ErrorClass(400, "invalid_request_error", "invalid_request", False, True, True)
CONTENT_FILTER = ErrorClass(400, "invalid_request_error", "content_filter", False, False, True)
NOT_FOUND = ErrorClass(404, "invalid_request_error", "model_not_found", False, True, True)
TOO_LARGE = ErrorClass(413, "invalid_request_error", "request_too_large", False, True, True)
RATE_LIMITED = ErrorClass(429, "rate_limit_error", "rate_limit_exceeded", True, True, False)
OVERLOADED = ErrorClass(503, "api_error", "upstream_overloaded", True, False, False)
UNAVAILABLE = ErrorClass(503, "api_error", "service_unavailable", True, True, False)
TIMEOUT = ErrorClass(504, "timeout_error", "upstream_timeout", True, False, False)
SERVER = ErrorClass(502, "api_error", "upstream_error", True, True, False)

BY_STATUS: Mapping[int, ErrorClass] = {
    400: INVALID, 401: AUTH, 402: BILLING, 403: AUTH, 404: NOT_FOUND, 408: TIMEOUT, 409: SERVER, 413: TOO_LARGE,
    422: INVALID, 429: RATE_LIMITED, 499: SERVER, 503: UNAVAILABLE, 504: TIMEOUT, 529: OVERLOADED,
}
_SHOWN_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


def class_for_status(status: int) -> ErrorClass:
    """The class of an HTTP status no vendor rule overrides. Other 4xx
    (405, 410, 415...) are the gateway's problem with this upstream (a wrong
    URL or model), so another provider may serve the request."""
    return BY_STATUS.get(status, SERVER)


def upstream_error(provider: str, status: int, message: str, *, kind: ErrorClass | None = None, code: str = "",
                   param: str = "", retry_after_ms: int = 0, secrets: Iterable[str | None] = ()) -> pb.Error:
    """The client's error for an upstream's error (``status`` 0: unknown,
    e.g. an in-band stream error that names no status)."""
    kind = kind or class_for_status(status or 500)
    text = client_message(message, secrets) or f"{provider} answered HTTP {status}"
    if kind is AUTH:
        text = f"provider {provider} rejected the gateway's credentials: {text}"
    shown = code if kind.keeps_code and _SHOWN_CODE.match(code) else kind.code
    if kind is NOT_FOUND and shown == "model_not_found":
        param = param or "model"
    return pb.Error(status=kind.status, type=kind.type, code=shown, message=text,
                    param=param if kind.client_fault else "", retryable=kind.retryable,
                    retry_after_ms=retry_after_ms, provider=provider, upstream_status=status)


def retry_after_ms(headers: Mapping[str, str]) -> int:
    """How long the upstream asked us to wait: ``retry-after-ms``, else
    ``retry-after`` in seconds or as an HTTP date; 0 when absent or unreadable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        if lowered.get("retry-after-ms"):
            return max(int(float(lowered["retry-after-ms"])), 0)
        value = lowered.get("retry-after")
        if value:
            try:
                return max(int(float(value) * 1000), 0)
            except ValueError:
                return max(int((parsedate_to_datetime(value).timestamp() - time.time()) * 1000), 0)
    except (TypeError, ValueError):
        pass
    return 0


def timeout_error(which: str, provider: str, timeouts: Timeouts) -> pb.Error:
    """The error for the limit that fired: ``connect``, ``first_token``,
    ``between_chunks``, ``total``, ``deadline`` (the request's own) or
    ``slot`` (waiting for a connection of the key's share)."""
    messages = {
        "connect": f"connecting to {provider} took longer than the {timeouts.connect_s:g} s connect timeout",
        "first_token": f"{provider} sent no output within the {timeouts.first_token_s:g} s first-token timeout",
        "between_chunks": f"{provider} stalled: no chunk within the {timeouts.between_chunks_s:g} s "
                          "between-chunks timeout",
        "total": f"{provider} did not finish within the {timeouts.total_s:g} s total timeout",
        "deadline": f"the request's deadline passed while waiting for {provider}",
        "slot": f"no connection to {provider} came free for this key within the {timeouts.first_token_s:g} s "
                "first-token timeout",
    }
    if which == "deadline":  # no other attempt can finish in time either
        return pb.Error(status=504, type="timeout_error", code="deadline_exceeded", message=messages[which],
                        retryable=False, provider=provider)
    return pb.Error(status=504, type="timeout_error", code="upstream_timeout", message=messages[which],
                    retryable=True, provider=provider)


def failure_error(exc: Exception, provider: str, sent: bool) -> pb.Error:
    """A broken answer (cap hit, truncated, malformed, connection lost) as a
    502; retryable only while nothing was sent."""
    if isinstance(exc, UpstreamLimitError):
        code, message = exc.code, f"{provider}'s answer was refused: {exc}"
    elif isinstance(exc, UpstreamTruncatedError):
        code, message = "upstream_stream_truncated", str(exc)
    elif isinstance(exc, aiohttp.ClientConnectorError):
        code, message = "upstream_unreachable", f"cannot connect to {provider}"
    elif isinstance(exc, aiohttp.ClientPayloadError) and "content-encoding" in str(exc).lower():
        code, message = "upstream_protocol_error", f"{provider} sent a body that cannot be decompressed"
    elif isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        code, message = "upstream_stream_truncated", \
            f"the connection to {provider} closed before the answer was complete"
    elif isinstance(exc, aiohttp.ClientError):
        code, message = "upstream_error", f"the connection to {provider} failed"
    elif isinstance(exc, UnicodeDecodeError):
        code, message = "upstream_protocol_error", f"{provider} sent text that is not UTF-8"
    else:  # UpstreamProtocolError (our own words) or a translator's ValueError
        code, message = "upstream_protocol_error", f"{provider} sent a malformed answer: {client_message(str(exc))}"
    log.info("upstream %s failed: %s (%s: %s)", provider, code, type(exc).__name__, redact(str(exc))[:300])
    return pb.Error(status=502, type="api_error", code=code, message=message, retryable=not sent, provider=provider)
