"""Sends a scripted response: delays, stalls, cuts and malformed frames are
applied here once, the same way for every simulated API."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp import web

from simulator.hostile import send_hostile
from simulator.scenarios import Received, Recorder, Script


class Frame:
    """One wire frame; ``content`` frames count towards the *_after triggers."""

    __slots__ = ("content", "data")

    def __init__(self, data: bytes, content: bool = False) -> None:
        self.data = data
        self.content = content


async def wait_first_byte(script: Script) -> None:
    if script.delay_ms:
        await asyncio.sleep(script.delay_ms / 1000)


async def send_stream(request: web.Request, recorder: Recorder, item: Received, script: Script,
                      frames: Sequence[Frame], *, malformed: bytes, error_frame: bytes,
                      content_type: str = "text/event-stream") -> web.StreamResponse:
    """Write ``frames`` honouring the script; the last frame is the terminator."""
    if script.hostile:
        return await send_hostile(request, recorder, item, script)
    response = web.StreamResponse(status=200, headers={"content-type": content_type, "cache-control": "no-cache"})
    disconnected = True
    try:
        await wait_first_byte(script)
        await response.prepare(request)
        sent = 0
        for frame in frames:
            if frame.content:
                if script.stall_after is not None and sent >= script.stall_after:
                    await asyncio.Event().wait()  # hold the connection until the client leaves
                if script.cut_after is not None and sent >= script.cut_after:
                    request.transport.close() if request.transport else None
                    disconnected = False
                    return response
                if script.malformed_after is not None and sent >= script.malformed_after:
                    await response.write(malformed)
                    script.malformed_after = None
                if script.error_after is not None and sent >= script.error_after:
                    await response.write(error_frame)
                    await response.write_eof()
                    disconnected = False
                    return response
                if sent and script.chunk_delay_ms:
                    await asyncio.sleep(script.chunk_delay_ms / 1000)
                sent += 1
                item.chunks_sent = sent
            await response.write(frame.data)
        await response.write_eof()
        disconnected = False
        return response
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    finally:
        item.status = 200
        recorder.finish(item, disconnected=disconnected)


async def send_json(request: web.Request, recorder: Recorder, item: Received, script: Script, status: int,
                    body: bytes, headers: dict[str, str] | None = None) -> web.StreamResponse:
    if script.hostile and status < 300:
        return await send_hostile(request, recorder, item, script)
    disconnected = True
    try:
        await wait_first_byte(script)
        disconnected = False
        item.status = status
        return web.Response(status=status, body=body, content_type="application/json", headers=headers)
    finally:
        recorder.finish(item, disconnected=disconnected)
