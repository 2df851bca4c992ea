"""The latency budget per hop: the same small request sent at each layer of
a running mesh, from the simulator up to the public port, one request at a
time and at a fixed rate. Each layer's figure includes every layer below
it, so the difference between neighbours is what that hop adds:

    simulator             the upstream alone (HTTP)
    provider worker       + translation, upstream client, session (gRPC on its socket)
    Envoy (providers)     + the sidecar pass in front of the provider worker
    router                + the routing pipeline, session to the providers' sidecar
    Envoy (router)        + the sidecar pass in front of the router
    edge                  + HTTP parsing, validation, auth, transcoding (HTTP on its socket)
    Envoy (front)         + the public proxy (HTTP on TCP, what clients use)

A second table splits the public requests' time to first output by the
figures each process measured and carried back in the request's
``Server-Timing`` header (``services/edge/server_timing.py``): edge,
edge-router transport, router, router-provider transport, provider worker,
upstream.

Prints figures; never fails. Everything runs on 127.0.0.1 and Unix sockets.

    .venv/bin/python tests/bench/bench_hops.py [--requests 400] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

import aiohttp  # noqa: E402
import grpc  # noqa: E402
import orjson  # noqa: E402
import uvloop  # noqa: E402

from deploy.local.mesh import Mesh, MeshSettings, isolated_environ  # noqa: E402
from router.execute import generate_request_bytes  # noqa: E402
from switchyard.grpc_server import CHANNEL_OPTIONS  # noqa: E402
from switchyard.session import streamer  # noqa: E402
from switchyard.v1 import chat_pb2 as pb  # noqa: E402
from tests.bench.bench import cpu_seconds, pct  # noqa: E402

MODEL = "gpt-4o-mini"
Send = Callable[[bool], Awaitable[float]]  # stream? -> seconds to the first content (stream) or to the end


def chat_body(stream: bool) -> bytes:
    return orjson.dumps({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})


class Timings:
    """Server-Timing figures of the answers, by the phase of the benchmark they belong to."""

    def __init__(self) -> None:
        self.phase = ""
        self.by_phase: dict[str, list[dict[str, float]]] = {}

    def add(self, header: str | None) -> None:
        if header and self.phase:
            self.by_phase.setdefault(self.phase, []).append(
                {name: float(dur) for name, _, dur in (part.partition(";dur=") for part in header.split(", "))})


def http_sender(session: aiohttp.ClientSession, url: str, key: str, timings: Timings | None = None) -> Send:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}

    async def send(stream: bool) -> float:
        began = time.perf_counter()
        async with session.post(url, data=chat_body(stream), headers=headers) as response:
            if timings is not None:
                timings.add(response.headers.get("server-timing"))
            if not stream:
                await response.read()
                assert response.status == 200, response.status
                return time.perf_counter() - began
            first = None
            async for line in response.content:
                if first is None and b'"content"' in line:
                    first = time.perf_counter() - began
            return first if first is not None else time.perf_counter() - began
    return send


def grpc_sender(channel: grpc.aio.Channel, service: str, rpc: str, payload: Callable[[bool], bytes]) -> Send:
    stream_events = streamer(channel, service, rpc, transport="session", sessions=2)
    requests = {True: payload(True), False: payload(False)}

    async def send(stream: bool) -> float:
        began = time.perf_counter()
        first = None
        async for raw in stream_events(requests[stream], 30):
            if first is None and raw and raw[0] == 0x12 and stream:  # the first chunk
                first = time.perf_counter() - began
        return first if first is not None else time.perf_counter() - began
    return send


def chat_request(stream: bool) -> bytes:
    return pb.ChatRequest(request_id=secrets.token_hex(8), model=MODEL, stream=stream,
                          messages=[pb.Message(role="user", text="hi")]).SerializeToString()


def generate_request(stream: bool) -> bytes:
    return generate_request_bytes(chat_request(stream), "openai", MODEL, 1)


async def sequential(send: Send, count: int, stream: bool) -> list[float]:
    return [await send(stream) for _ in range(count)]


async def fixed_rate(send: Send, rate: float, count: int) -> list[float]:
    out: list[float] = []

    async def one() -> None:
        out.append(await send(False))

    began = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return out


async def run(args: argparse.Namespace, mesh: Mesh) -> None:
    sock = mesh.sockets
    async with aiohttp.ClientSession() as tcp, \
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock["edge"]))) as edge_http:
        channels = {name: grpc.aio.insecure_channel(f"unix:{sock[name]}", options=CHANNEL_OPTIONS)
                    for name in ("providers", "envoy-providers", "router", "envoy-router")}
        timings = Timings()
        layers: list[tuple[str, Send, list[str]]] = [
            ("simulator", http_sender(tcp, f"{mesh.simulator_url}/v1/chat/completions", "sim"), []),
            ("provider worker", grpc_sender(channels["providers"], "switchyard.v1.Provider", "Generate",
                                            generate_request), ["providers"]),
            ("Envoy (providers)", grpc_sender(channels["envoy-providers"], "switchyard.v1.Provider", "Generate",
                                              generate_request), ["envoy"]),
            ("router", grpc_sender(channels["router"], "switchyard.v1.Router", "Chat", chat_request), ["router"]),
            ("Envoy (router)", grpc_sender(channels["envoy-router"], "switchyard.v1.Router", "Chat", chat_request),
             ["envoy"]),
            ("edge", http_sender(edge_http, "http://edge/v1/chat/completions", mesh.api_key), ["edge"]),
            ("Envoy (front)", http_sender(tcp, f"{mesh.base_url}/chat/completions", mesh.api_key, timings),
             ["envoy"]),
        ]
        rows = []
        for name, send, _ in layers:
            for _ in range(30):  # warm-up: sessions, pools, lazy imports
                await send(False)
                await send(True)
            timings.phase = "1 at a time"
            one = await sequential(send, args.requests, False)
            timings.phase = "streams, 1 at a time"
            ttft = await sequential(send, args.requests // 2, True)
            pids = [p.popen.pid for n, p in mesh.processes.items() if n != "nats" and p.popen is not None]
            cpu0 = cpu_seconds(pids)
            timings.phase = f"@{args.rate:.0f}/s"
            rated = await fixed_rate(send, args.rate, args.requests)
            timings.phase = ""
            cpu = (cpu_seconds(pids) - cpu0) / len(rated) * 1e6
            rows.append((name, pct(one, .5), pct(ttft, .5), pct(rated, .5), pct(rated, .99), cpu))
        for channel in channels.values():
            await channel.close()
    ms = 1000
    print(f"\nlatency budget per hop ({args.requests} requests per figure; 'adds' = this layer minus the one below)")
    print(f"{'layer':<20} {'1 at a time p50':>16} {'adds':>7} {'TTFT p50':>9} {'adds':>7} "
          f"{f'@{args.rate:.0f}/s p50':>10} {'adds':>7} {'p99':>7} {'CPU us/req':>11}")
    previous = None
    for name, one, ttft, rated50, rated99, cpu in rows:
        adds = [f"{(a - b) * ms:7.2f}" if previous else f"{'':>7}"
                for a, b in zip((one, ttft, rated50), previous or (0, 0, 0), strict=True)]
        print(f"{name:<20} {one * ms:16.2f} {adds[0]} {ttft * ms:9.2f} {adds[1]} {rated50 * ms:10.2f} {adds[2]} "
              f"{rated99 * ms:7.2f} {cpu:11,.0f}")
        previous = (one, ttft, rated50)
    print("(CPU: every mesh process and the simulator, per request at the fixed rate)")
    print_timings(timings)


def print_timings(timings: Timings) -> None:
    """p50 of each Server-Timing part, per phase (the public requests above)."""
    names = ["edge", "edge-router", "router", "router-provider", "provider", "upstream", "total"]
    print("\ntime to first output by hop, as each process measured it (Server-Timing p50, ms; "
          "front Envoy not included)")
    print(f"{'phase':<22}" + "".join(f"{name:>16}" for name in names) + f"{'overhead':>10}")
    for phase, rows in timings.by_phase.items():
        cells = [pct([row.get(name, 0.0) for row in rows], .5) for name in names]
        overhead = pct([row["total"] - row.get("upstream", 0.0) for row in rows], .5)
        print(f"{phase:<22}" + "".join(f"{cell:16.3f}" for cell in cells) + f"{overhead:10.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="sy-hops-"))
    mesh = Mesh(MeshSettings(run_dir=run_dir, public_port=0, api_key="sy_" + secrets.token_hex(20),
                             environ=isolated_environ(), extra_env={"SWITCHYARD_LOG_LEVEL": "WARNING"}))
    mesh.start()
    try:
        uvloop.run(run(args, mesh))
    finally:
        mesh.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
