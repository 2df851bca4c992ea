"""What an operator plugs into: traces to an OTLP endpoint named only by the
standard OpenTelemetry variables (a real OTLP/HTTP receiver decodes them),
following the GenAI semantic conventions across every hop and into the
usage event; Prometheus /metrics on every service (and Envoy's stats),
scraped and parsed with prometheus_client's parser; label cardinality
bounded under 1,000 distinct end users and hundreds of model names."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import openai
import pytest
import yaml
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from deploy.local.mesh import Mesh, MeshSettings, isolated_environ
from switchyard import nats_client
from switchyard.config import hash_key, key_prefix
from switchyard.events import STREAM
from tests.e2e.conftest import mesh_config_data, running_mesh
from tests.e2e.test_usage import usage_events
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

TINY_KEY = "sy_" + secrets.token_hex(20)
SPAN_NS = {"SERVER": 2, "CLIENT": 3}
UNSET, ERROR = 0, 2


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[OtlpReceiver]:
    otlp = OtlpReceiver()
    await otlp.start()
    yield otlp
    await otlp.stop()


@pytest.fixture(scope="module")
def observed_mesh(receiver: OtlpReceiver) -> Iterator[Mesh]:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-o-"))
    data = mesh_config_data("sy_" + secrets.token_hex(20))
    data["api_keys"].append({"id": "tiny", "tenant": "acme", "prefix": key_prefix(TINY_KEY),
                             "sha256": hash_key(TINY_KEY), "limits": {"rpm": 1}})
    config = run_dir / "observed.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    # Only the standard variables name the collector; nothing Switchyard-specific.
    environ = isolated_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
                                "OTEL_TRACES_SAMPLER": "parentbased_always_on"})
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=config, api_key="sy_" + secrets.token_hex(20),
                            environ=environ)
    with running_mesh(settings) as mesh:
        yield mesh


@pytest.fixture
async def client(observed_mesh: Mesh) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=observed_mesh.base_url, api_key=observed_mesh.api_key, max_retries=0,
                           timeout=30) as c:
        yield c


def traceparent() -> tuple[str, str, dict[str, str]]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent, {"traceparent": f"00-{trace_id}-{parent}-01"}


def named(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    (span,) = [s for s in spans if s.name == name]
    return span


# ------------------------------------------------------------------ traces --

async def test_one_trace_with_genai_conventions_across_every_hop(observed_mesh: Mesh, client: AsyncOpenAI,
                                                                 receiver: OtlpReceiver) -> None:
    trace_id, parent, headers = traceparent()
    raw = await client.chat.completions.with_raw_response.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "the secret word is pineapple"}],
        max_tokens=50, temperature=0.3, top_p=0.9, stop=["zzz"], seed=7, extra_headers=headers)
    completion = raw.parse()
    spans = await receiver.wait_for(trace_id, 5)
    assert sorted(s.name for s in spans) == sorted(["POST /v1/chat/completions", "switchyard.v1.Router/Chat",
                                                    "chat claude-sonnet-4-5", "switchyard.v1.Provider/Generate",
                                                    "POST"])
    edge, router = named(spans, "POST /v1/chat/completions"), named(spans, "switchyard.v1.Router/Chat")
    attempt, worker, upstream = (named(spans, "chat claude-sonnet-4-5"),
                                 named(spans, "switchyard.v1.Provider/Generate"), named(spans, "POST"))
    # Parentage: client → edge → router → attempt → provider worker → upstream call.
    assert edge.parent_id == parent
    assert router.parent_id == edge.span_id and attempt.parent_id == router.span_id
    assert worker.parent_id == attempt.span_id and upstream.parent_id == worker.span_id
    assert {(s.name, s.service) for s in (edge, router, worker)} == {
        ("POST /v1/chat/completions", "switchyard-edge"), ("switchyard.v1.Router/Chat", "switchyard-router"),
        ("switchyard.v1.Provider/Generate", "switchyard-providers")}
    assert attempt.span.kind == SPAN_NS["CLIENT"] and upstream.span.kind == SPAN_NS["CLIENT"]
    assert edge.span.kind == router.span.kind == worker.span.kind == SPAN_NS["SERVER"]

    # The attempt is the GenAI inference span.
    a = attempt.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "anthropic"
    assert "gen_ai.system" not in a  # the deprecated name is gone
    assert a["gen_ai.request.model"] == "claude-sonnet-4-5" and a["gen_ai.response.model"] == "claude-sonnet-4-5"
    assert (a["gen_ai.request.max_tokens"], a["gen_ai.request.temperature"], a["gen_ai.request.top_p"],
            a["gen_ai.request.stop_sequences"], a["gen_ai.request.seed"]) == (50, 0.3, 0.9, ["zzz"], 7)
    # The upstream's own id of its answer (the simulator's Messages id), not the one the client got.
    assert a["gen_ai.response.id"].startswith("msg_sim") and completion.id.startswith("chatcmpl-")
    assert a["gen_ai.response.finish_reasons"] == [completion.choices[0].finish_reason]
    assert a["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
    simulator_port = int(observed_mesh.simulator_url.rsplit(":", 1)[1])
    assert (a["server.address"], a["server.port"]) == ("127.0.0.1", simulator_port)
    assert attempt.status == UNSET and "error.type" not in a
    assert edge.attributes["http.response.status_code"] == 200
    assert edge.attributes["switchyard.request_id"] == raw.headers["x-request-id"]
    assert router.attributes["switchyard.outcome"] == "ok"
    assert upstream.attributes["http.response.status_code"] == 200
    assert (upstream.attributes["server.address"], upstream.attributes["server.port"]) == ("127.0.0.1",
                                                                                           simulator_port)
    # No prompt or answer text anywhere unless SWITCHYARD_TRACE_CONTENT asks for it.
    for span in spans:
        assert not any("pineapple" in str(v) for v in span.attributes.values())
        assert "gen_ai.input.messages" not in span.attributes

    # The usage event carries the router span's context; analytics links its batch to the trace.
    request_id = raw.headers["x-request-id"]
    await usage_events(observed_mesh, {request_id})
    nc = await nats_client.connect(observed_mesh.nats_url_for("analytics"))
    try:
        sub = await nc.jetstream().pull_subscribe("switchyard.usage.>", durable=None, stream=STREAM)
        messages = await sub.fetch(1000, timeout=2)
        (message,) = [m for m in messages if m.headers.get("Nats-Msg-Id") == request_id]
    finally:
        await nc.close()
    assert message.headers["traceparent"].split("-")[1:3] == [trace_id, router.span_id]
    async with asyncio.timeout(15):
        while not any(s.name == "switchyard.analytics/Ingest" and any(link.trace_id.hex() == trace_id
                                                                      for link in s.span.links)
                      for s in receiver.spans):
            await asyncio.sleep(0.1)
    assert receiver.content_types == {"application/x-protobuf"}  # the official OTLP/HTTP exporter


async def test_stream_reports_time_to_first_chunk(client: AsyncOpenAI, receiver: OtlpReceiver) -> None:
    trace_id, _, headers = traceparent()
    stream = await client.chat.completions.create(model="gpt-4o-mini", stream=True, n=2, extra_headers=headers,
                                                  messages=[{"role": "user", "content": "[[sim tokens=5]]"}])
    async for _ in stream:
        pass
    spans = await receiver.wait_for(trace_id, 5)
    attempt = named(spans, "chat gpt-4o-mini").attributes
    assert attempt["gen_ai.provider.name"] == "openai" and attempt["gen_ai.request.stream"] is True
    assert attempt["gen_ai.request.choice.count"] == 2
    assert attempt["gen_ai.response.finish_reasons"] == ["stop", "stop"]
    assert 0 < attempt["gen_ai.response.time_to_first_chunk"] < 10


async def test_failed_attempts_have_error_status_and_type(client: AsyncOpenAI, receiver: OtlpReceiver) -> None:
    # A fallback: the first target fails before any output, the backup answers.
    trace_id, _, headers = traceparent()
    await client.chat.completions.create(model="@scoped", extra_headers=headers, messages=[
        {"role": "user", "content": "[[sim status=503 model=gpt-4o-mini]]"}])
    spans = await receiver.wait_for(trace_id, 8)
    failed = [s for s in spans if s.name == "chat gpt-4o-mini"]
    answered = named(spans, "chat sim-backup")
    assert failed and all(s.status == ERROR and s.attributes["error.type"] == "service_unavailable" for s in failed)
    assert answered.status == UNSET and answered.attributes["gen_ai.provider.name"] == "openai"  # openai_compat
    router_span = named(spans, "switchyard.v1.Router/Chat").span_id
    assert all(s.parent_id == router_span for s in [*failed, answered])
    worker_spans = [s for s in spans if s.name == "POST"]
    assert sorted(s.status for s in worker_spans) == [UNSET] + [ERROR] * len(failed)
    assert {s.attributes["http.response.status_code"] for s in worker_spans} == {200, 503}
    assert named(spans, "switchyard.v1.Router/Chat").status == UNSET  # the request succeeded

    # Nothing answers: every span on the way reports the error.
    trace_id, _, headers = traceparent()
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(model="gpt-4o-mini", extra_headers=headers, messages=[
            {"role": "user", "content": "[[sim status=400]]"}])
    spans = await receiver.wait_for(trace_id, 5)
    attempt, router = named(spans, "chat gpt-4o-mini"), named(spans, "switchyard.v1.Router/Chat")
    assert attempt.status == router.status == ERROR
    assert attempt.attributes["error.type"] and router.attributes["error.type"] == "invalid_request_error"
    edge = named(spans, "POST /v1/chat/completions")
    assert edge.attributes["http.response.status_code"] == info.value.status_code


# ----------------------------------------------------------------- metrics --

async def scrape(url: str) -> dict[str, list[Sample]]:
    """Samples by metric family name, parsed by prometheus_client's parser."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200, url
        text = await response.text()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: dict[str, list[Sample]], family: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(s.value for s in samples.get(family, []) if s.name == name and labels.items() <= s.labels.items())


