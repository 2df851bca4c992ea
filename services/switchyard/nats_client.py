"""Connecting to NATS with the credentials in a service's settings.

Credentials travel in the URL (``SWITCHYARD_NATS_URL=nats://user:password@host:4222``,
nats-py's own user/password form; in Kubernetes the whole URL comes from a
Secret). Each user's request replies arrive on its own inbox prefix,
``_INBOX.<user>``, so the server can let a user subscribe to its own replies
and nobody else's. The URL is never logged: ``redacted`` drops the password.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import nats

DEFAULT_INBOX = "_INBOX"


def inbox_prefix(url: str) -> str:
    """``_INBOX.<user>`` for a URL with a user, else NATS's default prefix."""
    user = urlsplit(url).username
    return f"{DEFAULT_INBOX}.{user}" if user else DEFAULT_INBOX


def redacted(url: str) -> str:
    """The URL without its password, for log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


async def connect(url: str, **options: Any) -> nats.NATS:
    """``nats.connect`` with the credentials of ``url`` and its user's inbox prefix."""
    return await nats.connect(url, inbox_prefix=inbox_prefix(url), **options)
