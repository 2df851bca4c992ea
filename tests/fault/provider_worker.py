"""A provider worker (``python -m providers``) in its own process, talking to
simulators in their own processes, driven over gRPC as the router drives it.

Separate processes keep the measurements honest: a worker whose event loop
freezes delays only what runs in it, and its memory is read from
``/proc/<pid>/status``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.local.mesh import SERVICES
from deploy.local.probes import free_port
from deploy.local.process import Process
from switchyard.grpc_server import CHANNEL_OPTIONS, identity
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb

SIM_KEY_ENV = "SWITCHYARD_FAULT_SIM_KEY"


@dataclass
class Outcome:
    """What one Generate call returned, and how long it took."""

    events: list[ppb.GenerateEvent] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def error(self) -> pb.Error | None:
        errors = [e.error for e in self.events if e.HasField("error")]
        return errors[-1] if errors else None

    @property
    def text(self) -> str:
        return "".join(d.content for e in self.events if e.HasField("chunk") for d in e.chunk.choices)

    def finish_reasons(self) -> dict[int, str]:
        return {d.index: d.finish_reason for e in self.events if e.HasField("chunk") for d in e.chunk.choices
                if d.finish_reason}


@dataclass
class Worker:
    """The running worker: its gRPC address, pid and simulators by name."""

    address: str
    process: Process
    simulators: dict[str, str]
    channel: grpc.aio.Channel | None = None

    @property
    def pid(self) -> int:
        assert self.process.popen is not None
        return self.process.popen.pid

    def status_kib(self, name: str) -> int:
        """A ``VmRSS``/``VmHWM`` line of /proc/<pid>/status, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
        raise KeyError(name)

    def reset_peak(self) -> None:
        """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    async def generate(self, provider: str, model: str, prompt: str, *, key_id: str = "k",
                       deadline_s: float = 30.0) -> Outcome:
        """One streamed Generate call, as the router makes it for ``key_id``."""
        if self.channel is None:
            self.channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        call = self.channel.unary_stream("/switchyard.v1.Provider/Generate", request_serializer=identity,
                                         response_deserializer=ppb.GenerateEvent.FromString)
        request = pb.ChatRequest(model=model, stream=True, messages=[pb.Message(role="user", text=prompt)],
                                 identity=pb.Identity(key_id=key_id, tenant="t"))
        body = ppb.GenerateRequest(request=request, target=ppb.Target(provider=provider, model=model), attempt=1)
        outcome = Outcome()
        started = time.monotonic()
        async for event in call(body.SerializeToString(), timeout=deadline_s):
            outcome.events.append(event)
        outcome.seconds = time.monotonic() - started
        return outcome

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None


def _wait(what: str, process: Process, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while not check():
        if not process.alive():
            raise RuntimeError(f"{what} exited during start-up: {process.log_path.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready in time: {process.log_path.read_text(errors='replace')}")
        time.sleep(delay)  # start-up polling with back-off, bounded by the deadline
        delay = min(delay * 1.5, 0.25)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _serving(address: str) -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


@contextlib.contextmanager
def running_worker(providers: dict[str, dict[str, Any]], simulators: tuple[str, ...] = ("sim",)) -> Iterator[Worker]:
    """Start one simulator process per name and a worker whose config holds
    ``providers``; a ``base_url`` may name a simulator as ``{sim}``."""
    run_dir = Path(tempfile.mkdtemp(prefix="sy-pw-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    base_env.update({"PYTHONPATH": str(SERVICES), "PYTHONUNBUFFERED": "1", SIM_KEY_ENV: "sim_" + secrets.token_hex(16)})
    processes: dict[str, Process] = {}
    try:
        urls: dict[str, str] = {}
        for name in simulators:
            port = free_port()
            processes[name] = Process(name, [sys.executable, "-m", "simulator", "--port", str(port)], base_env,
                                      run_dir / f"{name}.log")
            processes[name].start()
            urls[name] = f"http://127.0.0.1:{port}"
        config = {"providers": {name: {**spec, "base_url": spec["base_url"].format(**urls),
                                       "api_key_env": SIM_KEY_ENV} for name, spec in providers.items()}}
        config_path = run_dir / "switchyard.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        address = f"127.0.0.1:{free_port()}"
        worker = processes["providers"] = Process(
            "providers", [sys.executable, "-m", "providers"],
            {**base_env, "SWITCHYARD_CONFIG": str(config_path), "SWITCHYARD_PROVIDERS_ADDRESS": address},
            run_dir / "providers.log")
        worker.start()
        for name, url in urls.items():
            _wait(name, processes[name], lambda url=url: _http_ok(f"{url}/healthz"))
        _wait("providers", worker, lambda: _serving(address))
        yield Worker(address, worker, urls)
    finally:
        for process in reversed(processes.values()):
            process.stop(5)
        shutil.rmtree(run_dir, ignore_errors=True)
