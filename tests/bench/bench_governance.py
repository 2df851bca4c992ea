"""Admission with limits on, in process against a real nats-server (the
shared store two router replicas use): router CPU per request for admit +
settle, throughput at saturation and added latency at 100 req/s, with one hot
key and with 1,000 keys; also a flood of refused requests. Two governors
stand for two router replicas sharing the store. Prints figures; never fails.

    .venv/bin/python tests/bench/bench_governance.py [--requests 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

import uvloop  # noqa: E402

from router.governance import BUCKETS, BUDGETS_BUCKET, LIMITS_BUCKET, Governor  # noqa: E402
from router.ledger import Buckets, Ledger  # noqa: E402
from router.routes import RoutingTable  # noqa: E402
from switchyard.config import parse_config  # noqa: E402
from switchyard.v1 import chat_pb2 as pb  # noqa: E402
from tests.unit.switchyard.test_events import NatsServer  # noqa: E402

CONFIG = """
providers:
  a:
    type: openai
    base_url: "http://127.0.0.1:1/v1"
    models: [{id: gpt-4o-mini, max_output_tokens: 1000}]
"""
TABLE = RoutingTable(parse_config(CONFIG))
PLAN = TABLE.plan("gpt-4o-mini")


def request(key: str, n: int, *, rpm: int = 10**9, tpm: int = 10**12, usd: float = 10**6,
            limited: bool = True) -> pb.ChatRequest:
    out = pb.ChatRequest(request_id=f"{key}-{n}-{time.monotonic_ns()}", model="gpt-4o-mini",
                         messages=[pb.Message(role="user", text="hello there, how are you?")])
    out.identity.key_id, out.identity.tenant = key, "bench"
    if limited:
        out.identity.key_limit.rpm, out.identity.key_limit.tpm = rpm, tpm
        out.identity.budgets.add(usd=usd, period="daily", scope="key")
    return out


async def one(governor: Governor, req: pb.ChatRequest) -> bool:
    try:
        grant = await governor.admit(req, PLAN, TABLE)
    except Exception:
        return False
    if grant is not None:
        governor.settle(grant, pb.Usage(prompt_tokens=10, completion_tokens=20, cost_usd=1e-5))
    return True


async def saturate(governors: list[Governor], make, count: int, concurrency: int) -> tuple[float, float, int]:
    """(requests/s, router CPU µs per request, admitted) with ``concurrency`` requests in flight."""
    queue = iter(range(count))
    admitted = 0

    async def worker(w: int) -> None:
        nonlocal admitted
        for i in queue:
            ok = await one(governors[(w + i) % len(governors)], make(i))
            admitted += ok

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    for governor in governors:
        await governor.close()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return count / wall, cpu / count * 1e6, admitted


async def paced(governors: list[Governor], make, count: int, rate: float) -> tuple[float, float]:
    """Admission latency p50/p99 (ms) at ``rate`` requests/s."""
    latencies: list[float] = []

    async def timed(i: int) -> None:
        began = time.perf_counter()
        await one(governors[i % len(governors)], make(i))
        latencies.append((time.perf_counter() - began) * 1000)

    tasks = []
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed(i)))
    await asyncio.gather(*tasks)
    latencies.sort()
    return statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


async def main(requests: int) -> None:
    server = NatsServer()
    await server.start()
    opened: list[Buckets] = []

    async def replicas() -> list[Governor]:
        out = []
        for _ in range(2):
            buckets = Buckets(server.url, BUCKETS)
            await buckets.start(wait_s=10)
            opened.append(buckets)
            out.append(Governor(Ledger(lambda b=buckets: b.kv(LIMITS_BUCKET), buckets.connected),
                                Ledger(lambda b=buckets: b.kv(BUDGETS_BUCKET), buckets.connected)))
        return out

    scenarios = [
        ("no limits (fast path)", lambda i: request("free", i, limited=False)),
        ("one hot key: rpm+tpm+budget", lambda i: request("hot", i)),
        ("1,000 keys: rpm+tpm+budget", lambda i: request(f"k{i % 1000}", i)),
        ("refusal flood (rpm=1, one key)", lambda i: request("flooded", i, rpm=1)),
    ]
    try:
        print(f"{'scenario':<34} {'req/s':>8} {'CPU µs/req':>11} {'admitted':>9} {'p50 ms @100/s':>14} "
              f"{'p99 ms @100/s':>14}")
        for name, make in scenarios:
            rps, cpu, admitted = await saturate(await replicas(), make, requests, 64)
            p50, p99 = await paced(await replicas(), make, 300, 100.0)
            print(f"{name:<34} {rps:>8,.0f} {cpu:>11,.0f} {admitted:>9,} {p50:>14.2f} {p99:>14.2f}")
    finally:
        for buckets in opened:
            await buckets.close()
        server.remove()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    uvloop.run(main(parser.parse_args().requests))
