"""The observer hook (switchyard.session.observed), the router's attempt
spans and the provider worker's spans and metrics, without sockets: spans
read from the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from providers.observer import GenerateCalls
from router.observer import AttemptCalls
from router.unary_spans import UnarySpans, attempt_ended, call_ended
from switchyard import metrics, settings, telemetry
from switchyard.config import ProviderSpec
from switchyard.session import observed
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb
from switchyard.v1 import provider_pb2 as ppb


@pytest.fixture
def spans() -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


class Table:
    """What AttemptCalls reads of a routing table: the providers' specs."""

    def __init__(self) -> None:
        spec = ProviderSpec(type="anthropic", base_url="https://api.anthropic.com", api_key_env="X")
        self.config = type("C", (), {"providers": {"claude": spec}})()


REQUEST = pb.ChatRequest(request_id="r1", model="smart", stream=True, messages=[
    pb.Message(role="system", text="be brief"), pb.Message(role="user", text="the word is pineapple")],
    sampling=pb.Sampling(temperature=0.2, max_completion_tokens=64, stop=["x"], n=2))


def generate_bytes(request: pb.ChatRequest = REQUEST) -> bytes:
    return ppb.GenerateRequest(request=request, target=ppb.Target(provider="claude", model="claude-x"),
                               attempt=2).SerializeToString()


def chunk(index: int, content: str = "", finish: str = "") -> bytes:
    return ppb.GenerateEvent(chunk=pb.Chunk(choices=[pb.ChoiceDelta(index=index, content=content,
                                                                     finish_reason=finish)])).SerializeToString()


USAGE = ppb.GenerateEvent(usage=pb.Usage(prompt_tokens=12, completion_tokens=5, cached_tokens=4)).SerializeToString()


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [raw async for raw in stream]


async def test_observed_reports_every_event_and_the_end() -> None:
    seen: list[object] = []

    class Call:
        def __init__(self, request: bytes) -> None:
            self.request, self.context = request + b"!", None

        def event(self, raw: bytes) -> None:
            seen.append(raw)

        def end(self, error: BaseException | None) -> None:
            seen.append(("end", type(error).__name__ if error else None))

    class Observer:
        def start(self, request: bytes) -> Call:
            return Call(request)

    async def handler(request: bytes, deadline: float | None) -> AsyncIterator[bytes]:
        yield request
        yield b"two"

    assert await collect(observed(handler, Observer())(b"req", None)) == [b"req!", b"two"]
    assert seen == [b"req!", b"two", ("end", None)]

    seen.clear()
    stream = observed(handler, Observer())(b"req", None)
    await anext(stream)
    await stream.aclose()  # the caller stopped reading
    assert seen == [b"req!", ("end", "GeneratorExit")]
    assert observed(handler, None) is handler  # no observer: no wrapper at all


@pytest.mark.parametrize("content", [False, True])
async def test_attempt_span_follows_the_genai_conventions(spans, content: bool) -> None:
    tracer, exporter = spans

    async def provider(request: bytes, timeout_s: float | None) -> AsyncIterator[bytes]:
        sent.append(ppb.GenerateRequest.FromString(request))
        for raw in (chunk(0, "pine"), chunk(1, "apple", "length"), chunk(0, "s", "stop"), USAGE):
            yield raw

    sent: list[ppb.GenerateRequest] = []
    stream = observed(provider, AttemptCalls(tracer, Table, content=content))
    await collect(stream(generate_bytes(), 5))
    (span,) = exporter.get_finished_spans()
    # The span's context was appended to the request, which is otherwise unchanged.
    assert sent[0].request == REQUEST and sent[0].target.model == "claude-x" and sent[0].attempt == 2
    assert sent[0].trace_context["traceparent"].split("-")[2] == format(span.context.span_id, "016x")
    assert span.name == "chat claude-x" and span.kind == trace.SpanKind.CLIENT
    attrs = dict(span.attributes)
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "anthropic"
    assert (attrs["server.address"], attrs["server.port"]) == ("api.anthropic.com", 443)
    assert (attrs["gen_ai.request.temperature"], attrs["gen_ai.request.max_tokens"],
            attrs["gen_ai.request.stop_sequences"], attrs["gen_ai.request.choice.count"]) == (0.2, 64, ("x",), 2)
    assert attrs["gen_ai.response.finish_reasons"] == ("stop", "length")
    assert attrs["gen_ai.response.id"] == "chatcmpl-r1" and attrs["gen_ai.response.model"] == "claude-x"
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"],
            attrs["gen_ai.usage.cache_read.input_tokens"]) == (12, 5, 4)
    assert attrs["gen_ai.response.time_to_first_chunk"] >= 0
    assert span.status.status_code == StatusCode.UNSET
    if content:  # SWITCHYARD_TRACE_CONTENT=1
        assert orjson.loads(attrs["gen_ai.input.messages"])[1] == {
            "role": "user", "parts": [{"type": "text", "content": "the word is pineapple"}]}
        assert orjson.loads(attrs["gen_ai.output.messages"]) == [
            {"role": "assistant", "parts": [{"type": "text", "content": "pines"}], "finish_reason": "stop"},
            {"role": "assistant", "parts": [{"type": "text", "content": "apple"}], "finish_reason": "length"}]
    else:
        assert not any("pineapple" in str(v) for v in attrs.values())
        assert "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs


