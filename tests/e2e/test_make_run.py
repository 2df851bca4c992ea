"""`make run` itself (deploy/local/run.py as a child process): the caller's
settings reach the services, a killed service is restarted while everything
else keeps serving, and Ctrl-C (SIGINT) stops every process it started."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
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
from prometheus_client.parser import text_string_to_metric_families

from deploy.local.mesh import ROOT, isolated_environ
from deploy.local.probes import free_port, tcp_open
from tests.conftest import SimServer
from tests.e2e.conftest import marker
from tests.fault.test_replicas import run_stream

LOCAL_KEY = "local-" + secrets.token_hex(8)


class MakeRun:
    """deploy/local/run.py in the background, its output collected line by line."""

    def __init__(self, env: dict[str, str], run_dir: Path) -> None:
        self.port = int(env["SWITCHYARD_PORT"])
        self.lines: list[str] = []
        self.popen = subprocess.Popen([sys.executable, str(ROOT / "deploy" / "local" / "run.py"),
                                       "--run-dir", str(run_dir)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                found = re.search(pattern, line)
                if found:
                    return found
            seen = len(self.lines)
            if self.popen.poll() is not None and seen == len(self.lines):
                break
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-80:]))

    def pids(self) -> dict[str, int]:
        """The latest pid of each service the launcher started."""
        found = {}
        for line in self.lines:
            match = re.search(r"launcher \| (\S+) (?:re)?started \(pid (\d+)\)", line)
            if match:
                found[match.group(1)] = int(match.group(2))
        return found

    def all_pids(self) -> set[int]:
        return {int(p) for line in self.lines for p in re.findall(r"started \(pid (\d+)\)", line)}


@pytest.fixture
def make_run(simulator: SimServer) -> Iterator[MakeRun]:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-mr-"))
    env = isolated_environ({
        "SWITCHYARD_PORT": str(free_port()),
        "SWITCHYARD_METRICS_PORT": "0",  # free ports: other test runs may hold the default ones
        "SWITCHYARD_EDGE_REQUEST_TIMEOUT_S": "3",
        "SWITCHYARD_LOCAL_API_KEY": LOCAL_KEY,
        "SWITCHYARD_LOCAL_BASE_URL": f"{simulator.url}/compat/v1",
    })
    run = MakeRun(env, run_dir)
    try:
        yield run
    finally:
        if run.popen.poll() is None:
            run.popen.send_signal(signal.SIGINT)
            try:
                run.popen.wait(30)
            except subprocess.TimeoutExpired:
                run.popen.kill()
        shutil.rmtree(run_dir, ignore_errors=True)


async def scraped(url: str) -> bool:
    """``url`` answers with Prometheus text that parses into metric families."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status == 200 and any(text_string_to_metric_families(await response.text()))


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


async def test_make_run_passes_settings_survives_deaths_and_stops_cleanly(make_run: MakeRun,
                                                                        simulator: SimServer) -> None:
    await asyncio.to_thread(make_run.wait_for, r"Switchyard is up")
    api_key = (await asyncio.to_thread(make_run.wait_for, r"API key\s+: (\S+)")).group(1)
    # SWITCHYARD_METRICS_PORT=0: free loopback ports, printed; Envoy's stats first, then each service's.
    urls = (await asyncio.to_thread(make_run.wait_for, r"metrics\s+: (.+)$")).group(1).split()
    assert len(urls) == 5 and urls[0].endswith("/stats/prometheus")
    assert all(url.startswith("http://127.0.0.1:") and url.endswith("/metrics") for url in urls[1:])
    for url in urls:
        assert await scraped(url)
    async with AsyncOpenAI(base_url=f"http://127.0.0.1:{make_run.port}/v1", api_key=api_key, max_retries=0,
                           timeout=30) as client:
        # The caller's settings reach the services.
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="gpt-4o-mini",
                                                 messages=[{"role": "user", "content": "[[sim delay_ms=8000]]"}])
        assert info.value.status_code == 504  # SWITCHYARD_EDGE_REQUEST_TIMEOUT_S=3
        tag = marker()
        await client.chat.completions.create(model="local/any", messages=[{"role": "user", "content": tag}])
        (seen,) = simulator.recorder.matching(tag)
        assert seen.headers["authorization"] == f"Bearer {LOCAL_KEY}"  # not the simulator's key

        # NATS dies under a 2 s stream (within the 3 s deadline): the stream goes on, NATS comes back.
        started = asyncio.Event()
        stream = asyncio.create_task(run_stream(client, "[[sim tokens=50 chunk_delay_ms=40]]", started))
        await asyncio.wait_for(started.wait(), 20)
        os.kill(make_run.pids()["nats"], signal.SIGKILL)
        assert await asyncio.wait_for(stream, 30) == "ok"
        await asyncio.to_thread(make_run.wait_for, r"nats restarted \(pid")

        # The provider worker dies: the launcher restarts it and the mesh serves again.
        os.kill(make_run.pids()["providers"], signal.SIGKILL)
        await asyncio.to_thread(make_run.wait_for, r"providers restarted \(pid")
        async with asyncio.timeout(30):
            while True:
                try:
                    done = await client.chat.completions.create(model="gpt-4o-mini",
                                                                messages=[{"role": "user", "content": "back?"}])
                    break
                except openai.APIStatusError:
                    await asyncio.sleep(0.1)
        assert done.choices[0].finish_reason == "stop"
        assert make_run.popen.poll() is None  # `make run` is still up
        assert await scraped(urls[-1])  # the restarted worker serves its metrics where it did

    pids = make_run.all_pids()
    assert len(pids) >= 8  # nats, simulator, providers, router, edge, envoy and the two restarts
    make_run.popen.send_signal(signal.SIGINT)  # Ctrl-C
    assert await asyncio.to_thread(make_run.popen.wait, 60) == 0
    assert [pid for pid in pids if not gone(pid)] == []  # nothing left behind
    assert not tcp_open(make_run.port)
