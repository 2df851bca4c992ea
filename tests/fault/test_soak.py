"""SOAK (RELIABILITY.md): mixed load — answers, streams, clients leaving
mid-stream, upstream refusals and malformed requests — for a while, against
one mesh. Under the same load, no service's memory keeps growing and, once
the load stops, no descriptor is left open.

``make test`` runs 40 s of it; ``make soak`` runs the catalogue's 5 minutes
(``SWITCHYARD_SOAK_S``) and prints the figures."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from deploy.local.mesh import Mesh, MeshSettings, isolated_environ
from tests.e2e.conftest import running_mesh, write_test_config

SOAK_S = float(os.environ.get("SWITCHYARD_SOAK_S", "40"))
WATCHED = ("edge", "router", "providers", "envoy")
PROMPTS = 40  # a fixed set: the response cache and the pools reach their steady size during the warm-up
MAX_GROWTH_MIB = 4.0  # per service, between the first and the last third (a 1 KiB-per-request leak shows as ~5)
MAX_NEW_FDS = 8


@pytest.fixture(scope="module")
def soak_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    run_dir = tmp_path_factory.mktemp("sy-soak", numbered=True)
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=write_test_config(run_dir, "sy_" + "s" * 40),
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ(),
                            extra_env={"SWITCHYARD_LOG_LEVEL": "WARNING"})
    with running_mesh(settings) as mesh:
        yield mesh


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def one(http: aiohttp.ClientSession, mesh: Mesh, n: int) -> str:
    kind = ("ok", "stream", "leave", "refused", "malformed")[n % 5]
    prompt = f"soak {n % PROMPTS}"
    body: bytes
    if kind == "malformed":
        body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": '  # cut short
    else:
        text = {"refused": f"{prompt} [[sim status=400]]", "leave": f"{prompt} [[sim tokens=40 chunk_delay_ms=5]]"}
        body = orjson.dumps({"model": "gpt-4o-mini", "stream": kind in ("stream", "leave"), "temperature": 0,
                             "messages": [{"role": "user", "content": text.get(kind, prompt)}]})
    headers = {"Authorization": f"Bearer {mesh.api_key}", "Content-Type": "application/json"}
    async with http.post(f"{mesh.base_url}/chat/completions", data=body, headers=headers) as reply:
        if kind == "leave":
            assert reply.status == 200
            await reply.content.readline()
            reply.close()  # the client goes away mid-stream
            return kind
        await reply.read()
        assert reply.status == {"refused": 400, "malformed": 400}.get(kind, 200), (kind, reply.status)
    return kind


async def load(mesh: Mesh, seconds: float, samples: list[dict[str, float]], sample_every: float) -> int:
    pids = {name: mesh.processes[name].popen.pid for name in WATCHED}  # type: ignore[union-attr]
    deadline = time.monotonic() + seconds
    counter = itertools.count()
    sent = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async def worker() -> None:
            nonlocal sent
            while time.monotonic() < deadline:
                await one(http, mesh, next(counter))
                sent += 1

        async def sampler() -> None:
            while time.monotonic() < deadline:
                samples.append({name: rss_mib(pid) for name, pid in pids.items()})
                await asyncio.sleep(sample_every)

        await asyncio.gather(sampler(), *(worker() for _ in range(12)))
    return sent


async def test_memory_stays_flat_and_nothing_leaks_under_mixed_load(soak_mesh: Mesh) -> None:
    mesh = soak_mesh
    pids = {name: mesh.processes[name].popen.pid for name in WATCHED}  # type: ignore[union-attr]
    warm: list[dict[str, float]] = []
    await load(mesh, min(10.0, SOAK_S / 4), warm, 1.0)  # pools, caches and allocators reach their size
    fds_before = {name: open_fds(pid) for name, pid in pids.items()}
    samples: list[dict[str, float]] = []
    sent = await load(mesh, SOAK_S, samples, SOAK_S / 30)
    third = max(1, len(samples) // 3)
    growth = {name: (sum(s[name] for s in samples[-third:]) - sum(s[name] for s in samples[:third])) / third
              for name in WATCHED}
    # Descriptors: every connection of the soak closed once the load stopped (idle keep-alives aside).
    async with asyncio.timeout(15):
        while any(open_fds(pid) > fds_before[name] + MAX_NEW_FDS for name, pid in pids.items()):
            await asyncio.sleep(0.2)
    fds_after = {name: open_fds(pid) for name, pid in pids.items()}
    print(f"\nSOAK {SOAK_S:.0f} s, {sent} requests: memory growth (MiB, last third - first third) "
          + ", ".join(f"{n} {g:+.1f}" for n, g in growth.items())
          + "; descriptors before/after " + ", ".join(f"{n} {fds_before[n]}/{fds_after[n]}" for n in WATCHED))
    assert sent > 100
    assert all(g <= MAX_GROWTH_MIB for g in growth.values()), growth
