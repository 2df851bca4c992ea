"""KILL-WORKER and DRAIN from RELIABILITY.md, scaled to a test: streams in
flight while a provider worker is SIGKILLed or a router replica is drained."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import aiohttp
import openai
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh
from switchyard.shutdown import STOP_CANCEL_S, STOP_CLEANUP_S, STOP_MARGIN_S
from tests.e2e.conftest import marker
from tests.e2e.test_chat import sim_requests
from tests.fault.conftest import DRAIN_GRACE_S


async def wait_received(mesh: Mesh, tag: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(
            f"{mesh.simulator_url}/_sim/wait", params={"contains": tag, "state": "received", "timeout": "20"}) as r:
        assert r.status == 200, f"upstream never saw {tag}"


async def run_stream(client: AsyncOpenAI, prompt: str, first_token: asyncio.Event | None = None) -> str:
    """'ok' for a complete answer, 'error' for a stream that ended in an error."""
    try:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": prompt}])
        finished = False
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content and first_token is not None:
                first_token.set()
            if chunk.choices and chunk.choices[0].finish_reason:
                finished = True
        return "ok" if finished else "truncated"
    except openai.APIError:
        return "error"


def socket_owner(port: int, pids: dict[str, int]) -> str | None:
    """Which of ``pids`` holds the local TCP port ``port`` (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    for name, pid in pids.items():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).removeprefix("socket:[").rstrip("]") in inodes:
                    return name
    return None


async def test_killed_provider_worker(replicated_mesh: Mesh, fault_client: AsyncOpenAI) -> None:
    mesh = replicated_mesh
    # Ten streams waiting for their first token, ten already streaming.
    waiting_tags = [marker() for _ in range(10)]
    waiting = [asyncio.create_task(run_stream(fault_client, f"{t} [[sim delay_ms=1500]]")) for t in waiting_tags]
    started = [asyncio.Event() for _ in range(10)]
    streaming_tags = [marker() for _ in range(10)]
    streaming = [asyncio.create_task(run_stream(fault_client, f"{t} [[sim tokens=150 chunk_delay_ms=20]]", e))
                 for t, e in zip(streaming_tags, started, strict=True)]
    await asyncio.gather(*(wait_received(mesh, t) for t in waiting_tags))
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 20)

    # Kill the worker that carries the first stream, so the kill is known to cut something.
    [first] = await sim_requests(mesh, streaming_tags[0])
    pids = {name: mesh.processes[name].popen.pid for name in mesh.providers}
    victim = socket_owner(first["peer_port"], pids)
    assert victim is not None, "no provider worker holds the stream's upstream connection"
    mesh.processes[victim].signal(signal.SIGKILL)

    async with asyncio.timeout(60):  # no hangs
        waiting_results = await asyncio.gather(*waiting)
        streaming_results = await asyncio.gather(*streaming)
    # Before the first token a dead worker is invisible: the attempt runs again
    # on the surviving replica.
    assert waiting_results == ["ok"] * 10
    # Mid-stream, a stream on the dead worker ends with an error event; none
    # is shown as a clean, truncated success.
    assert set(streaming_results) <= {"ok", "error"}
    assert "error" in streaming_results  # the killed worker was carrying some of them
    # The mesh keeps serving.
    again = await fault_client.chat.completions.create(model="gpt-4o-mini",
                                                       messages=[{"role": "user", "content": "still there?"}])
    assert again.choices[0].finish_reason == "stop"


async def test_drained_router_loses_no_request(replicated_mesh: Mesh, fault_client: AsyncOpenAI) -> None:
    mesh = replicated_mesh
    started = [asyncio.Event() for _ in range(10)]
    in_flight = [asyncio.create_task(run_stream(fault_client, f"{marker()} [[sim tokens=60 chunk_delay_ms=25]]", e))
                 for e in started]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 20)

    draining = mesh.processes["router"].popen  # the launcher starts a new one once it has exited
    mesh.processes["router"].signal(signal.SIGTERM)
    # New requests keep arriving while the replica drains.
    arriving = []
    for _ in range(20):
        arriving.append(asyncio.create_task(run_stream(fault_client, f"{marker()} [[sim tokens=5]]")))
        await asyncio.sleep(0.05)

    async with asyncio.timeout(60):
        results = await asyncio.gather(*in_flight, *arriving)
    assert results == ["ok"] * 30
    # It exits within the shutdown bound (in practice within a second or two
    # of its last stream); exit 0 means no backstop had to end it.
    bound = DRAIN_GRACE_S + STOP_CANCEL_S + STOP_CLEANUP_S + STOP_MARGIN_S
    exit_code = await asyncio.to_thread(draining.wait, bound)
    # On a failure, the drained router's last log lines: its shutdown phases and,
    # if the backstop ended it, every thread's stack.
    log_tail = mesh.processes["router"].log_path.read_text(errors="replace")[-12_000:]
    assert exit_code == 0, log_tail
