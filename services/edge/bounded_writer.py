"""A streamed response that never waits for a slow reader, and never holds
more than a bounded number of bytes for one.

aiohttp's ``StreamResponse.write`` waits for the socket to drain once its
transport holds more than the high-water mark (64 KiB). A handler waiting
there stops taking events from its router call, but the call goes on: its
events pile up in the session's per-call queue without bound (a session
multiplexes many calls on one gRPC stream, so it cannot stop reading for
one of them). So instead of waiting, ``BoundedWriter`` lets the transport
buffer grow to ``max_buffered`` bytes and then raises ``SlowReaderError``;
the handler cancels the router call and ends the stream with an error event.
The transport's high-water mark sits ``TAIL_ROOM`` above ``max_buffered`` so
that neither a write below the bound nor that closing event ever waits.
Memory per slow client is then ``max_buffered`` plus the closing event, for
as long as the proxy keeps the stalled connection (Envoy's
``stream_idle_timeout``).
"""

from __future__ import annotations

from aiohttp import web

from switchyard.v1 import chat_pb2 as pb

TAIL_ROOM = 64 * 1024  # the error event and the end of the chunked body


class SlowReaderError(Exception):
    """The client has left more than ``max_buffered`` bytes unread."""


class BoundedWriter:
    def __init__(self, request: web.Request, response: web.StreamResponse, max_buffered: int) -> None:
        self._response = response
        self._transport = request.transport
        self.max_buffered = max_buffered
        if self._transport is not None:
            self._transport.set_write_buffer_limits(high=max_buffered + TAIL_ROOM)

    async def write(self, data: bytes) -> None:
        """Write ``data``, or raise ``SlowReaderError`` if the client has not
        taken enough of what was written before to make room for it."""
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size() + len(data) > self.max_buffered:
            raise SlowReaderError
        await self._response.write(data)


def slow_reader_error(max_buffered: int) -> pb.Error:
    return pb.Error(status=408, type="invalid_request_error", code="client_too_slow",
                    message=f"the stream was ended because the client was not reading it: more than {max_buffered} "
                            "bytes were waiting to be read")
