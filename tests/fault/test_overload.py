"""OVERLOAD, scaled to a test: beyond its concurrency limit the edge answers
at once with 503 and retry-after, and serves again as soon as load drops."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh, MeshSettings, isolated_environ
from tests.e2e.conftest import marker, running_mesh, write_test_config
from tests.fault.rawhttp import burst, chat_request, shares
from tests.fault.test_replicas import wait_received

LIMIT = 3


@pytest.fixture(scope="module")
def small_mesh() -> Iterator[Mesh]:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-o-"))
    config = write_test_config(run_dir, "sy_" + "o" * 40)
    data = yaml.safe_load(config.read_text())
    data["limits"]["max_concurrent_requests"] = LIMIT
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=config,
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ())
    with running_mesh(settings) as mesh:
        yield mesh


async def test_over_capacity_is_rejected_fast_with_retry_after(small_mesh: Mesh) -> None:
    async with AsyncOpenAI(base_url=small_mesh.base_url, api_key=small_mesh.api_key, max_retries=0) as client:
        async def slow(tag: str) -> str:
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"{tag} [[sim delay_ms=1500]]"}])
            return "ok"

        tags = [marker() for _ in range(LIMIT)]
        holders = [asyncio.create_task(slow(tag)) for tag in tags]
        # The edge holds LIMIT requests once the upstream has seen all of them.
        await asyncio.gather(*(wait_received(small_mesh, tag) for tag in tags))
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="gpt-4o-mini",
                                                 messages=[{"role": "user", "content": "one more"}])
        rejected_in = time.monotonic() - started
        assert info.value.status_code == 503
        assert info.value.body["code"] == "overloaded"
        assert info.value.response.headers["retry-after"] == "1"
        assert rejected_in < 0.25  # an immediate answer, not a queue
        assert await asyncio.gather(*holders) == ["ok"] * LIMIT
        # Capacity is back once the held requests are done.
        again = await client.chat.completions.create(model="gpt-4o-mini",
                                                     messages=[{"role": "user", "content": "after"}])
        assert again.choices[0].finish_reason == "stop"


async def test_a_burst_beyond_the_limit_is_refused_with_the_envelope_and_retry_after(small_mesh: Mesh) -> None:
    head, body = chat_request(small_mesh.api_key, {"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": f"{marker()} burst [[sim delay_ms=1000]]"}]})
    answers = await burst(small_mesh.public_port, head + body, 300)
    figures = shares(answers)
    print(f"burst of 300 new connections at a limit of {LIMIT}: {figures}")
    assert figures.get("ok", 0) >= LIMIT
    assert set(figures) == {"ok", "json 503"}, figures  # nothing text/plain, nothing unanswered
    assert all(a.headers["retry-after"] == "1" for a in answers if a.status == 503)
