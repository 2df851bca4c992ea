"""Fixtures shared by every test directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from deploy.local.mesh import Mesh
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


def attach_mesh_logs(item: pytest.Item, report: pytest.TestReport) -> None:
    """Append the logs of any mesh a failed test used to its report."""
    if report.when == "call" and report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Mesh):
                report.sections.append(("mesh logs", value.logs()))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    attach_mesh_logs(item, report)
    return report


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
