"""Incremental server-sent-events decoder for upstream streams.

Bounded: a line longer than ``max_line`` bytes (an endless line from a broken
upstream) raises ``UpstreamProtocolError`` instead of growing memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from providers.base import SSEEvent, UpstreamProtocolError

MAX_LINE = 4 * 1024 * 1024


async def stream_sse(chunks: AsyncIterator[bytes], max_line: int = MAX_LINE) -> AsyncIterator[SSEEvent]:
    """Decode raw body chunks into SSE events (WHATWG rules: ``data`` lines
    joined by newlines, ``event``/``id`` fields, comments ignored)."""
    buffer = b""
    event = ""
    data: list[str] = []
    event_id = ""
    async for chunk in chunks:
        buffer = buffer + chunk if buffer else chunk
        while True:
            nl = buffer.find(b"\n")
            if nl < 0:
                if len(buffer) > max_line:
                    raise UpstreamProtocolError("upstream sent an over-long SSE line")
                break
            raw = buffer[:nl]
            buffer = buffer[nl + 1 :]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if not raw:
                if data or event:
                    yield SSEEvent(event, "\n".join(data), event_id)
                event, data = "", []
                continue
            try:
                line = raw.decode()
            except UnicodeDecodeError:
                raise UpstreamProtocolError("upstream sent invalid UTF-8 in its stream") from None
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id":
                event_id = value
    if data or event:
        yield SSEEvent(event, "\n".join(data), event_id)
