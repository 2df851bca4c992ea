"""TRACE, for one request: a single trace from the client's traceparent
through the edge, the router and its attempt, the provider worker and the
upstream call, and on to the usage event's NATS headers."""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh, MeshSettings, isolated_environ
from switchyard import nats_client
from switchyard.events import STREAM
from tests.e2e.conftest import running_mesh, write_test_config
from tests.e2e.test_usage import usage_events


@pytest.fixture(scope="module")
def traced_mesh() -> Iterator[Mesh]:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-t-"))
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=write_test_config(run_dir, "sy_" + "t" * 40),
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ(),
                            extra_env={"SWITCHYARD_TRACE_DIR": str(run_dir / "traces")})
    with running_mesh(settings) as mesh:
        yield mesh


def spans_of(mesh: Mesh, trace_id: str) -> list[dict]:
    spans = []
    for path in (mesh.settings.run_dir / "traces").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            span = json.loads(line)
            if span["context"]["trace_id"] == f"0x{trace_id}":
                spans.append(span)
    return spans


async def test_one_trace_across_every_hop(traced_mesh: Mesh) -> None:
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    async with AsyncOpenAI(base_url=traced_mesh.base_url, api_key=traced_mesh.api_key, max_retries=0) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "trace me"}],
            extra_headers={"traceparent": f"00-{trace_id}-{client_span}-01"})
    expected = {"POST /v1/chat/completions", "switchyard.v1.Router/Chat", "chat claude-sonnet-4-5",
                "switchyard.v1.Provider/Generate", "POST"}
    async with asyncio.timeout(15):  # spans are exported in batches every 200 ms
        while True:
            spans = spans_of(traced_mesh, trace_id)
            if {s["name"] for s in spans} == expected:
                break
            await asyncio.sleep(0.1)
    assert len(spans) == len(expected)  # one attempt, no duplicate spans
    by_name = {s["name"]: s for s in spans}

    def parent_of(name: str) -> str:
        return by_name[name]["parent_id"]

    def id_of(name: str) -> str:
        return by_name[name]["context"]["span_id"]

    assert parent_of("POST /v1/chat/completions") == f"0x{client_span}"
    assert parent_of("switchyard.v1.Router/Chat") == id_of("POST /v1/chat/completions")
    assert parent_of("chat claude-sonnet-4-5") == id_of("switchyard.v1.Router/Chat")
    assert parent_of("switchyard.v1.Provider/Generate") == id_of("chat claude-sonnet-4-5")
    assert parent_of("POST") == id_of("switchyard.v1.Provider/Generate")
    assert by_name["chat claude-sonnet-4-5"]["attributes"]["gen_ai.usage.output_tokens"] > 0
    assert by_name["chat claude-sonnet-4-5"]["attributes"]["gen_ai.provider.name"] == "anthropic"
    assert by_name["switchyard.v1.Router/Chat"]["attributes"]["switchyard.outcome"] == "ok"
    services = {s["resource"]["attributes"]["service.name"] for s in spans}
    assert services == {"switchyard-edge", "switchyard-router", "switchyard-providers"}

    # The usage event travels with the router span's trace context.
    request_id = raw.headers["x-request-id"]
    await usage_events(traced_mesh, {request_id})
    nc = await nats_client.connect(traced_mesh.nats_url_for("analytics"))
    try:
        sub = await nc.jetstream().pull_subscribe("switchyard.usage.>", durable=None, stream=STREAM)
        messages = await sub.fetch(100, timeout=2)
        headers = [m.headers for m in messages if m.headers.get("Nats-Msg-Id") == request_id]
    finally:
        await nc.close()
    assert headers and headers[0]["traceparent"].split("-")[1] == trace_id

    # The analytics consumer's batch span links to the request's trace.
    async with asyncio.timeout(15):
        while not any(link["context"]["trace_id"] == f"0x{trace_id}"
                      for path in (traced_mesh.settings.run_dir / "traces").glob("analytics-*.jsonl")
                      for span in map(json.loads, path.read_text().splitlines())
                      if span["name"] == "switchyard.analytics/Ingest" for link in span["links"]):
            await asyncio.sleep(0.1)


