"""Where an aiohttp app listens: ``host:port`` or ``unix:/path``, as every
service's address settings are written."""

from __future__ import annotations

from aiohttp import web


async def start_site(runner: web.AppRunner, address: str, backlog: int = 128) -> web.BaseSite:
    """Start ``runner`` on ``address`` (``runner.setup()`` done)."""
    if address.startswith("unix:"):
        site: web.BaseSite = web.UnixSite(runner, address[5:], backlog=backlog)
    else:
        host, _, port = address.rpartition(":")
        site = web.TCPSite(runner, host, int(port), backlog=backlog)
    await site.start()
    return site