async def test_the_attempt_span_names_the_answer_as_the_upstream_did(spans) -> None:
    tracer, exporter = spans
    named = ppb.GenerateEvent(timing=pb.Timing(upstream_response_id="msg_01Upstream",
                                               upstream_model="claude-x-20261101")).SerializeToString()

    async def provider(request: bytes, timeout_s: float | None) -> AsyncIterator[bytes]:
        for raw in (named, chunk(0, "hi", "stop"), USAGE):
            yield raw

    await collect(observed(provider, AttemptCalls(tracer, Table))(generate_bytes(), 5))
    (span,) = exporter.get_finished_spans()
    # Without the names (above) the span falls back to the gateway's id and the target model.
    assert span.attributes["gen_ai.response.id"] == "msg_01Upstream"
    assert span.attributes["gen_ai.response.model"] == "claude-x-20261101"
    assert span.attributes["gen_ai.request.model"] == "claude-x"


async def test_a_failed_attempt_has_error_status_and_type(spans) -> None:
    tracer, exporter = spans

    async def provider(request: bytes, timeout_s: float | None) -> AsyncIterator[bytes]:
        yield ppb.GenerateEvent(error=pb.Error(status=529, type="api_error", code="overloaded")).SerializeToString()

    await collect(observed(provider, AttemptCalls(tracer, Table))(generate_bytes(), None))
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR and span.attributes["error.type"] == "overloaded"
    assert "gen_ai.response.id" not in span.attributes  # nothing was answered


async def test_a_cancelled_attempt_is_not_an_error(spans) -> None:
    tracer, exporter = spans
    answering = asyncio.Event()

    async def provider(request: bytes, timeout_s: float | None) -> AsyncIterator[bytes]:
        yield chunk(0, "a")
        answering.set()
        await asyncio.Event().wait()  # the upstream goes quiet
        yield chunk(0, "b")

    task = asyncio.create_task(collect(observed(provider, AttemptCalls(tracer, Table))(generate_bytes(), None)))
    await asyncio.wait_for(answering.wait(), 5)
    task.cancel()  # the client left
    with pytest.raises(asyncio.CancelledError):
        await task
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.UNSET and span.attributes["switchyard.outcome"] == "cancelled"


async def test_provider_worker_spans_and_genai_client_metrics(spans) -> None:
    tracer, exporter = spans
    registry = metrics.new_registry()
    calls = GenerateCalls(tracer, metrics.GenAiClientMetrics(registry), Table().config.providers)

    async def handler(request: bytes, deadline: float | None) -> AsyncIterator[bytes]:
        for raw in (chunk(0, "a"), chunk(0, "b", "stop"), USAGE):
            yield raw

    parent = tracer.start_span("chat claude-x")
    request = ppb.GenerateRequest(request=REQUEST, target=ppb.Target(provider="claude", model="claude-x"),
                                  trace_context=telemetry.inject(parent)).SerializeToString()
    await collect(observed(handler, calls)(request, None))
    server, upstream = sorted(exporter.get_finished_spans(), key=lambda s: s.name)[::-1]
    assert server.name == "switchyard.v1.Provider/Generate" and server.parent.span_id == parent.context.span_id
    assert upstream.name == "POST" and upstream.parent.span_id == server.context.span_id
    assert upstream.attributes["http.response.status_code"] == 200
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    tokens = {s.labels["gen_ai_token_type"]: s.value for s in families["gen_ai_client_token_usage"].samples
              if s.name.endswith("_sum")}
    assert tokens == {"input": 12, "output": 5}
    (ttfc,) = [s for s in families["gen_ai_client_operation_time_to_first_chunk_seconds"].samples
               if s.name.endswith("_count")]
    assert ttfc.value == 1 and ttfc.labels["gen_ai_provider_name"] == "anthropic"


