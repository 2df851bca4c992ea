"""`make bench`: the response cache. Prints figures; never fails.

1. In process, against a real nats-server: the router pipeline's CPU per
   request with the cache off, for a request the cache bypasses (sampled),
   a miss (lookup + stored answer) and a hit, one request at a time and 16
   at a time (NATS round trips share socket writes under concurrency).
2. Through the mesh (shipped config, cache on): a hit's latency at a fixed
   rate and its throughput at saturation against the simulator called
   directly, misses and uncached requests; the router process's CPU per
   hit, per miss and per uncached request.

    .venv/bin/python tests/bench/bench_cache.py [--requests 5000] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

import orjson  # noqa: E402
import uvloop  # noqa: E402

from deploy.local.mesh import Mesh, MeshSettings, isolated_environ  # noqa: E402
from deploy.local.probes import bin_path, free_port, tcp_open  # noqa: E402
from router.breaker import BreakerBoard, breaker_settings  # noqa: E402
from router.cache import ResponseCache  # noqa: E402
from router.cache_store import CacheStore  # noqa: E402
from router.pipeline import Pipeline  # noqa: E402
from router.routes import RoutingTable  # noqa: E402
from switchyard.config import parse_config  # noqa: E402
from switchyard.v1 import chat_pb2 as pb  # noqa: E402
from switchyard.v1 import provider_pb2 as ppb  # noqa: E402
from switchyard.v1 import usage_pb2 as upb  # noqa: E402
from tests.bench.bench import Connection, Target, cpu_seconds, pct  # noqa: E402

CONFIG = 'providers:\n  a: {type: openai, base_url: "http://127.0.0.1:1/v1", models: [m1]}\n'
EVENTS = [ppb.GenerateEvent(chunk=pb.Chunk(choices=[pb.ChoiceDelta(index=0, content="hello there",
                                                                   finish_reason="stop")])).SerializeToString(),
          ppb.GenerateEvent(usage=pb.Usage(prompt_tokens=5, completion_tokens=2, cost_usd=1e-6)).SerializeToString()]


async def provider(request: bytes, timeout_s: float | None = None) -> AsyncIterator[bytes]:
    for event in EVENTS:
        yield event


class Sink:
    def record(self, event: upb.UsageEvent, headers: Mapping[str, str] | None = None) -> None:
        event.SerializeToString()


def request_bytes(prompt: str, *, greedy: bool = True) -> bytes:
    request = pb.ChatRequest(request_id=secrets.token_hex(8), model="m1",
                             messages=[pb.Message(role="user", text=prompt)], identity=pb.Identity(tenant="t"))
    if greedy:
        request.sampling.temperature = 0
    return request.SerializeToString()


async def drain(pipeline: Pipeline, payload: bytes) -> None:
    async for _ in pipeline.stream(payload, None):
        pass


async def cpu_us(pipeline: Pipeline, payloads: Callable[[int], bytes], count: int, parallel: int,
                 store: CacheStore | None = None) -> float:
    began = time.process_time()
    for start in range(0, count, parallel):
        await asyncio.gather(*(drain(pipeline, payloads(i)) for i in range(start, min(start + parallel, count))))
    if store is not None:  # the writes are router CPU too
        while store._queue:
            await asyncio.sleep(0.001)
    return (time.process_time() - began) / count * 1e6


async def in_process(count: int, rounds: int = 9) -> None:
    folder = Path(tempfile.mkdtemp(prefix="sy-bench-nats-"))
    port = free_port()
    server = subprocess.Popen([bin_path("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd",
                               str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not tcp_open(port):
            await asyncio.sleep(0.02)
        store = CacheStore(f"nats://127.0.0.1:{port}", max_bytes=256 << 20, max_age_s=3600, lookup_timeout_s=1)
        await store.start()
        while not (store.available and store.index.complete):
            await asyncio.sleep(0.02)
        off = RoutingTable(parse_config(CONFIG))
        on = RoutingTable(parse_config(CONFIG + "cache: {ttl_s: 3600}\n"))
        breakers = BreakerBoard(*breaker_settings(off.config))
        cache_off = Pipeline(lambda: off, provider, Sink(), breakers)
        cache_on = Pipeline(lambda: on, provider, Sink(), breakers, cache=ResponseCache(store))
        hit = request_bytes("the same question")
        await drain(cache_on, hit)
        unique = itertools.count()
        cases: list[tuple[str, Pipeline, Callable[[int], bytes], CacheStore | None]] = [
            ("cache off", cache_off, lambda i: request_bytes(f"question {next(unique)}"), None),
            ("bypassed (sampled)", cache_on, lambda i: request_bytes(f"question {next(unique)}", greedy=False), None),
            ("miss: lookup + store", cache_on, lambda i: request_bytes(f"question {next(unique)}"), store),
            ("hit", cache_on, lambda i: hit, None),
        ]
        print(f"\nresponse cache in the router pipeline, in process, real nats-server: CPU us per request, "
              f"median of {rounds} interleaved rounds of {count // rounds:,}")
        print(f"{'case':<24} {'1 at a time':>12} {'over off':>9} {'16 at a time':>13} {'over off':>9}")
        results: dict[tuple[str, int], list[float]] = {}
        for parallel in (1, 16):
            for _name, pipeline, payloads, writes in cases:  # warm-up
                await cpu_us(pipeline, payloads, 200, parallel, writes)
            for _ in range(rounds):  # interleaved: the machine's drift hits every case alike
                for name, pipeline, payloads, writes in cases:
                    value = await cpu_us(pipeline, payloads, count // rounds, parallel, writes)
                    results.setdefault((name, parallel), []).append(value)
        median = {key: statistics.median(values) for key, values in results.items()}
        for name, *_ in cases:
            one, many = median[(name, 1)], median[(name, 16)]
            print(f"{name:<24} {one:12.1f} {one - median[('cache off', 1)]:9.1f} {many:13.1f} "
                  f"{many - median[('cache off', 16)]:9.1f}")
        print(f"NATS round trips: {store.fetched}; writes {store.written}, dropped {store.dropped}")
        print("targets: a miss <= 50 us over cache off; a hit below a miss")
        await store.close()
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------ mesh --


def http_request(target: Target, body: dict, headers: dict[str, str] | None = None) -> bytes:
    data = orjson.dumps(body)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (f"POST {target.path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
            f"Authorization: Bearer {target.key}\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(data)}\r\n\r\n")
    return head.encode() + data


def body(prompt: str) -> dict:
    return {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": prompt}]}


async def saturate(target: Target, make: Callable[[int], bytes], seconds: float, concurrency: int,
                   ) -> tuple[int, int, float]:
    """(requests, errors, seconds) with ``concurrency`` keep-alive connections."""
    counter = itertools.count()
    done = errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, errors
        conn = await Connection.open(target)
        try:
            while time.perf_counter() < stop_at:
                status, _, _ = await conn.roundtrip(make(next(counter)))
                done += 1
                errors += status != 200
        finally:
            conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, errors, time.perf_counter() - began


async def latencies(target: Target, request: bytes, rate: float, seconds: float) -> list[float]:
    pool = [await Connection.open(target) for _ in range(8)]
    out: list[float] = []

    async def one() -> None:
        conn = pool.pop() if pool else await Connection.open(target)
        began = time.perf_counter()
        status, _, _ = await conn.roundtrip(request)
        if status == 200:
            out.append(time.perf_counter() - began)
        pool.append(conn)

    tasks = []
    began = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    for conn in pool:
        conn.close()
    return out


async def through_mesh(mesh: Mesh, seconds: float, concurrency: int, rate: float) -> None:
    via = Target("127.0.0.1", mesh.public_port, "/v1/chat/completions", mesh.api_key)
    direct = Target("127.0.0.1", mesh.simulator_port, "/v1/chat/completions", "sim")
    router = [mesh.processes["router"].popen.pid]
    run = secrets.token_hex(4)
    hit = http_request(via, body(f"cached question {run}"))
    await saturate(via, lambda i: hit, 2, concurrency)  # warm-up, and the entry is stored
    kinds = {
        "hit": lambda i: hit,
        "miss (stored)": lambda i: http_request(via, body(f"miss {run} {i}")),
        "uncached (no-cache, no-store)": lambda i: http_request(via, body(f"nocache {run} {i}"),
                                                                {"Cache-Control": "no-cache, no-store"}),
    }
    rows = []
    for name, make in kinds.items():
        cpu0 = cpu_seconds(router)
        done, errors, took = await saturate(via, make, seconds, concurrency)
        rows.append((name, done / took, (cpu_seconds(router) - cpu0) / max(done, 1) * 1e6, errors))
    direct_done, _, direct_took = await saturate(direct, lambda i: http_request(direct, body("cached question")),
                                                 seconds / 2, concurrency)
    hit_lat = await latencies(via, hit, rate, seconds)
    direct_lat = await latencies(direct, http_request(direct, body("cached question")), rate, seconds)
    ms = 1000
    print(f"\nresponse cache through the mesh (saturation: {concurrency} connections, {seconds:.0f} s each)")
    print(f"{'requests':<32} {'req/s':>8} {'router CPU us/req':>18} {'errors':>7}")
    for name, throughput, cpu, errors in rows:
        print(f"{name:<32} {throughput:8,.0f} {cpu:18,.0f} {errors:7}")
    print(f"{'simulator direct':<32} {direct_done / direct_took:8,.0f}")
    print(f"\nhit latency at {rate:.0f} req/s: p50 {pct(hit_lat, .5) * ms:.2f} ms, "
          f"p99 {pct(hit_lat, .99) * ms:.2f} ms; simulator direct p50 {pct(direct_lat, .5) * ms:.2f} ms, "
          f"p99 {pct(direct_lat, .99) * ms:.2f} ms")
    print(f"target: hit p50 < direct p50 + 1 ms = {(pct(direct_lat, .5) + 0.001) * ms:.2f} ms; "
          "router CPU of a hit < a miss; a miss <= 50 us router CPU over an uncached request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=9000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--no-mesh", action="store_true", help="only the in-process figures")
    args = parser.parse_args()
    uvloop.run(in_process(args.requests))
    if args.no_mesh:
        return
    run_dir = Path(tempfile.mkdtemp(prefix="sy-bench-"))
    mesh = Mesh(MeshSettings(run_dir=run_dir, public_port=0, api_key="sy_" + secrets.token_hex(20),
                             environ=isolated_environ(), extra_env={"SWITCHYARD_LOG_LEVEL": "WARNING"}))
    mesh.start()
    try:
        uvloop.run(through_mesh(mesh, args.seconds, args.concurrency, args.rate))
    finally:
        mesh.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
