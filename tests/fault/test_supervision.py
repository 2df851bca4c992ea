"""The mesh survives its own parts dying: the launcher restarts a SIGKILLed
service with back-off, the mesh serves again within a bound, streams that do
not pass through the dead part keep going, and a service that keeps dying
stops the mesh with a message."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh, MeshSettings, isolated_environ
from deploy.local.process import Process
from deploy.local.supervisor import RestartPolicy, Supervisor
from tests.e2e.conftest import marker, running_mesh, write_test_config
from tests.e2e.test_usage import usage_events
from tests.fault.test_replicas import run_stream

RECOVERY_BOUND_S = 30  # restart back-off + a Python service's start-up, on a loaded 2-core machine


@pytest.fixture(scope="module")
def single_mesh() -> Iterator[Mesh]:
    """One replica of everything: nothing to fail over to, so only a restart brings it back."""
    run_dir = Path(tempfile.mkdtemp(prefix="sy-s-"))
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=write_test_config(run_dir, "sy_" + "s" * 40),
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ())
    with running_mesh(settings) as mesh:
        yield mesh


@pytest.fixture
async def client(single_mesh: Mesh) -> AsyncOpenAI:
    async with AsyncOpenAI(base_url=single_mesh.base_url, api_key=single_mesh.api_key, max_retries=0,
                           timeout=30) as c:
        yield c


async def sigkill(mesh: Mesh, name: str) -> None:
    """SIGKILL a service and wait until that process is gone."""
    process = mesh.processes[name]
    dead = process.popen
    assert dead is not None and process.alive()
    process.signal(signal.SIGKILL)
    await asyncio.to_thread(dead.wait, 10)


async def ask(client: AsyncOpenAI) -> str:
    completion = await client.chat.completions.create(model="gpt-4o-mini",
                                                      messages=[{"role": "user", "content": "are you back?"}])
    return completion.choices[0].finish_reason


async def serves_again(client: AsyncOpenAI, mesh: Mesh, name: str, restarts_before: int) -> tuple[float, set[int]]:
    """Seconds until a request succeeds again, and the statuses of the failures
    meanwhile (each a prompt HTTP error, never a hang)."""
    started = time.monotonic()
    statuses: set[int] = set()
    async with asyncio.timeout(RECOVERY_BOUND_S):
        while True:
            try:
                if await asyncio.wait_for(ask(client), 10) == "stop":
                    break
            except openai.APIStatusError as exc:
                statuses.add(exc.status_code)
            await asyncio.sleep(0.1)
    assert mesh.restarts[name] == restarts_before + 1
    assert "restarted" in (mesh.settings.run_dir / "logs" / "launcher.log").read_text()
    return time.monotonic() - started, statuses


@pytest.mark.parametrize("name", ["edge", "router", "providers"])
async def test_killed_service_is_restarted_and_serves_again(single_mesh: Mesh, client: AsyncOpenAI,
                                                            name: str) -> None:
    mesh = single_mesh
    assert await ask(client) == "stop"
    restarts = mesh.restarts[name]
    await sigkill(mesh, name)
    if name == "edge":
        # The edge is down (its restart waits for the back-off): Envoy itself answers.
        with pytest.raises(openai.APIStatusError) as info:
            await ask(client)
        assert info.value.status_code == 503
    took, statuses = await serves_again(client, mesh, name, restarts)
    assert statuses <= {502, 503, 504}  # clean errors while it was down
    print(f"{name}: serving again {took:.2f} s after SIGKILL; errors meanwhile: {sorted(statuses)}")


async def test_killed_nats_cuts_no_stream_and_loses_no_usage(single_mesh: Mesh, client: AsyncOpenAI) -> None:
    mesh = single_mesh
    first_token = [asyncio.Event() for _ in range(3)]
    streams = [asyncio.create_task(run_stream(client, f"{marker()} [[sim tokens=60 chunk_delay_ms=25]]", event))
               for event in first_token]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first_token)), 20)
    restarts = mesh.restarts["nats"]

    await sigkill(mesh, "nats")
    ids = set()
    for _ in range(5):  # served while NATS is down or restarting
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "metered while NATS restarts"}])
        ids.add(raw.headers["x-request-id"])
    assert await asyncio.wait_for(asyncio.gather(*streams), 30) == ["ok"] * 3  # not cut
    events = await usage_events(mesh, ids, wait_s=RECOVERY_BOUND_S)  # NATS is back, the spool replayed
    assert sorted(e.request_id for e in events) == sorted(ids)
    assert mesh.restarts["nats"] == restarts + 1


@pytest.fixture
def fragile_mesh() -> Iterator[Mesh]:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-g-"))
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=write_test_config(run_dir, "sy_" + "g" * 40),
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ(),
                            restart=RestartPolicy(initial_backoff_s=0.05, max_restarts=2, window_s=120))
    with running_mesh(settings) as mesh:
        yield mesh


async def test_a_service_that_keeps_dying_stops_the_mesh(fragile_mesh: Mesh) -> None:
    mesh = fragile_mesh
    for attempt in range(2):
        await sigkill(mesh, "simulator")
        async with asyncio.timeout(RECOVERY_BOUND_S):  # restarted each time within the limit
            while mesh.restarts["simulator"] < attempt + 1 or not mesh.processes["simulator"].alive():
                await asyncio.sleep(0.05)
    await sigkill(mesh, "simulator")  # the third death inside the window
    assert await asyncio.to_thread(mesh.failed.wait, RECOVERY_BOUND_S)
    assert mesh.failure is not None and "simulator" in mesh.failure and "giving up" in mesh.failure
    assert not [name for name, process in mesh.processes.items() if process.alive()]
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(mesh.base_url.removesuffix("/v1") + "/readyz")


def test_restarts_back_off_and_give_up(tmp_path: Path) -> None:
    """The policy on its own, with a child that exits at once."""
    policy = RestartPolicy(initial_backoff_s=0.1, max_backoff_s=0.4, max_restarts=4, window_s=60)
    said: list[str] = []
    gave_up = threading.Event()
    reasons: list[str] = []

    def give_up(reason: str) -> None:
        reasons.append(reason)
        gave_up.set()

    supervisor = Supervisor(policy, said.append, give_up)
    starts: list[float] = []
    process = Process("crasher", [sys.executable, "-c", "import sys; sys.exit(3)"], {}, tmp_path / "crasher.log",
                      on_exit=supervisor.notify)
    original_start = process.start

    def counted_start() -> None:
        starts.append(time.monotonic())
        original_start()

    process.start = counted_start  # type: ignore[method-assign]
    supervisor.start()
    try:
        process.start()
        assert gave_up.wait(30)
    finally:
        supervisor.stop()
        process.stop(5)
    assert len(starts) == 1 + policy.max_restarts
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    for index, gap in enumerate(gaps):  # never sooner than the back-off (later is fine on a busy machine)
        assert gap >= min(policy.initial_backoff_s * 2 ** index, policy.max_backoff_s)
    assert reasons[0].startswith("crasher exited with code 3") and "giving up" in reasons[0]
    assert sum("restarting in" in line for line in said) == policy.max_restarts
    assert isinstance(process.popen, subprocess.Popen) and process.popen.returncode == 3