def test_a_unary_worker_call_has_an_upstream_span_only_when_it_called_upstream(spans) -> None:
    tracer, exporter = spans
    calls = GenerateCalls(tracer, None, Table().config.providers)
    count = ppb.GenerateRequest(request=REQUEST, target=ppb.Target(provider="claude", model="claude-x"))
    calls.count(count).end(pb.CountTokensResponse(input_tokens=7, estimated=True))  # estimated: no HTTP call
    assert [s.name for s in exporter.get_finished_spans()] == ["switchyard.v1.Provider/CountTokens"]
    exporter.clear()
    embed = ppb.EmbedAttempt(target=ppb.Target(provider="claude", model="e"), attempt=1)
    calls.embed(embed).end(epb.EmbedResponse(error=pb.Error(status=502, code="upstream_error", upstream_status=503)))
    upstream, server = exporter.get_finished_spans()
    assert upstream.name == "POST" and upstream.parent.span_id == server.context.span_id
    assert upstream.attributes["http.response.status_code"] == 503 and upstream.status.status_code == StatusCode.ERROR
    assert upstream.attributes["server.address"] == "api.anthropic.com"
    assert upstream.start_time == server.start_time and upstream.end_time <= server.end_time


def test_bounded_labels_keep_the_first_values() -> None:
    bounded = metrics.Bounded(2)
    assert [bounded(v) for v in ("a", "b", "c", "a", "d")] == ["a", "b", "_other", "a", "_other"]


def test_otlp_endpoint_and_service_name_come_from_the_standard_variables() -> None:
    load = settings.load
    assert telemetry.otlp_traces_endpoint(load(settings.Common, {})) is None
    assert telemetry.otlp_traces_endpoint(load(settings.Common, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"})) \
        == "http://c:4318/v1/traces"
    assert telemetry.otlp_traces_endpoint(load(settings.Common, {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x"})) \
        == "http://t/x"
    assert telemetry.otlp_traces_endpoint(load(settings.Common, {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"})) is None
    assert telemetry.setup("router", load(settings.Common, {})) is None  # off: no tracer at all
    tracer = telemetry.setup("router", load(settings.Common, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                                                               "OTEL_SERVICE_NAME": "gateway-a"}))
    try:
        assert tracer.resource.attributes["service.name"] == "gateway-a"  # type: ignore[union-attr]
    finally:
        telemetry.shutdown()


async def test_unsampled_calls_are_observed_without_spans() -> None:
    """A trace the sampler dropped: failures are counted and nothing breaks."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    registry = metrics.new_registry()
    error = ppb.GenerateEvent(error=pb.Error(status=503, code="overloaded", upstream_status=503)).SerializeToString()

    async def failing(request: bytes, deadline: float | None) -> AsyncIterator[bytes]:
        yield error

    worker = GenerateCalls(tracer, metrics.GenAiClientMetrics(registry), Table().config.providers)
    assert await collect(observed(failing, worker)(generate_bytes(), None)) == [error]
    assert await collect(observed(failing, AttemptCalls(tracer, Table))(generate_bytes(), None)) == [error]
    assert exporter.get_finished_spans() == ()
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    (count,) = [s for s in families["gen_ai_client_operation_duration_seconds"].samples if s.name.endswith("_count")]
    assert count.labels["error_type"] == "overloaded" and count.value == 1


def test_unary_attempt_spans_name_the_model_that_answered(spans) -> None:
    tracer, exporter = spans
    unary = UnarySpans(tracer, Table)  # type: ignore[arg-type]
    call = unary.call("Embed", "r1", "vectors", {})
    embed = ppb.EmbedAttempt(request=epb.EmbedRequest(model="vectors", dimensions=8),
                             target=ppb.Target(provider="claude", model="embed-x"), attempt=1)
    attempt_ended(unary.embed_attempt(call, embed), "embed-x",
                  epb.EmbedResponse(usage=pb.Usage(prompt_tokens=3), upstream_model="embed-x-002"), None)
    count = ppb.GenerateRequest(request=REQUEST, target=ppb.Target(provider="claude", model="claude-x"), attempt=1)
    attempt_ended(unary.count_attempt(call, count), "claude-x", pb.CountTokensResponse(input_tokens=41), None)
    call_ended(call, None, False)
    embedded, counted, server = exporter.get_finished_spans()
    assert embedded.name == "embeddings embed-x" and counted.name == "count_tokens claude-x"
    assert embedded.attributes["gen_ai.response.model"] == "embed-x-002"  # what the upstream said answered
    assert embedded.attributes["gen_ai.embeddings.dimension.count"] == 8
    assert counted.attributes["gen_ai.usage.input_tokens"] == 41
    assert counted.attributes["gen_ai.operation.name"] == "count_tokens"
    assert embed.trace_context["traceparent"] and count.trace_context["traceparent"]  # passed to the worker
    assert embedded.parent.span_id == counted.parent.span_id == server.context.span_id
    assert server.name == "switchyard.v1.Router/Embed" and server.attributes["switchyard.outcome"] == "ok"
