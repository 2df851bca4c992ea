"""python -m providers: the provider worker (Provider.Generate)."""

from __future__ import annotations

import os

from providers.registry import ProviderRegistry
from providers.server import ProviderServicer
from switchyard import logs, telemetry
from switchyard.config import load_config
from switchyard.grpc_server import run, serve


async def main() -> None:
    logs.setup("providers")
    config = load_config()
    registry = ProviderRegistry(config)
    address = os.environ.get("SWITCHYARD_PROVIDERS_ADDRESS", "127.0.0.1:50061")
    grace = float(os.environ.get("SWITCHYARD_PROVIDERS_GRACE_S", "30"))

    servicer = ProviderServicer(registry, telemetry.setup("providers"))
    await serve(address, servicer.register, grace=grace, on_drain=servicer.session.drain, on_stop=registry.close)
    telemetry.shutdown()


if __name__ == "__main__":
    run(main)
