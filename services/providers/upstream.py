"""Pooled keep-alive HTTP client sessions, one per configured provider, and
upstream bodies read under caps (decoded size, decompression ratio, pace)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp

from providers.base import UpstreamLimitError
from switchyard.config import ProviderSpec

# Upstream error bodies and non-streaming answers are read into memory; cap
# them so a hostile upstream cannot exhaust the worker. Sizes are decoded
# (decompressed) bytes.
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 256 * 1024
# A streamed answer is not held in memory, but its total is capped too: the
# longest legitimate answers (long reasoning with logprobs) stay far below.
MAX_STREAM_BYTES = 256 * 1024 * 1024
# Decompression: beyond RATIO_FLOOR decoded bytes, more than MAX_RATIO decoded
# bytes per received byte is a decompression bomb (SSE and JSON compress ~5-20x).
MAX_RATIO = 100
RATIO_FLOOR = 1024 * 1024
# A stream may burst this much, then is read at most this fast: far above
# what a model produces (even with logprobs or inline images), low enough
# that a flooding upstream costs the shared worker a few percent of a core.
# Beyond the rate the socket is not read, so TCP slows the upstream down.
STREAM_BURST_BYTES = 4 * 1024 * 1024
STREAM_RATE_BYTES_S = 4 * 1024 * 1024


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


async def iter_body(response: aiohttp.ClientResponse, cap: int, code: str = "upstream_stream_too_large", *,
                    paced: bool = False) -> AsyncIterator[bytes]:
    """The decoded body as it arrives; ``UpstreamLimitError`` (``code``) past
    ``cap`` decoded bytes, ``upstream_decompression_bomb`` past the ratio cap.
    aiohttp inflates incrementally under flow control, so a bomb is stopped
    after a few MiB of work, not after inflating it. ``paced``: beyond
    STREAM_BURST_BYTES, read no faster than STREAM_RATE_BYTES_S."""
    content = response.content
    encoded = response.headers.get("content-encoding", "identity").lower() not in ("", "identity")
    size = 0
    started = time.monotonic()
    async for chunk in content.iter_any():
        size += len(chunk)
        if size > cap:
            raise UpstreamLimitError(code, f"the upstream answer exceeds {cap} bytes")
        if encoded and size > RATIO_FLOOR and size > MAX_RATIO * max(content.total_raw_bytes, 1):
            raise UpstreamLimitError("upstream_decompression_bomb",
                                     f"the upstream answer inflates more than {MAX_RATIO}x")
        yield chunk
        if paced and size > STREAM_BURST_BYTES:
            ahead = (size - STREAM_BURST_BYTES) / STREAM_RATE_BYTES_S - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)


async def read_capped(response: aiohttp.ClientResponse, cap: int, *, truncate: bool = False) -> bytes:
    """Read a whole body of at most ``cap`` decoded bytes; with ``truncate``
    the first ``cap`` bytes instead of an error (for error bodies)."""
    chunks: list[bytes] = []
    size = 0
    body = iter_body(response, cap if not truncate else MAX_BODY_BYTES, "upstream_body_too_large")
    try:
        async for chunk in body:
            chunks.append(chunk)
            size += len(chunk)
            if truncate and size >= cap:
                break
    finally:
        await body.aclose()
    joined = b"".join(chunks)
    return joined[:cap] if truncate else joined
