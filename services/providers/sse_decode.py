"""Incremental server-sent-events decoder for upstream streams.

One upstream is never allowed to cost the shared worker more than its own
request: the cost is linear in the bytes received (one growing buffer read
from a moving offset, never re-copied per line), every line, event and
stream has a cap, and the decoder yields to the event loop every
``yield_every`` bytes of work, so timeouts fire and other streams progress
even inside one huge network chunk. A cap hit raises ``UpstreamLimitError``
(its ``code`` names the cap) and the caller drops the connection.

Lines end with LF or CRLF (what every LLM API sends); ``data`` lines are
joined by newlines, ``event``/``id`` fields kept, comments ignored (WHATWG).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from providers.base import SSEEvent, UpstreamLimitError, UpstreamProtocolError

MIB = 1024 * 1024
_BLANK_RUN = re.compile(rb"[\r\n]*")  # further blank lines after one: skipped at C speed
_LINE_COST = 32  # work units charged per line on top of its bytes


@dataclass(frozen=True, slots=True)
class SSELimits:
    """Caps for one upstream stream (decoded bytes: after decompression)."""

    max_line: int = 4 * MIB          # one line (a whole JSON chunk fits)
    max_event_bytes: int = 8 * MIB   # data accumulated in one event
    max_event_lines: int = 10_000    # data lines in one event (no blank line between)
    max_events: int = 2_000_000      # events in one stream
    yield_every: int = 64 * 1024     # work (bytes + per-line cost) between yields to the loop


DEFAULT_LIMITS = SSELimits()


async def stream_sse(chunks: AsyncIterator[bytes], limits: SSELimits = DEFAULT_LIMITS) -> AsyncIterator[SSEEvent]:
    """Decode raw body chunks into SSE events."""
    buf = bytearray()
    pos = 0       # start of the first unconsumed line in buf
    scanned = 0   # where the search for the next newline resumes (no byte is searched twice)
    work = 0
    events = 0
    event = ""
    event_id = ""
    data: list[str] = []
    data_bytes = 0
    max_line = limits.max_line
    async for chunk in chunks:
        if pos:
            del buf[:pos]  # CPython drops a bytearray's head without moving the rest
            scanned -= pos
            pos = 0
        buf += chunk
        work += len(chunk)
        while True:
            nl = buf.find(b"\n", scanned)
            if nl < 0:
                scanned = len(buf)
                if scanned - pos > max_line:
                    raise UpstreamLimitError("upstream_line_too_long", f"an upstream SSE line exceeds {max_line} bytes")
                break
            end = nl - 1 if nl > pos and buf[nl - 1] == 0x0D else nl
            if end - pos > max_line:
                raise UpstreamLimitError("upstream_line_too_long", f"an upstream SSE line exceeds {max_line} bytes")
            work += end - pos + _LINE_COST
            if end == pos:  # blank line: dispatch the event, skip any run of blank lines after it
                pos = scanned = _BLANK_RUN.match(buf, nl + 1).end()  # type: ignore[union-attr]
                if data or event:
                    events += 1
                    if events > limits.max_events:
                        raise UpstreamLimitError("upstream_stream_too_large",
                                                 f"the upstream stream exceeds {limits.max_events} events")
                    yield SSEEvent(event, "\n".join(data), event_id)
                    event, data, data_bytes = "", [], 0
            else:
                raw = buf[pos:end]
                pos = scanned = nl + 1
                if raw[:5] == b"data:" or raw == b"data":
                    value = raw[6:] if raw[5:6] == b" " else raw[5:]
                    data_bytes += len(value)
                    if data_bytes > limits.max_event_bytes or len(data) >= limits.max_event_lines:
                        raise UpstreamLimitError("upstream_event_too_large",
                                                 f"an upstream SSE event exceeds {limits.max_event_bytes} bytes "
                                                 f"or {limits.max_event_lines} data lines")
                    data.append(_text(value))
                elif raw[:1] != b":":
                    name, _, value = _text(raw).partition(":")
                    if value.startswith(" "):
                        value = value[1:]
                    if name == "event":
                        event = value
                    elif name == "id":
                        event_id = value
            if work >= limits.yield_every:
                work = 0
                await asyncio.sleep(0)  # let timeouts fire and other requests run
        if work >= limits.yield_every:
            work = 0
            await asyncio.sleep(0)
    if data or event:
        yield SSEEvent(event, "\n".join(data), event_id)


def _text(raw: bytes | bytearray) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise UpstreamProtocolError("upstream sent invalid UTF-8 in its stream") from None
