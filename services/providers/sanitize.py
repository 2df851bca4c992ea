"""What a client may see of an upstream's error text.

Upstream messages are useful ("maximum context length is 128000 tokens") but
may carry what must not leave the gateway: internal host names and addresses,
file paths, stack traces, HTML pages, echoed keys. ``client_message`` keeps
the useful part, short and on one line; the full text goes to the debug log
only (``log_upstream_text``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from switchyard.logs import redact

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


