"""A router SIGKILLed mid-answer writes no usage event: the edge, which
relayed the answer, writes it (estimated), so the request is metered exactly
once and not at zero."""

from __future__ import annotations

import asyncio
import signal

import openai
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh
from tests.e2e.conftest import marker
from tests.e2e.test_usage import usage_events


async def test_usage_of_an_answer_whose_router_died(replicated_mesh: Mesh, fault_client: AsyncOpenAI) -> None:
    mesh = replicated_mesh
    request_id = "orphan-" + marker()
    stream = await fault_client.chat.completions.create(
        model="gpt-4o-mini", stream=True, extra_headers={"X-Request-Id": request_id},
        messages=[{"role": "user", "content": f"long {marker()} [[sim tokens=400 chunk_delay_ms=20]]"}])
    received: list[str] = []
    with_error = False
    try:
        async with asyncio.timeout(30):
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
                    if len(received) == 20:  # mid-answer: kill every router (one of them carries it)
                        for name in mesh.routers:
                            mesh.processes[name].signal(signal.SIGKILL)
    except openai.APIError:
        with_error = True
    assert with_error and 20 <= len(received) < 400  # cut, and said so
    [event] = await usage_events(mesh, {request_id}, wait_s=30)
    assert (event.status, event.http_status, event.usage_estimated) == ("error", 502, True)
    assert event.usage.completion_tokens >= len(received) and event.usage.prompt_tokens > 0
    assert event.usage.cost_usd > 0 and (event.model, event.provider) == ("gpt-4o-mini", "openai")
