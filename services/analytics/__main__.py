"""python -m analytics: the usage store, its query API and the dashboard."""

from __future__ import annotations

from analytics.service import run_analytics
from switchyard import logs, settings
from switchyard.config import load_config
from switchyard.grpc_server import run


async def main() -> None:
    env = settings.load(settings.AnalyticsSettings)
    logs.setup("analytics", env.log_level)
    await run_analytics(load_config(env.config), env)


if __name__ == "__main__":
    run(main)
