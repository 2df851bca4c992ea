"""`make bench`: throughput, added latency and CPU per request of the full
mesh (Envoy front proxy, edge, router, provider worker, sidecar hops) against
the simulator, compared with calling the simulator directly.

Prints a table; it never passes or fails on time. The load generator is a
lean keep-alive HTTP/1.1 client on uvloop so that it steals as little CPU as
possible from the mesh on a small machine. Everything runs on 127.0.0.1 and
every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "services")]

import orjson  # noqa: E402
import uvloop  # noqa: E402
import yaml  # noqa: E402

from deploy.local.mesh import DEFAULT_CONFIG, Mesh, MeshSettings, isolated_environ  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
SLUG = "@bench3"


def bench_config(run_dir: Path) -> Path:
    """The shipped config plus a three-target fallback routing config."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["routes"]["bench3"] = {"targets": ["gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"]}
    path = run_dir / "bench.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class Target:
    host: str
    port: int
    path: str
    key: str


def build_request(target: Target, *, stream: bool, prompt: str, model: str = "gpt-4o-mini") -> bytes:
    body = orjson.dumps({"model": model, "stream": stream,
                         "messages": [{"role": "user", "content": prompt}]})
    head = (f"POST {target.path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
            f"Authorization: Bearer {target.key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection; reads Content-Length or chunked bodies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, target: Target) -> Connection:
        reader, writer = await asyncio.open_connection(target.host, target.port, limit=1 << 20)
        return cls(reader, writer)

    async def roundtrip(self, request: bytes) -> tuple[int, float | None, int]:
        """Send; return (status, seconds to first SSE content chunk or None, chunks)."""
        start = time.perf_counter()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            first: float | None = None
            chunks = 0
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                size = int(size_line.strip(), 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                if first is None and b'"content"' in data:
                    first = time.perf_counter() - start
                chunks += data.count(b"data: ")
            return status, first, chunks
        idx = lower.find(b"content-length:")
        length = int(lower[idx + 15: lower.find(b"\r\n", idx)])
        await self.reader.readexactly(length)
        return status, None, 1

    def close(self) -> None:
        self.writer.close()


@dataclass
class Result:
    count: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    seconds: float = 0.0


async def saturate(target: Target, seconds: float, concurrency: int, prompt: str, model: str = "gpt-4o-mini") -> Result:
    request = build_request(target, stream=False, prompt=prompt, model=model)
    result = Result()
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        conn = await Connection.open(target)
        try:
            while time.perf_counter() < stop_at:
                status, _, _ = await conn.roundtrip(request)
                result.count += 1
                result.errors += status != 200
        finally:
            conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - began
    return result


async def fixed_rate(target: Target, rate: float, seconds: float, *, stream: bool, prompt: str,
                     model: str = "gpt-4o-mini") -> Result:
    """Open-loop load: a request every 1/rate s on a pool of idle connections."""
    request = build_request(target, stream=stream, prompt=prompt, model=model)
    pool: list[Connection] = [await Connection.open(target) for _ in range(16)]
    result = Result()

    async def one() -> None:
        conn = pool.pop() if pool else await Connection.open(target)
        start = time.perf_counter()
        status, ttft, chunks = await conn.roundtrip(request)
        result.latencies.append(time.perf_counter() - start)
        if ttft is not None:
            result.ttfts.append(ttft)
        result.chunks.append(chunks)
        result.errors += status != 200
        result.count += 1
        pool.append(conn)

    tasks = []
    began = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - began
    for conn in pool:
        conn.close()
    return result


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(args: argparse.Namespace, mesh: Mesh) -> None:
    host = "127.0.0.1"
    via = Target(host, mesh.public_port, "/v1/chat/completions", mesh.api_key)
    direct = Target(host, mesh.simulator_port, "/v1/chat/completions", "sim")
    short = "hi"
    words = " ".join(f"w{i}" for i in range(args.stream_words))
    mesh_pids = [p.popen.pid for n, p in mesh.processes.items() if n in ("envoy", "edge", "router", "providers")]
    sim_pids = [mesh.processes["simulator"].popen.pid]

    await saturate(via, 2, args.concurrency, short)  # warm-up: connections, caches, JIT-free but lazy imports
    names = ["envoy", "edge", "router", "providers"]
    per0 = {n: cpu_seconds([mesh.processes[n].popen.pid]) for n in names}
    cpu0, sim0 = cpu_seconds(mesh_pids), cpu_seconds(sim_pids)
    sat = await saturate(via, args.seconds, args.concurrency, short)
    cpu1, sim1 = cpu_seconds(mesh_pids), cpu_seconds(sim_pids)
    per_process = ", ".join(
        f"{n} {(cpu_seconds([mesh.processes[n].popen.pid]) - per0[n]) / max(sat.count, 1) * 1e6:,.0f}" for n in names)
    direct_sat = await saturate(direct, args.seconds / 2, args.concurrency, short)

    lat_via = await fixed_rate(via, args.rate, args.seconds, stream=False, prompt=short)
    lat_direct = await fixed_rate(direct, args.rate, args.seconds, stream=False, prompt=short)
    st_via = await fixed_rate(via, args.rate, args.seconds, stream=True, prompt=words)
    st_direct = await fixed_rate(direct, args.rate, args.seconds, stream=True, prompt=words)

    # The same through a routing config with three targets (the first answers).
    slug0 = cpu_seconds(mesh_pids)
    slug_sat = await saturate(via, args.seconds, args.concurrency, short, model=SLUG)
    slug_cpu = (cpu_seconds(mesh_pids) - slug0) / max(slug_sat.count, 1) * 1e6
    slug_lat = await fixed_rate(via, args.rate, args.seconds, stream=False, prompt=short, model=SLUG)

    per_chunk_via = [(lat - t) / max(c - 2, 1) for lat, t, c in
                     zip(st_via.latencies, st_via.ttfts, st_via.chunks, strict=False)]
    per_chunk_direct = [(lat - t) / max(c - 2, 1) for lat, t, c in
                        zip(st_direct.latencies, st_direct.ttfts, st_direct.chunks, strict=False)]
    ms = 1000
    rows = [
        ("throughput, non-streaming (req/s)", f"{sat.count / sat.seconds:,.0f}",
         f"{direct_sat.count / direct_sat.seconds:,.0f} direct", ">= 2,000"),
        ("errors during saturation", f"{sat.errors}", "", "0"),
        ("  CPU per request by process (us)", "", per_process, ""),
        ("CPU per request, mesh processes (us)", f"{(cpu1 - cpu0) / max(sat.count, 1) * 1e6:,.0f}",
         f"simulator {(sim1 - sim0) / max(sat.count, 1) * 1e6:,.0f}", "<= 800"),
        (f"added latency p50 @ {args.rate:.0f} rps (ms)",
         f"{(pct(lat_via.latencies, .5) - pct(lat_direct.latencies, .5)) * ms:.2f}",
         f"{pct(lat_via.latencies, .5) * ms:.2f} vs {pct(lat_direct.latencies, .5) * ms:.2f}", "<= 2"),
        (f"added latency p99 @ {args.rate:.0f} rps (ms)",
         f"{(pct(lat_via.latencies, .99) - pct(lat_direct.latencies, .99)) * ms:.2f}",
         f"{pct(lat_via.latencies, .99) * ms:.2f} vs {pct(lat_direct.latencies, .99) * ms:.2f}", "<= 5"),
        ("added TTFT p50, streaming (ms)", f"{(pct(st_via.ttfts, .5) - pct(st_direct.ttfts, .5)) * ms:.2f}",
         f"{pct(st_via.ttfts, .5) * ms:.2f} vs {pct(st_direct.ttfts, .5) * ms:.2f}", "<= 2"),
        ("added time per later chunk p50 (ms)",
         f"{(statistics.median(per_chunk_via) - statistics.median(per_chunk_direct)) * ms:.3f}",
         f"{statistics.median(st_via.chunks):.0f} chunks/stream", "<= 0.2"),
        ("errors at fixed rate", f"{lat_via.errors + st_via.errors}", "", "0"),
        (f"{SLUG} (3-target fallback): req/s", f"{slug_sat.count / slug_sat.seconds:,.0f}",
         f"CPU {slug_cpu:,.0f} us/req", ""),
        (f"{SLUG}: added latency p50 / p99 (ms)",
         f"{(pct(slug_lat.latencies, .5) - pct(lat_direct.latencies, .5)) * ms:.2f}",
         f"p99 {(pct(slug_lat.latencies, .99) - pct(lat_direct.latencies, .99)) * ms:.2f}", ""),
        (f"errors via {SLUG}", f"{slug_sat.errors + slug_lat.errors}", "", "0"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'metric':<{width}}  {'switchyard':>12}  {'reference':<26}  target")
    print("-" * (width + 60))
    for name, value, ref, goal in rows:
        print(f"{name:<{width}}  {value:>12}  {ref:<26}  {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--stream-words", type=int, default=30)
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="sy-bench-"))
    mesh = Mesh(MeshSettings(run_dir=run_dir, public_port=0, api_key="sy_" + secrets.token_hex(20),
                             config_path=bench_config(run_dir),
                             environ=isolated_environ(),
                             extra_env={"SWITCHYARD_LOG_LEVEL": "WARNING"}))
    mesh.start()
    try:
        uvloop.run(run(args, mesh))
    finally:
        mesh.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
