"""The per-call transport (SWITCHYARD_TRANSPORT=call: one gRPC call per
request on every hop) and the typed Router.Chat API that internal gRPC
clients use, through Envoy's router listener."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh, MeshSettings, isolated_environ
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import router_pb2_grpc
from tests.e2e.conftest import running_mesh, write_test_config


@pytest.fixture(scope="module")
def call_mesh() -> Iterator[Mesh]:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-c-"))
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=write_test_config(run_dir, "sy_" + "y" * 40),
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ(),
                            extra_env={"SWITCHYARD_TRANSPORT": "call"})
    with running_mesh(settings) as mesh:
        yield mesh


async def test_openai_sdk_over_per_call_transport(call_mesh: Mesh) -> None:
    async with AsyncOpenAI(base_url=call_mesh.base_url, api_key=call_mesh.api_key, max_retries=0) as client:
        completion = await client.chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "per call"}])
        assert "per call" in completion.choices[0].message.content
        stream = await client.chat.completions.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "streamed per call"}], stream=True,
            stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        assert "streamed per call" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage.completion_tokens > 0


async def test_typed_router_chat_api(call_mesh: Mesh) -> None:
    """An internal service calls Router.Chat with the generated stub."""
    async with grpc.aio.insecure_channel(f"unix:{call_mesh.sockets['envoy-router']}") as channel:
        stub = router_pb2_grpc.RouterStub(channel)
        request = pb.ChatRequest(request_id="typed-1", model="fast", stream=True,
                                 messages=[pb.Message(role="user", text="typed hello")],
                                 identity=pb.Identity(key_id="internal", tenant="platform"))
        events = [event async for event in stub.Chat(request, timeout=10)]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "started" and kinds[-1] == "usage"
    assert events[0].started.provider == "openai" and events[0].started.model == "gpt-4o-mini"
    text = "".join(d.content for e in events if e.HasField("chunk") for d in e.chunk.choices)
    assert "typed hello" in text
