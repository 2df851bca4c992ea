"""Pooled keep-alive HTTP client sessions, one per configured provider."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import aiohttp

from switchyard.config import ProviderSpec

# Upstream error bodies and non-streaming answers are read into memory; cap
# them so a hostile upstream cannot exhaust the worker.
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 256 * 1024


def new_session(spec: ProviderSpec) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=spec.max_connections,
        limit_per_host=spec.max_connections,
        keepalive_timeout=60,
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
    )
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=spec.timeouts.connect_s)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=True,
        trust_env=False,  # never route upstream calls through an ambient proxy
        skip_auto_headers=("User-Agent",),
        read_bufsize=256 * 1024,
    )


async def read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """Read a body, refusing to buffer more than ``cap`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > cap:
            raise BodyTooLargeError(f"upstream body exceeds {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


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


class BodyTooLargeError(Exception):
    """The upstream sent more than we are willing to buffer."""
