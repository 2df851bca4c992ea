"""Logging setup shared by every service: one line per record, no bodies.

A redaction filter masks anything that looks like an API key, so a key that
slips into an exception message never reaches the log.
"""

from __future__ import annotations

import logging
import re

_SECRET = re.compile(r"(sk-[A-Za-z0-9_-]{8,}|sy_[A-Za-z0-9_-]{8,}|AIza[0-9A-Za-z_-]{20,}|Bearer\s+[^\s\"']+)")


def redact(text: str) -> str:
    return _SECRET.sub("[redacted]", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def setup(service: str, level: str = "INFO") -> None:
    """Log lines to stderr, redacted, at ``level`` (the service's settings)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
