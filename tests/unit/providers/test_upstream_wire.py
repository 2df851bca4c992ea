"""SSE decoding, its caps and cooperative yielding; capped and decompressed
upstream bodies; upstream header parsing."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from providers.base import UpstreamLimitError, UpstreamProtocolError
from providers.sse_decode import SSELimits, stream_sse
from providers.upstream import RATIO_FLOOR, iter_body, read_capped


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def decode(*parts: bytes, **limits: int) -> list[tuple[str, str]]:
    return [(e.event, e.data) async for e in stream_sse(chunks(*parts), SSELimits(**limits))]


async def test_events_split_across_chunks_and_crlf() -> None:
    events = await decode(b"event: a\r\nda", b"ta: x\r\n\r\n: comment\n\ndata: y\ndata: z\n\n")
    assert events == [("a", "x"), ("", "y\nz")]


async def test_every_split_point_gives_the_same_events() -> None:
    body = b"event: a\r\ndata: x\r\n\r\n\n\n: c\r\nid: 7\ndata\ndata: \xc3\xa9\n\r\n\r\ndata: [DONE]\n\n"
    whole = await decode(body)
    assert whole == [("a", "x"), ("", "\n\u00e9"), ("", "[DONE]")]
    for cut in range(1, len(body)):
        assert await decode(body[:cut], body[cut:]) == whole, cut
    assert await decode(*(body[i:i + 1] for i in range(len(body)))) == whole


async def test_complete_line_without_blank_line_is_delivered_partial_line_is_not() -> None:
    assert await decode(b"data: last\n") == [("", "last")]
    # A line cut mid-way is a broken stream, not data.
    assert await decode(b"data: one\n\ndata: par") == [("", "one")]


async def test_no_space_after_colon() -> None:
    assert await decode(b"data:{}\n\n") == [("", "{}")]


async def limit_code(*parts: bytes, **limits: int) -> str:
    with pytest.raises(UpstreamLimitError) as info:
        await decode(*parts, **limits)
    return info.value.code


async def test_endless_line_is_refused_partial_or_complete() -> None:
    assert await limit_code(b"data: " + b"x" * 5000, b"x" * 5000, max_line=4096) == "upstream_line_too_long"
    assert await limit_code(b"data: " + b"x" * 5000 + b"\n\n", max_line=4096) == "upstream_line_too_long"
    # At the cap exactly is fine.
    assert await decode(b"data: " + b"x" * 4090 + b"\n\n", max_line=4096) == [("", "x" * 4090)]


async def test_event_caps_bytes_and_lines_without_a_blank_line() -> None:
    assert await limit_code(b"data: xxxxxxxx\n" * 20, max_event_bytes=100) == "upstream_event_too_large"
    assert await limit_code(b"data:\n" * 20, max_event_lines=10) == "upstream_event_too_large"
    # The same lines with blank lines between them are many small events.
    assert len(await decode(b"data: xxxxxxxx\n\n" * 20, max_event_bytes=100, max_event_lines=10)) == 20


async def test_stream_event_cap() -> None:
    assert await limit_code(b"data: x\n\n" * 11, max_events=10) == "upstream_stream_too_large"
    assert len(await decode(b"data: x\n\n" * 10, max_events=10)) == 10


async def test_invalid_utf8_is_refused() -> None:
    with pytest.raises(UpstreamProtocolError, match="UTF-8"):
        await decode(b"data: \xff\xfe\n\n")


async def test_yields_to_the_loop_inside_one_big_chunk() -> None:
    """Other tasks run while one 8 MiB chunk is decoded, and a timeout set
    around the decoder fires before it is through 16 MiB of comment lines."""
    ticks = 0
    done = False

    async def other() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    events = [e async for e in stream_sse(chunks(b"data: x\n" + b": keep-alive\n" * 700_000 + b"\n"))]
    done = True
    await task
    assert len(events) == 1
    assert ticks >= 50  # ~8 MiB of work at one yield per 64 KiB

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            async for _ in stream_sse(chunks(b": keep-alive\n" * 1_400_000)):
                pass


# ------------------------------------------------------------ HTTP bodies --

BOMB = gzip.compress(b"\n" * (64 * 1024 * 1024), compresslevel=9)  # ~64 KiB inflating 1000x


@pytest.fixture
async def body_server() -> AsyncIterator[str]:
    async def bomb(_: web.Request) -> web.Response:
        return web.Response(body=BOMB, headers={"content-encoding": "gzip", "content-type": "application/json"})

    async def small_gzip(_: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b'{"ok": true}' * 100), headers={"content-encoding": "gzip"})

    async def plain(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * int(request.query["size"]))

    app = web.Application()
    app.router.add_get("/bomb", bomb)
    app.router.add_get("/small", small_gzip)
    app.router.add_get("/plain", plain)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def test_decompression_bomb_is_refused_streamed_and_whole(body_server: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{body_server}/bomb") as response:
        seen = 0
        with pytest.raises(UpstreamLimitError) as info:
            async for chunk in iter_body(response, 1 << 30):
                seen += len(chunk)
        assert info.value.code == "upstream_decompression_bomb"
        assert seen <= 32 * RATIO_FLOOR  # stopped after a few MiB, not 64
    async with http.get(f"{body_server}/bomb") as response:
        with pytest.raises(UpstreamLimitError) as info:
            await read_capped(response, 32 * 1024 * 1024)
        assert info.value.code == "upstream_decompression_bomb"


async def test_bodies_capped_by_decoded_size(body_server: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{body_server}/small") as response:
        assert await read_capped(response, 4096) == b'{"ok": true}' * 100
    async with http.get(f"{body_server}/plain", params={"size": "5000"}) as response:
        with pytest.raises(UpstreamLimitError) as info:
            await read_capped(response, 4096)
        assert info.value.code == "upstream_body_too_large"
    async with http.get(f"{body_server}/plain", params={"size": "500000"}) as response:
        assert await read_capped(response, 4096, truncate=True) == b"x" * 4096