async def test_an_embeddings_request_is_one_trace_with_a_genai_span_per_attempt(traced_mesh: Mesh) -> None:
    """The first target fails (503), the fallback answers: each attempt is an
    ``embeddings {model}`` CLIENT span with the GenAI attributes, the failed
    one with error.type and status ERROR, each with its provider worker's span."""
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    async with AsyncOpenAI(base_url=traced_mesh.base_url, api_key=traced_mesh.api_key, max_retries=0) as client:
        raw = await client.embeddings.with_raw_response.create(
            model="text-embedding-3-small", dimensions=64,
            input=["[[sim status=503 model=text-embedding-3-small]] trace my vectors", "and these"],
            extra_body={"fallbacks": ["sim-backup"]}, extra_headers={"traceparent": f"00-{trace_id}-{client_span}-01"})
    assert raw.headers["x-switchyard-provider"] == "backup"
    async with asyncio.timeout(15):  # spans are exported in batches every 200 ms
        while len(spans := spans_of(traced_mesh, trace_id)) < 8:
            await asyncio.sleep(0.1)
    assert len(spans) == 8  # edge, router call, 2 attempts, 2 provider worker calls, 2 upstream HTTP calls
    by_id = {s["context"]["span_id"]: s for s in spans}
    [edge] = [s for s in spans if s["name"] == "POST /v1/embeddings"]
    [call] = [s for s in spans if s["name"] == "switchyard.v1.Router/Embed"]
    attempts = sorted((s for s in spans if s["name"].startswith("embeddings ")),
                      key=lambda s: s["attributes"]["switchyard.attempt"])
    workers = [s for s in spans if s["name"] == "switchyard.v1.Provider/Embed"]
    assert edge["parent_id"] == f"0x{client_span}" and call["parent_id"] == edge["context"]["span_id"]
    assert [s["parent_id"] for s in attempts] == [call["context"]["span_id"]] * 2
    assert sorted(by_id[w["parent_id"]]["name"] for w in workers) == sorted(s["name"] for s in attempts)
    # Under each worker span, its upstream HTTP call: the first answered 503, the fallback 200.
    calls = {by_id[u["parent_id"]]["parent_id"]: u for u in spans if u["name"] == "POST"}
    failed, answered = attempts
    assert calls[failed["context"]["span_id"]]["attributes"]["http.response.status_code"] == 503
    assert calls[failed["context"]["span_id"]]["status"]["status_code"] == "ERROR"
    assert calls[answered["context"]["span_id"]]["attributes"]["http.response.status_code"] == 200
    assert all(u["kind"] == "SpanKind.CLIENT" and u["attributes"]["server.address"] == "127.0.0.1"
               for u in calls.values())
    assert failed["name"] == "embeddings text-embedding-3-small" and failed["kind"] == "SpanKind.CLIENT"
    assert failed["status"]["status_code"] == "ERROR" and failed["attributes"]["error.type"]
    for attempt in attempts:
        assert attempt["attributes"]["gen_ai.operation.name"] == "embeddings"
        assert attempt["attributes"]["gen_ai.embeddings.dimension.count"] == 64
    assert failed["attributes"]["gen_ai.provider.name"] == "openai"
    assert answered["status"]["status_code"] == "UNSET" and answered["attributes"]["gen_ai.usage.input_tokens"] > 0
    assert answered["attributes"]["gen_ai.response.model"] == answered["attributes"]["gen_ai.request.model"]
    assert call["attributes"]["switchyard.outcome"] == "ok"
    services = {s["resource"]["attributes"]["service.name"] for s in spans}
    assert services == {"switchyard-edge", "switchyard-router", "switchyard-providers"}


async def test_a_token_count_is_one_trace_with_a_genai_span(traced_mesh: Mesh) -> None:
    """/v1/messages/count_tokens to an upstream with a counting API: edge →
    Router/CountTokens → a ``count_tokens {model}`` CLIENT span → the provider
    worker's span, with the count on the attempt."""
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    async with AsyncAnthropic(base_url=traced_mesh.base_url.removesuffix("/v1"), api_key=traced_mesh.api_key,
                              max_retries=0) as claude:
        counted = await claude.messages.count_tokens(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "count these words for me"}],
            extra_headers={"traceparent": f"00-{trace_id}-{client_span}-01"})
    async with asyncio.timeout(15):  # spans are exported in batches every 200 ms
        while len(spans := spans_of(traced_mesh, trace_id)) < 5:
            await asyncio.sleep(0.1)
    assert len(spans) == 5  # edge, router call, the attempt, the provider worker's call, its upstream call
    by_name = {s["name"]: s for s in spans}
    upstream = by_name["POST"]
    assert upstream["parent_id"] == by_name["switchyard.v1.Provider/CountTokens"]["context"]["span_id"]
    assert upstream["attributes"]["http.response.status_code"] == 200
    edge, call = by_name["POST /v1/messages/count_tokens"], by_name["switchyard.v1.Router/CountTokens"]
    attempt, worker = by_name["count_tokens claude-sonnet-4-5"], by_name["switchyard.v1.Provider/CountTokens"]
    assert edge["parent_id"] == f"0x{client_span}" and call["parent_id"] == edge["context"]["span_id"]
    assert attempt["parent_id"] == call["context"]["span_id"] and worker["parent_id"] == attempt["context"]["span_id"]
    assert attempt["kind"] == "SpanKind.CLIENT" and attempt["status"]["status_code"] == "UNSET"
    assert attempt["attributes"]["gen_ai.operation.name"] == "count_tokens"
    assert attempt["attributes"]["gen_ai.provider.name"] == "anthropic"
    assert attempt["attributes"]["gen_ai.usage.input_tokens"] == counted.input_tokens > 0
    assert call["attributes"]["switchyard.outcome"] == "ok"
