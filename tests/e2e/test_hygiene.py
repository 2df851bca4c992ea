"""HEADER-INJECTION and SECRETS, scaled to a test: client headers never reach
the upstream, and no key or prompt text shows up in any service's log."""

from __future__ import annotations

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh
from tests.e2e.conftest import marker
from tests.e2e.test_chat import sim_requests


async def test_client_headers_never_reach_the_upstream(mesh: Mesh) -> None:
    tag = marker()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": tag}]}
    hostile = {"x-sim-status": "500", "x-api-key": "client-supplied", "x-goog-api-key": "client-supplied",
               "anthropic-version": "1999-01-01", "x-envoy-upstream-rq-timeout-ms": "1",
               "x-forwarded-host": "evil.example", "x-switchyard-internal": "1"}
    async with aiohttp.ClientSession() as http, http.post(
            f"{mesh.base_url}/chat/completions", json=body,
            headers={"authorization": f"Bearer {mesh.api_key}", **hostile}) as response:
        assert response.status == 200  # x-sim-status would have made it a 500 had it leaked
    (seen,) = await sim_requests(mesh, tag)
    assert not set(hostile) & set(seen["headers"])
    # The upstream got the gateway's own key, never the client's.
    assert mesh.api_key not in str(seen["headers"])


async def test_no_key_or_prompt_in_logs(client: AsyncOpenAI, mesh: Mesh) -> None:
    secret_prompt = "confidential-" + marker()
    await client.chat.completions.create(model="claude-sonnet-4-5",
                                         messages=[{"role": "user", "content": secret_prompt}])
    async with AsyncOpenAI(base_url=mesh.base_url, api_key="sy_wrong_" + marker(), max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as info:
            await wrong.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        assert "sy_wrong_" not in str(info.value.body)
    # Every service's whole log (the simulator stands in for the upstream).
    logs = "\n".join(mesh.tail(name, 100_000) for name in mesh.processes if name != "simulator")
    assert mesh.api_key not in logs
    assert "sy_wrong_" not in logs
    assert secret_prompt not in logs
