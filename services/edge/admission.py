"""Admission control at the edge: which requests may take a slot, and when.

A request is counted in three places, so that no single client can take the
edge from the others:

- against its API key and its client address from the moment its headers
  are authenticated, body read included (429 with ``retry-after`` beyond
  ``max_concurrent_requests_per_key`` / ``_per_address``);
- against the process-wide ``max_concurrent_requests`` only once its body has
  been read (503 with ``retry-after`` beyond), so uploads trickling in hold no
  slot; ``read_body`` gives up on a body after ``body_read_timeout_s`` (408).

The client address is the one the front Envoy saw (``x-envoy-external-address``,
which Envoy overwrites for every external client because the public listener
trusts no peer). It is trusted only because the edge listens behind Envoy
alone: on a Unix socket locally, on the pod's loopback in Kubernetes.
"""

from __future__ import annotations

import asyncio

import grpc
from aiohttp import web

from switchyard.config import Limits
from switchyard.errors import PayloadTooLargeError, SwitchyardError, UnavailableError

RETRY_AFTER_MS = 1000
EXTERNAL_ADDRESS = "x-envoy-external-address"


class ConcurrencyLimitError(SwitchyardError):
    """One key or one client address has too many requests open."""

    status = 429
    type = "rate_limit_error"
    code = "too_many_concurrent_requests"
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class RequestTimeoutError(SwitchyardError):
    """The client did not send its whole body in time."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


def client_address(request: web.Request) -> str:
    """The client's address as the front Envoy saw it; the peer address when
    the edge is reached without Envoy (tests, a bare ``TCPSite``)."""
    address = request.headers.get(EXTERNAL_ADDRESS)
    if address:
        return address
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded:
        return forwarded.rsplit(",", 1)[-1].strip()  # the hop Envoy appended
    return request.remote or ""


async def read_body(request: web.Request, limits: Limits) -> bytes:
    """The whole body, within ``max_body_bytes`` (413) and ``body_read_timeout_s`` (408)."""
    limit = limits.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLargeError(f"request body exceeds the {limit} byte limit")
    try:
        async with asyncio.timeout(limits.body_read_timeout_s):
            return await request.read()
    except TimeoutError:
        # aiohttp reads and drops what is left for up to 10 s after the answer,
        # then closes; closing at once would reset a proxy still sending the
        # body, which would lose the 408 and answer 503 instead.
        raise RequestTimeoutError(
            f"the request body was not received within {limits.body_read_timeout_s:g} s") from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLargeError(f"request body exceeds the {limit} byte limit") from None


class Admission:
    """Counts of open requests per key, per address and in total, for one edge process."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.in_flight = 0
        self.per_key: dict[str, int] = {}
        self.per_address: dict[str, int] = {}

    def ticket(self) -> Ticket:
        return Ticket(self)


class Ticket:
    """One request's place in ``Admission``: ``admit_client`` then ``admit``;
    ``release`` (always, in a ``finally``) gives back whatever was taken."""

    __slots__ = ("_address", "_admission", "_counted", "_key")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._key: str | None = None
        self._address: str | None = None
        self._counted = False

    def admit_client(self, key_id: str, address: str) -> None:
        """Count the request against its key and address, or raise ``ConcurrencyLimitError``."""
        admission = self._admission
        limits = admission.limits
        if admission.per_key.get(key_id, 0) >= limits.max_concurrent_requests_per_key:
            raise ConcurrencyLimitError(
                f"this API key has {limits.max_concurrent_requests_per_key} requests in progress, the most allowed "
                "at once; retry when one has finished", retry_after_ms=RETRY_AFTER_MS)
        if admission.per_address.get(address, 0) >= limits.max_concurrent_requests_per_address:
            raise ConcurrencyLimitError(
                f"your address has {limits.max_concurrent_requests_per_address} requests in progress, the most "
                "allowed at once; retry when one has finished", retry_after_ms=RETRY_AFTER_MS)
        admission.per_key[key_id] = admission.per_key.get(key_id, 0) + 1
        admission.per_address[address] = admission.per_address.get(address, 0) + 1
        self._key, self._address = key_id, address

    def admit(self) -> None:
        """Take one of the process's slots, or raise ``UnavailableError`` (503)."""
        admission = self._admission
        if admission.in_flight >= admission.limits.max_concurrent_requests:
            raise UnavailableError("Switchyard is at capacity; retry shortly", code="overloaded",
                                   retry_after_ms=RETRY_AFTER_MS)
        admission.in_flight += 1
        self._counted = True

    def release(self) -> None:
        admission = self._admission
        if self._counted:
            admission.in_flight -= 1
            self._counted = False
        if self._key is not None:
            _decrement(admission.per_key, self._key)
            self._key = None
        if self._address is not None:
            _decrement(admission.per_address, self._address)
            self._address = None


def _decrement(counts: dict[str, int], name: str) -> None:
    """One fewer; the entry goes at zero, so the maps hold only open requests."""
    left = counts[name] - 1
    if left:
        counts[name] = left
    else:
        del counts[name]
