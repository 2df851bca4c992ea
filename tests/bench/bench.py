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
import http.server
import itertools
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
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


GOVERNED_KEY_ENV = "SWITCHYARD_BENCH_GOVERNED_KEY"


def bench_config(run_dir: Path) -> Path:
    """The shipped config (response cache on) plus a three-target fallback
    routing config and a key whose rate limits and budget are on but never
    reached (every request pays admission and settlement)."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["routes"]["bench3"] = {"targets": ["gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"]}
    data["api_keys"].append({"id": "bench-governed", "key_env": GOVERNED_KEY_ENV, "tenant": "default",
                             "limits": {"rpm": 10**9, "tpm": 10**12},
                             "budgets": [{"usd": 10**9, "period": "monthly"}]})
    path = run_dir / "bench.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class Target:
    host: str
    port: int
    path: str
    key: str


def build_request(target: Target, *, stream: bool, prompt: str, model: str = "gpt-4o-mini",
                  greedy: bool = False) -> bytes:
    """``greedy``: temperature 0, so the response cache looks the request up
    (and stores the answer); without it the cache bypasses the request."""
    fields: dict[str, object] = {"model": model, "stream": stream,
                                 "messages": [{"role": "user", "content": prompt}]}
    if greedy:
        fields["temperature"] = 0
    body = orjson.dumps(fields)
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


Maker = Callable[[], bytes]


async def saturate(target: Target, seconds: float, concurrency: int, prompt: str, model: str = "gpt-4o-mini",
                   make: Maker | None = None) -> Result:
    """Closed loop on ``concurrency`` connections; ``make``: a new request
    each time (else the same one)."""
    request = build_request(target, stream=False, prompt=prompt, model=model)
    result = Result()
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        conn = await Connection.open(target)
        try:
            while time.perf_counter() < stop_at:
                status, _, _ = await conn.roundtrip(request if make is None else make())
                result.count += 1
                result.errors += status != 200
        finally:
            conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - began
    return result


async def fixed_rate(target: Target, rate: float, seconds: float, *, stream: bool, prompt: str,
                     model: str = "gpt-4o-mini", make: Maker | None = None) -> Result:
    """Open-loop load: a request every 1/rate s on a pool of idle connections."""
    request = build_request(target, stream=stream, prompt=prompt, model=model)
    pool: list[Connection] = [await Connection.open(target) for _ in range(16)]
    result = Result()

    async def one() -> None:
        conn = pool.pop() if pool else await Connection.open(target)
        payload = request if make is None else make()
        start = time.perf_counter()
        status, ttft, chunks = await conn.roundtrip(payload)
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


async def one_at_a_time(target: Target, count: int, *, stream: bool, prompt: str) -> Result:
    """``count`` requests one after another on one connection (no queueing anywhere)."""
    request = build_request(target, stream=stream, prompt=prompt)
    conn = await Connection.open(target)
    result = Result()
    try:
        for _ in range(count):
            start = time.perf_counter()
            status, ttft, _ = await conn.roundtrip(request)
            result.latencies.append(time.perf_counter() - start)
            if ttft is not None:
                result.ttfts.append(ttft)
            result.errors += status != 200
            result.count += 1
    finally:
        conn.close()
    return result


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def service_of(name: str) -> str:
    """``router-2`` → ``router``: replicas are summed per service."""
    base, _, index = name.rpartition("-")
    return base if index.isdigit() else name


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
    names = ["envoy", "edge", "router", "providers"]
    pids = {n: [p.popen.pid for name, p in mesh.processes.items() if service_of(name) == n] for n in names}
    mesh_pids = [pid for group in pids.values() for pid in group]
    sim_pids = [mesh.processes["simulator"].popen.pid]

    await saturate(via, 2, args.concurrency, short)  # warm-up: connections, caches, JIT-free but lazy imports
    per0 = {n: cpu_seconds(pids[n]) for n in names}
    cpu0, sim0 = cpu_seconds(mesh_pids), cpu_seconds(sim_pids)
    sat = await saturate(via, args.seconds, args.concurrency, short)
    cpu1, sim1 = cpu_seconds(mesh_pids), cpu_seconds(sim_pids)
    per_process = ", ".join(f"{n} {(cpu_seconds(pids[n]) - per0[n]) / max(sat.count, 1) * 1e6:,.0f}" for n in names)
    memory = ", ".join(f"{service_of(name)} {rss_mib(p.popen.pid):,.0f}" for name, p in mesh.processes.items()
                       if service_of(name) in (*names, "nats", "analytics") and not name[-1].isdigit())
    print(f"\nreplicas of edge, router, provider worker: {args.replicas}; NATS nodes: {args.nats_nodes}")
    print(f"saturation ({args.concurrency} connections, {args.seconds:g} s): "
          f"{sat.count / sat.seconds:,.0f} req/s, {sat.errors} errors; CPU per request (us): {per_process}; "
          f"simulator {(sim1 - sim0) / max(sat.count, 1) * 1e6:,.0f}")
    print(f"resident memory after saturation, one replica (MiB): {memory}")
    direct_sat = await saturate(direct, args.seconds / 2, args.concurrency, short)
    print(f"simulator called directly: {direct_sat.count / direct_sat.seconds:,.0f} req/s (this VM's speed now)")
    if args.throughput_only:
        return

    lat_via = await fixed_rate(via, args.rate, args.seconds, stream=False, prompt=short)
    lat_direct = await fixed_rate(direct, args.rate, args.seconds, stream=False, prompt=short)
    st_via = await fixed_rate(via, args.rate, args.seconds, stream=True, prompt=words)
    st_direct = await fixed_rate(direct, args.rate, args.seconds, stream=True, prompt=words)

    one_via = await one_at_a_time(via, args.sequential, stream=False, prompt=short)
    one_direct = await one_at_a_time(direct, args.sequential, stream=False, prompt=short)
    ttft_via = await one_at_a_time(via, args.sequential, stream=True, prompt=words)
    ttft_direct = await one_at_a_time(direct, args.sequential, stream=True, prompt=words)
    features = await feature_rows(args, mesh, via, mesh_pids)
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
        ("added TTFT p50, streaming @ rate (ms)", f"{(pct(st_via.ttfts, .5) - pct(st_direct.ttfts, .5)) * ms:.2f}",
         f"{pct(st_via.ttfts, .5) * ms:.2f} vs {pct(st_direct.ttfts, .5) * ms:.2f}", "<= 2"),
        ("added latency p50, 1 at a time (ms)",
         f"{(pct(one_via.latencies, .5) - pct(one_direct.latencies, .5)) * ms:.2f}",
         f"{pct(one_via.latencies, .5) * ms:.2f} vs {pct(one_direct.latencies, .5) * ms:.2f}", ""),
        ("added TTFT p50, 1 at a time (ms)", f"{(pct(ttft_via.ttfts, .5) - pct(ttft_direct.ttfts, .5)) * ms:.2f}",
         f"{pct(ttft_via.ttfts, .5) * ms:.2f} vs {pct(ttft_direct.ttfts, .5) * ms:.2f}", "<= 2"),
        ("added time per later chunk p50 (ms)",
         f"{(statistics.median(per_chunk_via) - statistics.median(per_chunk_direct)) * ms:.3f}",
         f"{statistics.median(st_via.chunks):.0f} chunks/stream", "<= 0.2"),
        ("errors at fixed rate and 1 at a time", f"{lat_via.errors + st_via.errors + one_via.errors + ttft_via.errors}",
         "", "0"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'metric':<{width}}  {'switchyard':>12}  {'reference':<26}  target")
    print("-" * (width + 60))
    for name, value, ref, goal in rows:
        print(f"{name:<{width}}  {value:>12}  {ref:<26}  {goal}")
    plain = features[0]
    direct50, direct99 = pct(lat_direct.latencies, .5), pct(lat_direct.latencies, .99)
    print(f"\nfeatures on and off (added latency: against the simulator direct, {direct50 * ms:.2f} / "
          f"{direct99 * ms:.2f} ms p50 / p99 at {args.rate:.0f} rps)")
    print(f"{'variant':<34} {'req/s':>7} {'CPU us/req':>11} {'vs plain':>9} {'added p50':>10} {'added p99':>10} "
          f"{'errors':>7}")
    for name, sat_f, cpu_f, lat_f in features:
        print(f"{name:<34} {sat_f.count / sat_f.seconds:7,.0f} {cpu_f:11,.0f} {cpu_f - plain[2]:+9,.0f} "
              f"{(pct(lat_f.latencies, .5) - direct50) * ms:10.2f} {(pct(lat_f.latencies, .99) - direct99) * ms:10.2f} "
              f"{sat_f.errors + lat_f.errors:7}")
    print("targets: added p50 <= 2 ms, p99 <= 5 ms; >= 2,000 req/s; <= 800 us CPU per request; "
          "no feature far from plain")


async def feature_rows(args: argparse.Namespace, mesh: Mesh, via: Target,
                       pids: list[int]) -> list[tuple[str, Result, float, Result]]:
    """(variant, saturation, mesh CPU us per request, fixed rate) for a plain
    model, a routing config, a key with limits and a budget, and cache misses."""
    governed = Target(via.host, via.port, via.path, mesh.environ[GOVERNED_KEY_ENV])
    unique = itertools.count()
    run = secrets.token_hex(4)

    def miss() -> bytes:  # a new greedy question: looked up, missed, then stored
        return build_request(via, stream=False, prompt=f"miss {run} {next(unique)}", greedy=True)

    variants: list[tuple[str, Target, str, Maker | None]] = [
        ("plain model (cache bypassed)", via, "gpt-4o-mini", None),
        (f"routing config {SLUG} (3 targets)", via, SLUG, None),
        ("key with rate limits + budget", governed, "gpt-4o-mini", None),
        ("cache on, every request a miss", via, "gpt-4o-mini", miss),
    ]
    rows = []
    for name, target, model, make in variants:
        await saturate(target, 1, args.concurrency, "hi", model=model, make=make)  # warm-up
        cpu0 = cpu_seconds(pids)
        sat = await saturate(target, args.seconds, args.concurrency, "hi", model=model, make=make)
        cpu = (cpu_seconds(pids) - cpu0) / max(sat.count, 1) * 1e6
        lat = await fixed_rate(target, args.rate, args.seconds, stream=False, prompt="hi", model=model, make=make)
        rows.append((name, sat, cpu, lat))
    return rows


class OtlpSink:
    """Accepts OTLP/HTTP exports and drops them (on its own thread), so that
    the exporters do their whole job while the load generator's loop stays free."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# name -> (metrics on, tracing at 100 % to an OTLP endpoint)
