"""python -m simulator --port 9100"""

from __future__ import annotations

import argparse
import os

from aiohttp import web

from simulator.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="simulator")
    parser.add_argument("--host", default=os.environ.get("SWITCHYARD_SIMULATOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SWITCHYARD_SIMULATOR_PORT", "9100")))
    args = parser.parse_args()
    # handler_cancellation: notice at once when a client (the gateway) leaves.
    web.run_app(create_app(), host=args.host, port=args.port, print=None, access_log=None,
                handler_cancellation=True)


if __name__ == "__main__":
    main()
