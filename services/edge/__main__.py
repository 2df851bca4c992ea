"""python -m edge: the public HTTP edge."""

from __future__ import annotations

from edge.app import run_edge
from switchyard import logs, settings
from switchyard.config import load_config
from switchyard.grpc_server import run


async def main() -> None:
    env = settings.load(settings.EdgeSettings)
    logs.setup("edge", env.log_level)
    await run_edge(load_config(env.config), env)


if __name__ == "__main__":
    run(main)
