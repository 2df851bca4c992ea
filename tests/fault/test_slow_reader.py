"""Slow SSE readers: clients that ask for a long stream and do not read it
cost the edge a bounded amount of memory, end with an error event (no
[DONE]), cancel their upstream request, and leave other clients unaffected.
(Before: the edge queued every event for them; +46 MB for two 40 MB streams.)"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh, MeshSettings, isolated_environ
from tests.e2e.conftest import marker, running_mesh, write_test_config
from tests.fault.rawhttp import chat_request, connect, parse
from tests.fault.test_replicas import run_stream

BUFFER = 64 * 1024  # limits.max_stream_buffer_bytes in this mesh
SLOW_CLIENTS = 3
# The simulator answers with the prompt's words, repeated: 20 words of 2,000
# characters make a ~17 MB answer of 10,000 chunks for each slow client, at
# about 1 ms a chunk, so a cancel well before the end is visible upstream.
PROMPT_WORDS = " ".join(["w" * 2000] * 20)
WORDS = 10_000
# Growth of the edge's resident memory allowed while the slow clients are
# attached: their buffers (3 x 64 KiB plus the closing event) and allocator
# noise. Without the bound the edge held every event: tens of MB here.
RSS_GROWTH_BOUND = 12 * 1024 * 1024


@pytest.fixture(scope="module")
def buffered_mesh() -> Iterator[Mesh]:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-s-"))
    config = write_test_config(run_dir, "sy_" + "s" * 40)
    data = yaml.safe_load(config.read_text())
    data["limits"]["max_stream_buffer_bytes"] = BUFFER
    data["providers"]["openai"]["timeouts"] = {"first_token_s": 30, "between_chunks_s": 30, "total_s": 120}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=config,
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ())
    with running_mesh(settings) as mesh:
        yield mesh


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def upstream_outcome(mesh: Mesh, tag: str) -> dict:
    """The simulator's record of the upstream request, once it has ended."""
    async with aiohttp.ClientSession() as http, http.get(
            f"{mesh.simulator_url}/_sim/wait", params={"contains": tag, "state": "finished", "timeout": "30"}) as r:
        assert r.status == 200, f"the upstream request for {tag} never ended"
        return await r.json()


async def test_slow_readers_are_cut_at_a_memory_bound_and_others_are_served(buffered_mesh: Mesh) -> None:
    mesh = buffered_mesh
    edge_pid = mesh.processes["edge"].popen.pid
    async with AsyncOpenAI(base_url=mesh.base_url, api_key=mesh.api_key, max_retries=0, timeout=60) as client:
        assert await run_stream(client, f"{marker()} warm-up [[sim tokens=50]]") == "ok"
        baseline = rss_bytes(edge_pid)

        tags = [marker() for _ in range(SLOW_CLIENTS)]
        slow = []
        for tag in tags:
            head, body = chat_request(mesh.api_key, {"model": "gpt-4o-mini", "stream": True, "messages": [
                {"role": "user", "content": f"{tag} {PROMPT_WORDS} [[sim tokens={WORDS} chunk_delay_ms=1]]"}]})
            reader, writer = await connect(mesh.public_port, rcvbuf=4096)
            writer.write(head + body)
            slow.append((reader, writer))
        try:
            # Others are served while the slow clients hold their streams unread.
            others = await asyncio.gather(*(run_stream(client, f"{marker()} other [[sim tokens=30]]")
                                            for _ in range(5)))
            assert others == ["ok"] * 5
            outcomes = await asyncio.gather(*(upstream_outcome(mesh, tag) for tag in tags))
            grown = rss_bytes(edge_pid) - baseline
            print(f"edge RSS growth with {SLOW_CLIENTS} slow readers of ~17 MB streams: {grown / 2**20:.1f} MiB")
            assert grown < RSS_GROWTH_BOUND
            # The edge cancelled each stream's upstream request well before its end
            # (what it had sent fills the proxy's and the kernel's buffers first).
            print("upstream chunks sent before the cancel:", [o["chunks_sent"] for o in outcomes], "of", WORDS)
            for outcome in outcomes:
                assert outcome["disconnected_at"] is not None
                assert outcome["chunks_sent"] < WORDS * 0.8
            # A slow client that finally reads finds an error event, and no [DONE].
            for reader, _ in slow:
                async with asyncio.timeout(30):
                    answer = parse(await reader.read())
                assert answer.status == 200
                assert b'"code":"client_too_slow"' in answer.body
                assert b"[DONE]" not in answer.body
        finally:
            for _, writer in slow:
                writer.close()
        # And the mesh serves as before.
        assert await run_stream(client, f"{marker()} after [[sim tokens=30]]") == "ok"
