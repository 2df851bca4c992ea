"""SWITCHYARD_ROUTER_PROVIDERS_IN_PROCESS=1: the router runs the provider
worker's code itself. With the provider worker processes frozen (SIGSTOP),
answers, streams, embeddings and token counts still arrive through the
mesh, with usage and Server-Timing as usual."""

from __future__ import annotations

import secrets
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from deploy.local.mesh import Mesh, MeshSettings, isolated_environ
from tests.e2e.conftest import marker, running_mesh, write_test_config


@pytest.fixture(scope="module")
def in_process_mesh() -> Iterator[Mesh]:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-ip-"))
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=write_test_config(run_dir, "sy_" + "p" * 40),
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ(),
                            extra_env={"SWITCHYARD_ROUTER_PROVIDERS_IN_PROCESS": "1"})
    with running_mesh(settings) as mesh:
        workers = [mesh.processes[name] for name in mesh.providers]
        for worker in workers:
            worker.signal(signal.SIGSTOP)  # nothing may depend on them
        try:
            yield mesh
        finally:
            for worker in workers:
                worker.signal(signal.SIGCONT)


async def test_every_call_is_answered_without_provider_workers(in_process_mesh: Mesh) -> None:
    mesh = in_process_mesh
    async with AsyncOpenAI(base_url=mesh.base_url, api_key=mesh.api_key, max_retries=0, timeout=20) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"{marker()} one two three"}])
        answer = raw.parse()
        assert answer.choices[0].finish_reason == "stop" and answer.usage.completion_tokens > 0
        assert "upstream;dur=" in raw.headers["server-timing"]  # the worker's timing event still arrives

        words = []
        stream = await client.chat.completions.create(
            model="claude-sonnet-4-5", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": f"{marker()} [[sim tokens=12]]"}])
        usage = None
        async for chunk in stream:
            words += [c.delta.content for c in chunk.choices if c.delta.content]
            usage = chunk.usage or usage
        assert len(words) >= 12 and usage is not None and usage.completion_tokens > 0

        vectors = await client.embeddings.create(model="text-embedding-3-small", input=["a", "b"], dimensions=8)
        assert [len(v.embedding) for v in vectors.data] == [8, 8]

    async with AsyncAnthropic(base_url=mesh.base_url.removesuffix("/v1"), api_key=mesh.api_key,
                              max_retries=0, timeout=20) as claude:
        counted = await claude.messages.count_tokens(model="claude-sonnet-4-5",
                                                     messages=[{"role": "user", "content": "count me"}])
        assert counted.input_tokens > 0

    # The worker's GenAI client metrics now come from the router's /metrics.
    async with aiohttp.ClientSession() as http, http.get(mesh.metrics_url("router")) as scrape:
        families = {f.name: f for f in text_string_to_metric_families(await scrape.text())}
    durations = families["gen_ai_client_operation_duration_seconds"].samples
    operations = {s.labels["gen_ai_operation_name"] for s in durations}
    assert operations == {"chat", "embeddings", "count_tokens"}
