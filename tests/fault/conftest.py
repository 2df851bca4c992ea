"""A private mesh per fault test (it gets broken on purpose), with two
router and two provider worker replicas behind Envoy."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh, MeshSettings, isolated_environ
from tests.e2e.conftest import running_mesh, write_test_config

DRAIN_GRACE_S = 20


@pytest.fixture
def replicated_mesh() -> Iterator[Mesh]:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-f-"))
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=write_test_config(run_dir, "sy_" + "x" * 40),
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ(),
                            router_replicas=2, provider_replicas=2,
                            extra_env={"SWITCHYARD_ROUTER_GRACE_S": str(DRAIN_GRACE_S),
                                       "SWITCHYARD_PROVIDERS_GRACE_S": str(DRAIN_GRACE_S)})
    with running_mesh(settings) as mesh:
        yield mesh


@pytest.fixture
async def fault_client(replicated_mesh: Mesh) -> AsyncOpenAI:
    async with AsyncOpenAI(base_url=replicated_mesh.base_url, api_key=replicated_mesh.api_key, max_retries=0,
                           timeout=60) as client:
        yield client
