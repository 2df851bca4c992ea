"""python -m router: the Router service."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from router.resolve import Resolver
from router.server import RouterServicer
from router.usage import CountingUsageSink, UsageSink
from switchyard import logs, telemetry
from switchyard.config import load_config
from switchyard.events import UsagePublisher
from switchyard.grpc_server import CHANNEL_OPTIONS, run, serve
from switchyard.session import streamer


async def main() -> None:
    logs.setup("router")
    config = load_config()
    address = os.environ.get("SWITCHYARD_ROUTER_ADDRESS", "127.0.0.1:50051")
    providers = os.environ.get("SWITCHYARD_ROUTER_PROVIDERS_TARGET", "127.0.0.1:50061")
    grace = float(os.environ.get("SWITCHYARD_ROUTER_GRACE_S", "30"))
    channel = grpc.aio.insecure_channel(providers, options=CHANNEL_OPTIONS)
    generate = streamer(channel, "switchyard.v1.Provider", "Generate",
                        transport=os.environ.get("SWITCHYARD_TRANSPORT", "session"),
                        sessions=int(os.environ.get("SWITCHYARD_ROUTER_SESSIONS", "2")))
    nats_url = os.environ.get("SWITCHYARD_NATS_URL")
    usage: UsageSink
    if nats_url:
        publisher = UsagePublisher(nats_url, Path(os.environ.get("SWITCHYARD_ROUTER_SPOOL", "var/spool/router.usage")))
        await publisher.start()
        usage = publisher
    else:
        usage = CountingUsageSink()
    servicer = RouterServicer(Resolver(config), generate, usage, telemetry.setup("router"))

    async def stop() -> None:
        await channel.close()
        if nats_url:
            await publisher.close()  # queued events reach NATS or the spool before exit
        telemetry.shutdown()

    await serve(address, servicer.register, grace=grace, on_drain=servicer.session.drain, on_stop=stop)


if __name__ == "__main__":
    run(main)