def series(samples: dict[str, list[Sample]]) -> int:
    return sum(len(v) for v in samples.values())


async def test_every_service_serves_metrics(observed_mesh: Mesh, client: AsyncOpenAI) -> None:
    for _ in range(3):
        await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "m"}])
    stream = await client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                  messages=[{"role": "user", "content": "s"}])
    async for _ in stream:
        pass
    await client.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    async with AsyncOpenAI(base_url=observed_mesh.base_url, api_key=TINY_KEY, max_retries=0) as tiny:
        await tiny.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "one"}])
        with pytest.raises(openai.RateLimitError):  # rpm 1: refused before any attempt
            await tiny.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "two"}])
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{observed_mesh.base_url}/analytics/summary",
                            headers={"authorization": f"Bearer {observed_mesh.api_key}"}) as response:
            assert response.status == 200
        # Operators' numbers are not on the public listener.
        async with http.get(observed_mesh.base_url.removesuffix("/v1") + "/metrics") as response:
            assert response.status == 404

    edge = await scrape(observed_mesh.metrics_url("edge"))
    assert value(edge, "http_server_request_duration_seconds", "http_server_request_duration_seconds_count",
                 http_route="/v1/chat/completions", http_request_method="POST",
                 http_response_status_code="200") >= 5
    assert value(edge, "http_server_request_duration_seconds", "http_server_request_duration_seconds_count",
                 http_response_status_code="429") >= 1
    assert "http_server_active_requests" in edge
    # The edge's own usage publisher (orphaned answers' records) and what became of those answers.
    assert value(edge, "switchyard_orphaned_answers", "switchyard_orphaned_answers", state="unsettled") == 0
    assert "switchyard_usage_spool_bytes" in edge

    async with asyncio.timeout(10):  # the router counts a request once its usage event is settled
        while True:
            router = await scrape(observed_mesh.metrics_url("router"))
            ok = dict(model="gpt-4o-mini", provider="openai", status="ok", endpoint="chat")
            if value(router, "switchyard_requests", "switchyard_requests_total", **ok) >= 5:
                break
            await asyncio.sleep(0.1)
    assert value(router, "switchyard_request_duration_seconds", "switchyard_request_duration_seconds_count",
                 **ok) >= 5
    assert value(router, "switchyard_time_to_first_token_seconds", "switchyard_time_to_first_token_seconds_count",
                 model="gpt-4o-mini") >= 5
    for kind in ("input", "output"):
        assert value(router, "switchyard_token_usage", "switchyard_token_usage_sum", model="gpt-4o-mini",
                     token_type=kind) > 0
    assert value(router, "switchyard_cost_usd", "switchyard_cost_usd_total", model="gpt-4o-mini") > 0
    assert value(router, "switchyard_cache_requests", "switchyard_cache_requests_total") >= 5
    assert value(router, "switchyard_admission_rejections", "switchyard_admission_rejections_total",
                 http_status="429", error_type="rate_limit_error") >= 1
    assert value(router, "switchyard_attempts", "switchyard_attempts_total", provider="openai", outcome="ok") >= 5
    assert "switchyard_breaker_state" in router and "switchyard_in_flight_requests" in router
    assert value(router, "switchyard_usage_events", "switchyard_usage_events", state="published") >= 5
    assert value(router, "switchyard_usage_publish_lag_seconds", "switchyard_usage_publish_lag_seconds_count") >= 5
    assert value(router, "switchyard_usage_spool_bytes", "switchyard_usage_spool_bytes") == 0

    providers = await scrape(observed_mesh.metrics_url("providers"))
    genai = dict(gen_ai_operation_name="chat", gen_ai_provider_name="openai", gen_ai_request_model="gpt-4o-mini")
    assert value(providers, "gen_ai_client_token_usage", "gen_ai_client_token_usage_count", **genai,
                 gen_ai_token_type="input") >= 5
    assert value(providers, "gen_ai_client_operation_duration_seconds",
                 "gen_ai_client_operation_duration_seconds_count", **genai, error_type="") >= 5
    assert value(providers, "gen_ai_client_operation_time_to_first_chunk_seconds",
                 "gen_ai_client_operation_time_to_first_chunk_seconds_count", **genai) >= 1
    embeddings = dict(gen_ai_operation_name="embeddings", gen_ai_provider_name="openai",
                      gen_ai_request_model="text-embedding-3-small")
    assert value(providers, "gen_ai_client_operation_duration_seconds",
                 "gen_ai_client_operation_duration_seconds_count", **embeddings, error_type="") >= 1
    assert value(providers, "gen_ai_client_token_usage", "gen_ai_client_token_usage_sum", **embeddings,
                 gen_ai_token_type="input") > 0

    async with asyncio.timeout(15):
        while value(analytics := await scrape(observed_mesh.metrics_url("analytics")), "switchyard_analytics_events",
                    "switchyard_analytics_events", state="stored") < 5:
            await asyncio.sleep(0.2)
    assert value(analytics, "http_server_request_duration_seconds", "http_server_request_duration_seconds_count",
                 http_route="/v1/analytics/summary") >= 1
    assert "switchyard_analytics_consumer_pending" in analytics

    envoy = await scrape(observed_mesh.metrics_url("envoy"))
    assert value(envoy, "envoy_cluster_upstream_rq", "envoy_cluster_upstream_rq_total", envoy_cluster_name="edge") >= 5


