"""Connecting to NATS with the credentials in a service's settings.

Credentials travel in the URL (``SWITCHYARD_NATS_URL=nats://user:password@host:4222``,
nats-py's own user/password form; in Kubernetes the whole URL comes from a
Secret). A cluster is a comma-separated list of such URLs; the user and
password of the first one are also sent to servers the client only learns
of from the cluster (their addresses come without credentials). Each user's
request replies arrive on its own inbox prefix, ``_INBOX.<user>``, so the
server can let a user subscribe to its own replies and nobody else's. The
URL is never logged: ``redacted`` drops the password.

``stream_replicas`` is how many servers keep a copy of each stream and
key-value bucket a service creates (``SWITCHYARD_NATS_REPLICAS``: 3 on a
3-node cluster, 1 on a single server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from switchyard import settings

log = logging.getLogger(__name__)

DEFAULT_INBOX = "_INBOX"
MAX_REPLICAS = 5  # JetStream's own limit


def servers(url: str) -> list[str]:
    """The URLs of a comma-separated list."""
    return [part.strip() for part in url.split(",") if part.strip()]


def inbox_prefix(url: str) -> str:
    """``_INBOX.<user>`` for a URL with a user, else NATS's default prefix."""
    user = urlsplit(servers(url)[0]).username
    return f"{DEFAULT_INBOX}.{user}" if user else DEFAULT_INBOX


def redacted(url: str) -> str:
    """The URL (or list of URLs) without passwords, for log lines."""
    shown = []
    for server in servers(url):
        parts = urlsplit(server)
        if parts.password is not None:
            host = parts.netloc.rpartition("@")[2]
            server = parts._replace(netloc=f"{parts.username}:***@{host}").geturl()
        shown.append(server)
    return ",".join(shown)


def stream_replicas(environ: dict[str, str] | None = None) -> int:
    """``SWITCHYARD_NATS_REPLICAS`` (default 1): copies of each stream and bucket this service creates."""
    try:
        replicas = settings.load(settings.Common, environ).nats_replicas
    except settings.ConfigError as exc:
        raise ValueError(str(exc)) from None
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(f"SWITCHYARD_NATS_REPLICAS must be a whole number from 1 to {MAX_REPLICAS}, not {replicas}")
    return replicas


async def connect(url: str, **options: Any) -> nats.NATS:
    """``nats.connect`` with the credentials of ``url`` and its user's inbox prefix."""
    pool = servers(url)
    first = urlsplit(pool[0])
    if first.username is not None and first.password is not None and "user" not in options:
        options = {**options, "user": first.username, "password": first.password}
    return await nats.connect(pool, inbox_prefix=inbox_prefix(url), **options)


CLOSE_TIMEOUT_S = 5.0


async def close(nc: nats.NATS | None, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Close ``nc`` (when there is one) within ``timeout_s``, whatever state it
    is in. nats-py's close flushes and waits for the socket to close, with no
    bound of its own: a server that stopped reading would hold a service's
    shutdown forever."""
    if nc is None:
        return
    try:
        await asyncio.wait_for(nc.close(), timeout_s)
    except TimeoutError:
        log.warning("NATS connection did not close within %.0fs; dropped", timeout_s)
    except Exception as exc:  # closing is best effort: the process is going away
        log.debug("NATS close failed: %s", exc)


async def open_bucket(js: JetStreamContext, name: str, **spec: Any) -> KeyValue:
    """The key-value bucket ``name``, created with ``spec`` (and this
    service's replica count) when it does not exist yet; retried every second
    while JetStream is not ready (just after a server start)."""
    while True:
        try:
            try:
                return await js.key_value(name)
            except BucketNotFoundError:
                with contextlib.suppress(Exception):  # another replica may create it at the same moment
                    await js.create_key_value(bucket=name, replicas=stream_replicas(), **spec)
                return await js.key_value(name)
        except Exception as exc:
            log.warning("cannot open bucket %s (%s); retrying", name, type(exc).__name__)
            await asyncio.sleep(1)
