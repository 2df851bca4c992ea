"""`make run`: start the whole local mesh in the foreground; Ctrl-C stops it.

A service that dies is restarted (with back-off, each restart logged); the
mesh stops by itself only if one keeps dying.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "services")]

from deploy.local.mesh import Mesh, MeshError, MeshSettings  # noqa: E402
from switchyard.config import ConfigError  # noqa: E402
from switchyard.settings import LauncherSettings, load  # noqa: E402

_print_lock = threading.Lock()


def _sink(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


def main() -> int:
    try:
        env = load(LauncherSettings)
    except ConfigError as exc:
        print(f"switchyard failed to start: {exc}", file=sys.stderr)
        return 1
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=env.port)
    parser.add_argument("--metrics-port", type=int, default=env.metrics_port,
                        help="first of the loopback ports serving metrics (default $SWITCHYARD_METRICS_PORT or 9460)")
    parser.add_argument("--config", type=Path, help="default: $SWITCHYARD_CONFIG, else deploy/local/switchyard.yaml")
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run")
    parser.add_argument("--replicas", type=int, default=1, help="replicas of edge, router and provider worker")
    parser.add_argument("--nats-nodes", type=int, default=1, choices=(1, 3),
                        help="3: a NATS JetStream cluster, every stream and bucket replicated on all three")
    args = parser.parse_args()
    mesh = Mesh(MeshSettings(run_dir=args.run_dir, public_port=args.port, config_path=args.config, sink=_sink,
                             metrics_port=args.metrics_port, edge_replicas=args.replicas,
                             router_replicas=args.replicas, provider_replicas=args.replicas,
                             nats_nodes=args.nats_nodes))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        mesh.start()
    except (MeshError, OSError) as exc:
        print(f"switchyard failed to start: {exc}", file=sys.stderr)
        return 1
    simulated = ", ".join(mesh.simulated) or "none"
    print(f"""
Switchyard is up.
  base URL : {mesh.base_url}
  API key  : {mesh.api_key}
  dashboard: {mesh.base_url}/analytics/dashboard#key={mesh.api_key}
  config   : {mesh.config_path}
  simulated upstreams (no key or base URL set): {simulated}
  metrics  : {" ".join(mesh.metrics_url(name) for name in mesh.metrics_ports)}

  curl {mesh.base_url}/chat/completions \\
    -H "Authorization: Bearer {mesh.api_key}" -H "Content-Type: application/json" \\
    -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  {sys.executable} -c 'from openai import OpenAI; c = OpenAI(base_url="{mesh.base_url}", api_key="{mesh.api_key}");\\
print(c.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hello!"}}]))'

Ctrl-C stops everything.
""", flush=True)
    while not stop.wait(0.5):
        if mesh.failed.is_set():
            print(f"switchyard stopped: {mesh.failure}", file=sys.stderr, flush=True)
            return 1
    print("stopping...", flush=True)
    mesh.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
