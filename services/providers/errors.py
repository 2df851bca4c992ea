"""The errors a client sees when an upstream fails, in the client's terms.

Upstream messages are useful ("maximum context length is 128000 tokens") but
may carry what must not leave the gateway: internal host names and addresses,
file paths, stack traces, HTML pages, echoed keys. ``client_message`` keeps
the useful part, short and on one line; the full text goes to the debug log
only (``log_upstream_text``). Timeouts name the limit that fired; transport
and protocol failures say what happened, not which library noticed it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import aiohttp

from providers.base import UpstreamLimitError, UpstreamTruncatedError
from switchyard.config import Timeouts
from switchyard.logs import redact
from switchyard.v1 import chat_pb2 as pb

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 300
_TRACE = re.compile(r"(Traceback \(most recent call last\)|\n\s+at [\w$.]+\(|\n\s+File \"|goroutine \d+ \[)")
_HTML = re.compile(r"^\s*<(!doctype|html|head|body|\?xml)|<html[\s>]", re.IGNORECASE)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>)]+", re.IGNORECASE)
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
_HOST_PORT = re.compile(r"\b(?=[a-z0-9.-]*[a-z])[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?:\d{2,5}\b", re.IGNORECASE)
_INTERNAL_HOST = re.compile(
    r"\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:internal|local|localdomain|lan|corp|intra|intranet|svc|cluster\.local|"
    r"home\.arpa)\b(?::\d+)?", re.IGNORECASE)
_PATH = re.compile(r"(?<![\w.])(?:/[\w.@-]+){2,}/?")
_KEY_LIKE = re.compile(r"\b(?:sk|rk|sess)-[A-Za-z0-9_\-*]{6,}")
_SPACE = re.compile(r"\s+")


def client_message(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` fit for a client: no HTML, stack trace, URL, internal host,
    address, path or key; one line of at most MAX_MESSAGE_CHARS. Empty when
    nothing useful is left (the caller then says what happened itself)."""
    if not text or _HTML.search(text):
        return ""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    trace = _TRACE.search(text)
    if trace:
        text = text[: trace.start()]
    text = redact(_KEY_LIKE.sub("[redacted]", text))
    text = _URL.sub("[url]", text)
    text = _INTERNAL_HOST.sub("[host]", text)
    text = _IPV4.sub("[address]", text)
    text = _HOST_PORT.sub("[host]", text)
    text = _PATH.sub("[path]", text)
    text = _SPACE.sub(" ", text).strip(" :;,-")
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1].rstrip() + "…"
    return text


def log_upstream_text(provider: str, status: int, body: bytes | str) -> None:
    """The upstream's full error text, for operators only (debug level, keys redacted)."""
    if log.isEnabledFor(logging.DEBUG):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        log.debug("upstream %s answered %s: %s", provider, status, redact(_KEY_LIKE.sub("[redacted]", text[:4000])))


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
