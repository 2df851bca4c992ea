"""BoundedWriter: never waits on a slow reader, never holds more than its bound."""

from __future__ import annotations

from typing import Any

import pytest

from edge.bounded_writer import TAIL_ROOM, BoundedWriter, SlowReaderError, slow_reader_error


class Transport:
    """The transport of a client that reads only when told to."""

    def __init__(self) -> None:
        self.buffered = 0
        self.high: int | None = None

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = high

    def get_write_buffer_size(self) -> int:
        return self.buffered


class Response:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.written = b""

    async def write(self, data: bytes) -> None:
        # aiohttp waits here only when the transport is above its high-water mark.
        assert self.transport.high is not None and self.transport.buffered <= self.transport.high
        self.transport.buffered += len(data)
        self.written += data


class Request:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport


def writer(bound: int) -> tuple[BoundedWriter, Transport, Response]:
    transport = Transport()
    response = Response(transport)
    out = BoundedWriter(Request(transport), response, bound)  # type: ignore[arg-type]
    return out, transport, response


async def test_writes_pass_while_the_client_keeps_up() -> None:
    out, transport, response = writer(1000)
    assert transport.high == 1000 + TAIL_ROOM  # a write within the bound never waits
    for _ in range(50):
        await out.write(b"x" * 100)
        transport.buffered = 0  # the client read it
    assert len(response.written) == 5000


async def test_a_client_that_stops_reading_is_cut_at_the_bound() -> None:
    out, transport, _ = writer(1000)
    for _ in range(10):
        await out.write(b"x" * 100)
    with pytest.raises(SlowReaderError):
        await out.write(b"x")
    assert transport.buffered == 1000  # nothing beyond the bound was taken
    # The closing error event fits in the room above the bound.
    tail: Any = slow_reader_error(1000)
    assert tail.code == "client_too_slow" and "1000" in tail.message
    assert transport.high is not None and transport.buffered + len(tail.SerializeToString()) < transport.high
