"""`make run`: start the whole local mesh in the foreground; Ctrl-C stops it."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "services"))

from switchyard.launcher import Mesh, MeshError, MeshSettings  # noqa: E402

_print_lock = threading.Lock()


def _sink(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("SWITCHYARD_PORT", "8080")))
    parser.add_argument("--config", type=Path, default=ROOT / "deploy" / "local" / "switchyard.yaml")
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run")
    args = parser.parse_args()
    mesh = Mesh(MeshSettings(run_dir=args.run_dir, public_port=args.port, config_path=args.config, sink=_sink))
    try:
        mesh.start()
    except MeshError as exc:
        print(f"switchyard failed to start: {exc}", file=sys.stderr)
        return 1
    simulated = ", ".join(mesh.simulated) or "none"
    print(f"""
Switchyard is up.
  base URL : {mesh.base_url}
  API key  : {mesh.api_key}
  dashboard: {mesh.base_url}/analytics/dashboard#key={mesh.api_key}
  NATS     : {mesh.nats_url} (switchyard routes --nats <this>)
  simulated upstreams (no key set): {simulated}

  curl {mesh.base_url}/chat/completions \\
    -H "Authorization: Bearer {mesh.api_key}" -H "Content-Type: application/json" \\
    -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  {sys.executable} -c 'from openai import OpenAI; c = OpenAI(base_url="{mesh.base_url}", api_key="{mesh.api_key}");\\
print(c.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hello!"}}]))'

Ctrl-C stops everything.
""", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(1.0):
        dead = [name for name, p in mesh.processes.items() if not p.alive()]
        if dead:
            print(f"{', '.join(dead)} exited; stopping the mesh", file=sys.stderr)
            break
    print("stopping...", flush=True)
    mesh.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