async def test_envoy_stats_listener_serves_nothing_else(observed_mesh: Mesh) -> None:
    base = observed_mesh.metrics_url("envoy").removesuffix("/stats/prometheus")
    async with aiohttp.ClientSession() as http:
        for method, path in (("GET", "/ready"), ("GET", "/config_dump"), ("POST", "/quitquitquit"),
                             ("GET", "/stats"), ("POST", "/stats/prometheus/../../quitquitquit")):
            async with http.request(method, base + path) as response:
                assert response.status == 404, path
    assert observed_mesh.processes["envoy"].alive()


async def test_label_cardinality_is_bounded(observed_mesh: Mesh, client: AsyncOpenAI) -> None:
    urls = [observed_mesh.metrics_url(name) for name in ("edge", "router", "providers")]
    gate = asyncio.Semaphore(32)

    async def ask(user: str, model: str = "gpt-4o-mini") -> None:
        async with gate:
            await client.chat.completions.create(model=model, user=user, messages=[{"role": "user", "content": "c"}])

    await asyncio.gather(*(ask("warm-up") for _ in range(10)))
    before = [series(await scrape(url)) for url in urls]
    await asyncio.gather(*(ask(f"end-user-{i}") for i in range(1000)))  # 1,000 distinct end users
    after = [series(await scrape(url)) for url in urls]
    assert after == before  # no end user is a label: not one series more

    # A pass-through provider takes any model name: 300 of them still make a bounded label.
    await asyncio.gather(*(ask("u", f"local/model-{i}") for i in range(300)))
    router = await scrape(observed_mesh.metrics_url("router"))
    models = {s.labels["model"] for s in router["switchyard_requests"]}
    assert "_other" in models and len(models) <= 200 + 1


