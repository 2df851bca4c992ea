"""python -m analytics: the usage store, its query API and the dashboard."""

from __future__ import annotations

from analytics.service import run_analytics
from switchyard import logs
from switchyard.config import load_config
from switchyard.grpc_server import run


async def main() -> None:
    logs.setup("analytics")
    await run_analytics(load_config())


if __name__ == "__main__":
    run(main)
