"""A small load generator for the cluster fault tests: keep-alive aiohttp
clients sending a mix of short streams and plain requests, each outcome
recorded by request id and by when it failed (before or after the first byte)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import nats.errors
import orjson

from deploy.local.mesh import Mesh
from switchyard import nats_client
from switchyard.events import STREAM
from switchyard.v1 import usage_pb2 as upb

OK = "ok"
REFUSED = "refused"  # an HTTP error status: failed before the first byte
UNREACHABLE = "unreachable"  # no answer at all (connection refused or reset before the headers)
ERROR_EVENT = "error_event"  # the stream started, then ended with an OpenAI error event
CUT = "cut"  # the stream started, then the connection closed mid-answer
TRUNCATED = "truncated"  # the stream ended cleanly without a finish: never acceptable
BEFORE_FIRST_BYTE = (REFUSED, UNREACHABLE)


@dataclass
class Outcome:
    request_id: str | None
    result: str
    stream: bool
    status: int = 0  # the HTTP status, 0 when none arrived


async def send(http: aiohttp.ClientSession, mesh: Mesh, prompt: str, *, stream: bool,
               first_byte: asyncio.Event | None = None, key: str | None = None) -> Outcome:
    """One chat request; how it ended. Bounded by the session's timeout."""
    body = {"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": prompt}]}
    headers = {"Authorization": f"Bearer {key or mesh.api_key}", "Content-Type": "application/json"}
    request_id = None
    started = False
    try:
        async with http.post(f"{mesh.base_url}/chat/completions", data=orjson.dumps(body), headers=headers) as reply:
            request_id = reply.headers.get("x-request-id")
            if reply.status != 200:
                await reply.read()
                return Outcome(request_id, REFUSED, stream, reply.status)
            if not stream:
                data = orjson.loads(await reply.read())
                return Outcome(request_id, OK if data["choices"][0]["finish_reason"] else TRUNCATED, stream)
            finished = False
            async for line in reply.content:
                if not line.startswith(b"data: "):
                    continue
                payload = line[6:].strip()
                if payload == b"[DONE]":
                    return Outcome(request_id, OK if finished else TRUNCATED, stream)
                event = orjson.loads(payload)
                if "error" in event:
                    return Outcome(request_id, ERROR_EVENT, stream)
                if event.get("choices"):
                    if event["choices"][0]["delta"].get("content") and not started:
                        started = True
                        if first_byte is not None:
                            first_byte.set()
                    finished = finished or bool(event["choices"][0].get("finish_reason"))
            return Outcome(request_id, TRUNCATED, stream)
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        if request_id is None and not isinstance(exc, aiohttp.ClientPayloadError):
            return Outcome(None, UNREACHABLE, stream)
        return Outcome(request_id, CUT, stream)
    except aiohttp.ClientConnectionError:
        return Outcome(request_id, UNREACHABLE if request_id is None else CUT, stream)


@dataclass
class Load:
    """``concurrency`` clients in a loop until ``stop()``: every third request
    a plain one, the others streams of ``tokens`` chunks ``chunk_delay_ms`` apart."""

    mesh: Mesh
    http: aiohttp.ClientSession
    concurrency: int = 6
    tokens: int = 12
    chunk_delay_ms: int = 20
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _serial: itertools.count = field(default_factory=itertools.count)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self.concurrency)]

    async def _client(self) -> None:
        while not self._stop.is_set():
            n = next(self._serial)
            prompt = f"load {n} [[sim tokens={self.tokens} chunk_delay_ms={self.chunk_delay_ms}]]"
            self.outcomes.append(await send(self.http, self.mesh, prompt, stream=n % 3 != 0))

    async def until(self, count: int, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while len(self.outcomes) < count:
                await asyncio.sleep(0.05)

    async def stop(self) -> Counter[str]:
        self._stop.set()
        async with asyncio.timeout(60):  # every request ends: none hangs
            await asyncio.gather(*self._tasks)
        return Counter(o.result for o in self.outcomes)


async def stored_usage(mesh: Mesh) -> list[upb.UsageEvent]:
    """Every usage event the stream holds, read message by message by sequence."""
    nc = await nats_client.connect(mesh.nats_url_for("admin"))
    try:
        js = nc.jetstream()
        state = (await js.stream_info(STREAM)).state
        return [upb.UsageEvent.FromString((await js.get_msg(STREAM, seq)).data)
                for seq in range(state.first_seq, state.last_seq + 1)] if state.messages else []
    finally:
        await nc.close()


async def usage_counts(mesh: Mesh, expected: set[str], wait_s: float = 30) -> Counter[str]:
    """How many usage events the stream holds per request id, read once
    ``expected`` are all there (or after ``wait_s``: the caller's assertion
    then shows what is missing)."""
    counts: Counter[str] = Counter()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            while True:
                counts = Counter(event.request_id for event in await stored_usage(mesh))
                if expected <= set(counts):
                    break
                await asyncio.sleep(0.5)
    return counts


async def usage_statuses(mesh: Mesh, request_ids: set[str], wait_s: float = 30) -> dict[str, str]:
    """The status (ok, error, cancelled) of each request id's usage event, once all are there."""
    await usage_counts(mesh, request_ids, wait_s)
    return {e.request_id: e.status for e in await stored_usage(mesh) if e.request_id in request_ids}


async def stream_leaders(mesh: Mesh, streams: tuple[str, ...], down: str | None = None) -> Counter[str]:
    """Which NATS node leads each of ``streams`` (node name → streams led),
    each replicated on all three nodes (``down`` may be offline)."""
    nc = await nats_client.connect(mesh.nats_url_for("admin"))
    try:
        js = nc.jetstream()
        leaders: Counter[str] = Counter()
        for name in streams:
            try:
                info = await js.stream_info(name)
            except (nats.errors.Error, TimeoutError):
                if down is None:
                    raise
                leaders[down] += 1  # no answer: still electing
                continue
            assert info.cluster is not None, f"{name} is not clustered"
            peers = {info.cluster.leader, *(peer.name for peer in info.cluster.replicas or [])}
            assert peers - {None} == set(mesh.nats_nodes) or down is not None, f"{name}: {peers}"
            leaders[info.cluster.leader or down or ""] += 1
        return leaders
    finally:
        await nc.close()