OBSERVABILITY = {"off": (False, False), "metrics": (True, False), "metrics + traces 100%": (True, True)}


async def cpu_per_request(args: argparse.Namespace, mesh: Mesh) -> tuple[float, float, dict[str, float]]:
    """(requests/s, CPU us per request over the mesh, per process) at saturation."""
    via = Target("127.0.0.1", mesh.public_port, "/v1/chat/completions", mesh.api_key)
    names = ["envoy", "edge", "router", "providers"]
    await saturate(via, 2, args.concurrency, "hi")  # warm-up
    before = {n: cpu_seconds([mesh.processes[n].popen.pid]) for n in names}
    sat = await saturate(via, args.seconds, args.concurrency, "hi")
    per = {n: (cpu_seconds([mesh.processes[n].popen.pid]) - before[n]) / max(sat.count, 1) * 1e6 for n in names}
    return sat.count / sat.seconds, sum(per.values()), per


def observability(args: argparse.Namespace) -> None:
    """CPU per request with metrics on and with tracing at 100 % sampling
    (OTLP/HTTP to a sink), against both off; meshes alternate per round so
    that the VM's drift hits every variant alike."""
    sink = OtlpSink()
    results: dict[str, list[tuple[float, float, dict[str, float]]]] = {name: [] for name in OBSERVABILITY}
    try:
        for _ in range(args.rounds):
            for name, (with_metrics, with_traces) in OBSERVABILITY.items():
                extra = {"SWITCHYARD_LOG_LEVEL": "WARNING", GOVERNED_KEY_ENV: "sy_" + secrets.token_hex(20)}
                if with_traces:
                    extra.update(OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint, OTEL_TRACES_SAMPLER="always_on")
                run_dir = Path(tempfile.mkdtemp(prefix="sy-bench-"))
                mesh = Mesh(MeshSettings(run_dir=run_dir, public_port=0, api_key="sy_" + secrets.token_hex(20),
                                         config_path=bench_config(run_dir), environ=isolated_environ(),
                                         extra_env=extra, metrics_port=0 if with_metrics else None))
                mesh.start()
                try:
                    results[name].append(uvloop.run(cpu_per_request(args, mesh)))
                finally:
                    mesh.stop()
                    shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        sink.close()
    base = statistics.median(r[1] for r in results["off"])
    print(f"\n{'observability':<24}  {'req/s':>7}  {'CPU/req (us)':>12}  {'vs off':>8}  by process (us)")
    print("-" * 100)
    for name, runs in results.items():
        rate, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        per = ", ".join(f"{n} {statistics.median(r[2][n] for r in runs):,.0f}" for n in runs[0][2])
        print(f"{name:<24}  {rate:>7,.0f}  {cpu:>12,.0f}  {cpu - base:>+8,.0f}  {per}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--stream-words", type=int, default=30)
    parser.add_argument("--sequential", type=int, default=200, help="requests sent one at a time, per figure")
    parser.add_argument("--observability", action="store_true",
                        help="only: CPU per request with metrics and with tracing at 100%% on, against off")
    parser.add_argument("--rounds", type=int, default=2, help="with --observability: meshes per variant")
    parser.add_argument("--replicas", type=int, default=1, help="replicas of edge, router and provider worker")
    parser.add_argument("--nats-nodes", type=int, default=1, choices=(1, 3), help="3: a JetStream cluster, R3")
    parser.add_argument("--throughput-only", action="store_true", help="only requests/s at saturation, CPU, memory")
    parser.add_argument("--providers-in-process", action="store_true",
                        help="routers run the provider worker's code (SWITCHYARD_ROUTER_PROVIDERS_IN_PROCESS=1)")
    args = parser.parse_args()
    if args.observability:
        observability(args)
        return
    run_dir = Path(tempfile.mkdtemp(prefix="sy-bench-"))
    mesh = Mesh(MeshSettings(run_dir=run_dir, public_port=0, api_key="sy_" + secrets.token_hex(20),
                             config_path=bench_config(run_dir),
                             environ=isolated_environ(),
                             edge_replicas=args.replicas, router_replicas=args.replicas,
                             provider_replicas=args.replicas, nats_nodes=args.nats_nodes,
                             extra_env={"SWITCHYARD_LOG_LEVEL": "WARNING",
                                        GOVERNED_KEY_ENV: "sy_" + secrets.token_hex(20),
                                        "SWITCHYARD_ROUTER_PROVIDERS_IN_PROCESS": "1" if args.providers_in_process
                                        else "0"}, metrics_port=None))
    mesh.start()
    try:
        uvloop.run(run(args, mesh))
    finally:
        mesh.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
