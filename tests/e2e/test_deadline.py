"""DEADLINE from RELIABILITY.md: the request deadline set at the edge ends
the work on every hop, down to the upstream connection, without overrun."""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh, MeshSettings, isolated_environ
from tests.e2e.conftest import marker, running_mesh, write_test_config
from tests.e2e.test_cancel import wait_finished

DEADLINE_S = 1.0


@pytest.fixture(scope="module")
def deadline_mesh() -> Iterator[Mesh]:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-d-"))
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=write_test_config(run_dir, "sy_" + "z" * 40),
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ(),
                            extra_env={"SWITCHYARD_EDGE_REQUEST_TIMEOUT_S": str(DEADLINE_S)})
    with running_mesh(settings) as mesh:
        yield mesh


@pytest.mark.parametrize("prompt", ["[[sim delay_ms=1800]]", "[[sim tokens=100 chunk_delay_ms=40]]"],
                         ids=["before-first-token", "mid-stream"])
async def test_request_deadline_stops_every_hop(deadline_mesh: Mesh, prompt: str) -> None:
    tag = marker()
    async with AsyncOpenAI(base_url=deadline_mesh.base_url, api_key=deadline_mesh.api_key, max_retries=0,
                           timeout=30) as client:
        started = time.time()
        with pytest.raises(openai.APIError):
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": f"{tag} {prompt}"}])
            async for _ in stream:
                pass
        ended = time.time()
    assert ended - started < DEADLINE_S + 0.5  # the client heard about it on time
    record = await wait_finished(deadline_mesh, tag)
    assert record["disconnected_at"] is not None  # the upstream call was abandoned, not finished
    assert record["disconnected_at"] - started < DEADLINE_S + 0.1 + 0.4  # overrun within budget on a loaded VM
