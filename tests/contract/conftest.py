"""Contract tests drive translators against the shared simulator."""

from __future__ import annotations

import pytest

from tests.conftest import SimServer


@pytest.fixture(scope="session")
def simulator_url(simulator: SimServer) -> str:
    return simulator.url