# ----------------------------------------------------------------- secrets --

async def test_secrets_reach_no_span_metric_usage_event_analytics_or_error(
        observed_mesh: Mesh, client: AsyncOpenAI, receiver: OtlpReceiver) -> None:
    """SECRETS: a prompt and a key-shaped string planted through every path
    (an answer, a stream, an upstream failure, a refused field value, a wrong
    key) appear in no span, metric, usage event, analytics row, error body or
    response header, with every trace sampled."""
    mesh = observed_mesh
    prompt = "confidential-" + secrets.token_hex(8)
    planted = "sk-" + secrets.token_hex(24)
    text = f"{prompt} {planted}"
    trace_ids = []
    answers: list[tuple[int, dict[str, str], bytes]] = []
    headers = {"authorization": f"Bearer {mesh.api_key}"}
    bodies = [
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
        {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": text}]},
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{text} [[sim status=500]]"}]},
        {"model": "gpt-4o-mini", "temperature": planted, "messages": [{"role": "user", "content": text}]},
        {"model": "no-such-model", "messages": [{"role": "user", "content": text}]},
    ]
    async with aiohttp.ClientSession() as http:
        for body in bodies:
            trace_id, _, trace_headers = traceparent()
            trace_ids.append(trace_id)
            async with http.post(f"{mesh.base_url}/chat/completions", json=body,
                                 headers={**headers, **trace_headers}) as reply:
                answers.append((reply.status, {k.lower(): v for k, v in reply.headers.items()}, await reply.read()))
        async with http.post(f"{mesh.base_url}/chat/completions", json=bodies[0],
                             headers={"authorization": f"Bearer {planted}"}) as reply:
            answers.append((reply.status, {k.lower(): v for k, v in reply.headers.items()}, await reply.read()))
    assert [status for status, _, _ in answers] == [200, 200, 502, 400, 404, 401]
    request_ids = {h["x-request-id"] for status, h, _ in answers if status in (200, 502)}
    events = await usage_events(mesh, request_ids)

    for status, reply_headers, body in answers:
        assert planted not in str(reply_headers) and prompt not in str(reply_headers)
        if status != 200:  # an answer may quote the prompt (the simulator echoes it); an error never does
            assert planted.encode() not in body and prompt.encode() not in body, body
    async with asyncio.timeout(15):
        while not all(receiver.trace(t) for t in trace_ids[:3]):
            await asyncio.sleep(0.1)
    exported = repr([(s.name, s.attributes, s.span) for s in receiver.spans])
    for secret in (prompt, planted, mesh.api_key):
        assert secret not in exported
    for name in mesh.metrics_ports:
        async with aiohttp.ClientSession() as http, http.get(mesh.metrics_url(name)) as response:
            scraped = await response.text()
        assert prompt not in scraped and planted not in scraped and mesh.api_key not in scraped, name
    for event in events:
        raw = event.SerializeToString()
        assert prompt.encode() not in raw and planted.encode() not in raw and mesh.api_key.encode() not in raw
    async with aiohttp.ClientSession() as http, http.get(
            f"{mesh.base_url}/analytics/requests", params={"limit": "1000"}, headers=headers) as response:
        stored = await response.text()
    assert response.status == 200 and all(i in stored for i in request_ids)
    assert prompt not in stored and planted not in stored and mesh.api_key not in stored
