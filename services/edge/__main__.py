"""python -m edge: the public HTTP edge."""

from __future__ import annotations

from edge.app import run_edge
from switchyard import logs
from switchyard.config import load_config
from switchyard.grpc_server import run


async def main() -> None:
    logs.setup("edge")
    await run_edge(load_config())


if __name__ == "__main__":
    run(main)
