"""Fixtures shared by every test directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from simulator.app import RECORDER, create_app
from simulator.scenarios import Recorder


@dataclass(frozen=True)
class SimServer:
    """The upstream simulator (all three APIs) on a free port."""

    url: str
    recorder: Recorder


@pytest.fixture(scope="session")
async def simulator() -> AsyncIterator[SimServer]:
    app = create_app()
    server = TestServer(app, host="127.0.0.1", port=0, handler_cancellation=True)
    await server.start_server()
    try:
        yield SimServer(str(server.make_url("")).rstrip("/"), app[RECORDER])
    finally:
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
