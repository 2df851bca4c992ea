"""SSE decoding and upstream header parsing, without sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from providers.base import UpstreamProtocolError
from providers.sse_decode import stream_sse


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def decode(*parts: bytes, max_line: int = 1 << 20) -> list[tuple[str, str]]:
    return [(e.event, e.data) async for e in stream_sse(chunks(*parts), max_line=max_line)]


async def test_events_split_across_chunks_and_crlf() -> None:
    events = await decode(b"event: a\r\nda", b"ta: x\r\n\r\n: comment\n\ndata: y\ndata: z\n\n")
    assert events == [("a", "x"), ("", "y\nz")]


async def test_complete_line_without_blank_line_is_delivered_partial_line_is_not() -> None:
    assert await decode(b"data: last\n") == [("", "last")]
    # A line cut mid-way is a broken stream, not data.
    assert await decode(b"data: one\n\ndata: par") == [("", "one")]


async def test_no_space_after_colon() -> None:
    assert await decode(b"data:{}\n\n") == [("", "{}")]


async def test_endless_line_is_refused() -> None:
    with pytest.raises(UpstreamProtocolError, match="over-long"):
        await decode(b"data: " + b"x" * 5000, b"x" * 5000, max_line=4096)


async def test_invalid_utf8_is_refused() -> None:
    with pytest.raises(UpstreamProtocolError, match="UTF-8"):
        await decode(b"data: \xff\xfe\n\n")


def test_retry_after_forms() -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from providers.upstream import retry_after_ms

    assert retry_after_ms({"Retry-After": "2"}) == 2000
    assert retry_after_ms({"retry-after-ms": "750", "retry-after": "9"}) == 750
    in_5s = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    assert 3000 <= retry_after_ms({"retry-after": in_5s}) <= 5000
    assert retry_after_ms({"retry-after": "soon"}) == 0
    assert retry_after_ms({}) == 0
