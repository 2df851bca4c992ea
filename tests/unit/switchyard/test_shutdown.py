"""A service's shutdown is bounded: a clean-up step that hangs is cut off,
and a process that cannot get there (its loop blocked) still ends, with
every thread's stack on stderr."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local.mesh import SERVICES

SERVER = """
import asyncio, logging, sys, time
from switchyard import grpc_server, shutdown
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
grpc_server.STOP_CANCEL_S = shutdown.STOP_CANCEL_S = 0.5
grpc_server.STOP_CLEANUP_S = shutdown.STOP_CLEANUP_S = 0.5
grpc_server.STOP_MARGIN_S = shutdown.STOP_MARGIN_S = 0.5

async def hang_awaiting():
    await asyncio.Event().wait()

async def hang_blocking():
    time.sleep(600)

async def main():
    await grpc_server.serve("unix:" + sys.argv[2], lambda server: [], grace=0, on_stop={on_stop})

asyncio.run(main())
"""


def start(tmp_path: Path, on_stop: str) -> subprocess.Popen[str]:
    script = tmp_path / "server.py"
    script.write_text(SERVER.replace("{on_stop}", on_stop))
    env = {**os.environ, "PYTHONPATH": str(SERVICES)}
    process = subprocess.Popen([sys.executable, str(script), "x", str(tmp_path / "s.sock")], env=env,
                               stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for _ in range(200):  # bounded: the server logs one line per start step
        line = process.stderr.readline()
        if "serving" in line or not line:
            break
    assert "serving" in line, "the server never started"
    return process


@pytest.mark.parametrize(("on_stop", "exit_code", "told"), [
    ("hang_awaiting", 0, "clean-up took longer than"),
    ("hang_blocking", 1, "most recent call first"),  # faulthandler's stack dump
])
def test_a_hanging_shutdown_still_ends(tmp_path: Path, on_stop: str, exit_code: int, told: str) -> None:
    process = start(tmp_path, on_stop)
    try:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == exit_code
    assert told in stderr
