"""``make run`` prints ready-to-paste examples: each one works as printed,
pasted into a shell that has no virtual environment activated."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from deploy.local.mesh import ROOT
from deploy.local.probes import free_port

BANNER_END = "Ctrl-C stops everything."


def test_make_run_examples_work_as_printed() -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-"))
    # A clean shell: no provider keys (every upstream simulated), no PYTHONPATH, no venv on PATH.
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_API_KEY") and not k.startswith(("SWITCHYARD_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = "/usr/bin:/bin"
    process = subprocess.Popen([sys.executable, str(ROOT / "deploy/local/run.py"), "--port", str(free_port()),
                                "--metrics-port", "0", "--run-dir", str(run_dir)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        banner: list[str] = []
        deadline = time.monotonic() + 120
        while not banner or banner[-1].strip() != BANNER_END:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            if banner or line.startswith("Switchyard is up."):
                banner.append(line.rstrip("\n"))
        text = "\n".join(banner)
        commands = [block.strip() for block in text.split("\n\n") if block.strip().startswith(("curl", "/"))]
        assert [c.split()[0] for c in commands] == ["curl", sys.executable]
        for command in commands:
            result = subprocess.run(["bash", "-c", command], cwd="/", env=env, capture_output=True, text=True,
                                    timeout=60)
            assert result.returncode == 0, (command, result.stderr)
            assert re.search(r"chat\.completion|ChatCompletion\(", result.stdout), (command, result.stdout)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        shutil.rmtree(run_dir, ignore_errors=True)
