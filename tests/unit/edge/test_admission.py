"""Admission control: per-key and per-address caps from the headers on,
the process-wide limit only once the body is in, bodies bounded in time."""

from __future__ import annotations

import asyncio
import time
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request

from edge.admission import Admission, ConcurrencyLimitError, RequestTimeoutError, client_address, read_body
from switchyard.config import Limits
from switchyard.errors import PayloadTooLargeError, UnavailableError

LIMITS = Limits(max_concurrent_requests=3, max_concurrent_requests_per_key=2, max_concurrent_requests_per_address=2,
                body_read_timeout_s=0.2)


def test_the_process_limit_counts_only_admitted_bodies() -> None:
    admission = Admission(LIMITS)
    reading = []
    for i in range(3):  # three clients still sending their bodies hold no slot
        ticket = admission.ticket()
        ticket.admit_client(f"key{i}", f"10.0.0.{i}")
        reading.append(ticket)
    assert admission.in_flight == 0
    served = [admission.ticket() for _ in range(3)]
    for i, ticket in enumerate(served):
        ticket.admit_client(f"other{i}", f"10.0.1.{i}")
        ticket.admit()
    assert admission.in_flight == 3
    late = admission.ticket()
    late.admit_client("late", "10.0.2.1")
    with pytest.raises(UnavailableError) as info:
        late.admit()
    assert (info.value.status, info.value.code, info.value.retry_after_ms) == (503, "overloaded", 1000)
    late.release()
    served[0].release()
    reading[0].admit()  # a slot freed is a slot taken
    assert admission.in_flight == 3


def test_one_key_and_one_address_get_a_share_not_the_edge() -> None:
    admission = Admission(LIMITS)
    first, second = admission.ticket(), admission.ticket()
    first.admit_client("k", "10.0.0.1")
    second.admit_client("k", "10.0.0.2")
    with pytest.raises(ConcurrencyLimitError) as info:
        admission.ticket().admit_client("k", "10.0.0.3")
    assert (info.value.status, info.value.type, info.value.code) == (429, "rate_limit_error",
                                                                     "too_many_concurrent_requests")
    assert info.value.retry_after_ms == 1000 and "API key" in info.value.message
    third = admission.ticket()
    third.admit_client("k2", "10.0.0.1")
    with pytest.raises(ConcurrencyLimitError, match="your address"):
        admission.ticket().admit_client("k3", "10.0.0.1")
    # A refused request took nothing.
    assert admission.per_key == {"k": 2, "k2": 1} and admission.per_address == {"10.0.0.1": 2, "10.0.0.2": 1}
    first.release()
    admission.ticket().admit_client("k", "10.0.0.9")


def test_release_gives_back_everything_once() -> None:
    admission = Admission(LIMITS)
    ticket = admission.ticket()
    ticket.admit_client("k", "a")
    ticket.admit()
    ticket.release()
    ticket.release()
    assert (admission.in_flight, admission.per_key, admission.per_address) == (0, {}, {})
    admission.ticket().release()  # refused before anything was taken
    assert admission.in_flight == 0


def test_client_address_is_what_envoy_saw() -> None:
    request = make_mocked_request("POST", "/", headers={"x-envoy-external-address": "203.0.113.7",
                                                        "x-forwarded-for": "198.51.100.1, 10.0.0.5"})
    assert client_address(request) == "203.0.113.7"
    request = make_mocked_request("POST", "/", headers={"x-forwarded-for": "198.51.100.1, 10.0.0.5"})
    assert client_address(request) == "10.0.0.5"  # the hop the proxy appended, not the client's claim


def body_request(chunks: list[bytes], *, eof: bool, length: int | None = None) -> web.Request:
    protocol = mock.Mock()
    payload = StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())
    for chunk in chunks:
        payload.feed_data(chunk)
    if eof:
        payload.feed_eof()
    headers = {"content-length": str(length if length is not None else sum(map(len, chunks)))}
    return make_mocked_request("POST", "/v1/chat/completions", headers=headers, payload=payload,
                               protocol=protocol, client_max_size=LIMITS.max_body_bytes)


async def test_read_body_returns_a_complete_body() -> None:
    request = body_request([b'{"a":', b"1}"], eof=True)
    assert await read_body(request, LIMITS) == b'{"a":1}'


async def test_a_trickling_body_times_out_with_408() -> None:
    request = body_request([b'{"a":'], eof=False, length=100)
    started = time.monotonic()
    with pytest.raises(RequestTimeoutError) as info:
        await read_body(request, LIMITS)
    assert time.monotonic() - started >= LIMITS.body_read_timeout_s
    assert (info.value.status, info.value.code) == (408, "request_timeout")


async def test_a_declared_oversized_body_is_refused_unread() -> None:
    request = body_request([], eof=False, length=LIMITS.max_body_bytes + 1)
    with pytest.raises(PayloadTooLargeError):
        await read_body(request, LIMITS)
