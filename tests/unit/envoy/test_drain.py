"""envoy/drain.py (the front proxy's preStop hook) against a real Envoy: the
listeners drain (answers close their connections), and it returns only once the stream in flight has ended."""

from __future__ import annotations

import asyncio
import importlib.util
import time

import aiohttp
from aiohttp import web

from deploy.local.probes import free_port
from tests.unit.envoy.test_mtls import Envoys, envoys  # noqa: F401 (fixture)
from tests.unit.envoy.test_render import ROOT, needs_envoy, render

spec = importlib.util.spec_from_file_location("switchyard_envoy_drain", ROOT / "envoy" / "drain.py")
assert spec and spec.loader
drain = importlib.util.module_from_spec(spec)
spec.loader.exec_module(drain)


async def slow(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(15):
        await response.write(b"data: x\n\n")
        await asyncio.sleep(0.1)
    return response


@needs_envoy
async def test_drain_waits_for_the_stream_in_flight(envoys: Envoys) -> None:  # noqa: F811
    app = web.Application()
    app.router.add_get("/readyz", lambda _: web.json_response({"status": "ok"}))
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    edge_port, public, admin = free_port(), free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", edge_port).start()
    try:
        envoys.start("front", render.render_front(public_addr=f"127.0.0.1:{public}",
                                                  edge_addrs=f"127.0.0.1:{edge_port}", admin_port=admin),
                     "--drain-strategy", "immediate")  # as deploy/k8s/base/front.yaml runs it
        admin_url = f"http://127.0.0.1:{admin}"
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(15):
                while True:
                    try:
                        async with http.get(f"http://127.0.0.1:{public}/readyz") as ready:
                            if ready.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
            async with http.get(f"http://127.0.0.1:{public}/slow") as stream:
                await stream.content.readline()
                began = time.monotonic()
                draining = asyncio.create_task(asyncio.to_thread(drain.drain, admin_url, 10, 0.05))
                body = await stream.read()
            assert body.count(b"data: x") == 14  # the stream finished whole
            assert await draining == 0
            assert time.monotonic() - began >= 1.0  # it waited for the stream
            # Draining: keep-alive connections are told to close.
            async with http.get(f"http://127.0.0.1:{public}/readyz") as after:
                assert after.headers.get("connection") == "close"
    finally:
        await runner.cleanup()
