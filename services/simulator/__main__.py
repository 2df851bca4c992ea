"""python -m simulator --port 9100"""

from __future__ import annotations

import argparse
import os

import uvloop
from aiohttp import web

from simulator.app import create_app
from switchyard.shutdown import stop_signal


async def serve(host: str, port: int) -> None:
    # handler_cancellation: notice at once when a client (the gateway) leaves.
    stop = stop_signal()
    runner = web.AppRunner(create_app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="simulator")
    parser.add_argument("--host", default=os.environ.get("SWITCHYARD_SIMULATOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SWITCHYARD_SIMULATOR_PORT", "9100")))
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
