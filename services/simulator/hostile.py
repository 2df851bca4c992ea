"""Hostile upstream answers, the same for every simulated API: the bodies a
broken or malicious upstream sends, so tests can check that one such answer
costs only its own request a clean error.

Scripted with ``hostile=<name>`` (``x-sim-hostile``) and optionally
``hostile_kib=<size>`` (how much to send; an "endless" body stops there or
when the client leaves, whichever comes first):

- ``newlines``: a 200 event stream of bare ``\\n`` (default 1 MiB) and no terminator.
- ``gzip_newlines``: the same, gzip-compressed (default 1 GiB inflated from ~1 MiB).
- ``endless_data``: ``data: x`` lines with no blank line between them (default 1 GiB).
- ``endless_line``: one line that never ends (default 1 GiB).
- ``bad_utf8``: an event whose data is not UTF-8, then the stream ends.
- ``error_body_200``: 200 with a JSON error body that names internal hosts.
- ``html_error``: 502 with an HTML page holding a stack trace and internal host names.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from aiohttp import web

from simulator.scenarios import Received, Recorder, Script

KIB = 1024
_WRITE = 256 * KIB
# What a leaky upstream puts in its error text: internal names, a trace.
LEAKY_TEXT = ("upstream connect error: inference-node-7.corp.internal:8000 (10.12.3.4) refused; "
              "Traceback (most recent call last): File \"/srv/app/server.py\", line 812, in generate")
DEFAULT_KIB = {"newlines": 1024, "gzip_newlines": 1024 * 1024, "endless_data": 1024 * 1024,
               "endless_line": 1024 * 1024}
NAMES = frozenset({*DEFAULT_KIB, "bad_utf8", "error_body_200", "html_error"})


async def send_hostile(request: web.Request, recorder: Recorder, item: Received,
                       script: Script) -> web.StreamResponse:
    """Answer ``request`` with the scripted hostile body."""
    name = script.hostile
    if name not in NAMES:
        recorder.finish(item, disconnected=False)
        return web.Response(status=400, text=f"unknown hostile scenario {name!r}; known: {sorted(NAMES)}")
    size = (script.hostile_kib or DEFAULT_KIB.get(name, 0)) * KIB
    disconnected = True
    try:
        if name == "error_body_200":
            item.status = 200
            disconnected = False
            body = b'{"error": {"message": "%s", "type": "server_error", "code": "internal_error"}}' % (
                LEAKY_TEXT.replace('"', '\\"').encode())
            return web.Response(status=200, body=body, content_type="application/json")
        if name == "html_error":
            item.status = 502
            disconnected = False
            page = f"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1><pre>{LEAKY_TEXT}" \
                   "</pre><hr>nginx/1.25.3 at lb-3.corp.internal</body></html>"
            return web.Response(status=502, text=page, content_type="text/html")
        headers = {"content-type": "text/event-stream", "cache-control": "no-cache"}
        if name == "gzip_newlines":
            headers["content-encoding"] = "gzip"
        response = web.StreamResponse(status=200, headers=headers)
        item.status = 200
        await response.prepare(request)
        for piece in _pieces(name, size):
            await response.write(piece)
            item.chunks_sent += 1
        await response.write_eof()
        disconnected = False
        return response
    finally:
        recorder.finish(item, disconnected=disconnected)


def _pieces(name: str, size: int) -> Iterator[bytes]:
    if name == "newlines":
        yield from _repeat(b"\n" * _WRITE, size)
    elif name == "endless_data":
        yield from _repeat(b"data: x\n" * (_WRITE // 8), size)
    elif name == "endless_line":
        yield b"data: "
        yield from _repeat(b"x" * _WRITE, size)
    elif name == "bad_utf8":
        yield b'data: {"text": "\xff\xfe\xc3"}\n\n'
    elif name == "gzip_newlines":
        yield from _gzip_repeat(b"\n" * (1024 * KIB), size)
    else:
        raise ValueError(f"unknown hostile scenario {name!r}")


def _repeat(block: bytes, size: int) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        piece = block[: size - sent]
        sent += len(piece)
        yield piece


def _gzip_repeat(block: bytes, size: int) -> Iterator[bytes]:
    """A gzip member inflating to ``size`` bytes of ``block`` repeated,
    produced from one compressed block (a full flush resets the compressor's
    history, so its output can be repeated) instead of compressing ``size``."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip header: deflate, no name, no mtime
    crc, sent = 0, 0
    batch: list[bytes] = []
    while sent + len(block) <= size:
        batch.append(deflated)
        crc = zlib.crc32(block, crc)
        sent += len(block)
        if len(batch) == 64:
            yield b"".join(batch)
            batch.clear()
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    rest = block[: size - sent]
    crc = zlib.crc32(rest, crc)
    yield b"".join(batch) + tail.compress(rest) + tail.flush(zlib.Z_FINISH) + struct.pack("<II", crc, size & 0xFFFFFFFF)
