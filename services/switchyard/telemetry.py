"""Tracing: one trace per request across edge, router, provider worker and
the upstream call, with W3C trace context carried inside the requests
themselves (ChatRequest/GenerateRequest ``trace_context``) so it survives
multiplexed sessions, and in the usage event's NATS headers.

Exporters, from the standard OpenTelemetry variables and Switchyard's own
(``switchyard.settings.Common``):

- OTLP over HTTP (the official exporter) when ``OTEL_EXPORTER_OTLP_ENDPOINT``
  or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (and
  ``OTEL_TRACES_EXPORTER`` is not ``none``);
- JSON lines in ``SWITCHYARD_TRACE_DIR/<service>-<pid>.jsonl``, a local option.

Both run on the SDK's background thread, never on the event loop. With
neither, ``setup`` returns None and nothing on the request path is traced.
``OTEL_TRACES_SAMPLER`` (and ``_ARG``) choose the sampler; otherwise new
traces are sampled at ``SWITCHYARD_TRACE_SAMPLE`` and a sampled parent is
always followed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from switchyard.settings import Common

_PROPAGATOR = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None


class JsonLinesExporter(SpanExporter):
    """Finished spans as one JSON object per line in a local file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                self._file.write(span.to_json(indent=None) + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def otlp_traces_endpoint(settings: Common) -> str | None:
    """Where OTLP/HTTP spans go, by the specification's rules: the signal's
    own variable as given, else the base endpoint plus ``/v1/traces``."""
    if (settings.traces_exporter or "otlp").lower() == "none":
        return None
    if settings.otlp_traces_endpoint:
        return settings.otlp_traces_endpoint
    if settings.otlp_endpoint:
        return settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    return None


def setup(service: str, settings: Common, pid: int | None = None) -> Tracer | None:
    """The service's tracer, or None when tracing is off (then nothing is
    recorded and the request path pays nothing)."""
    global _provider
    exporters: list[tuple[SpanExporter, float | None]] = []
    if endpoint := otlp_traces_endpoint(settings):
        # Imported only when used: the exporter pulls in requests and the OTLP messages.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append((OTLPSpanExporter(endpoint=endpoint), None))  # batching from OTEL_BSP_* (SDK defaults)
    if settings.trace_dir:
        path = Path(settings.trace_dir) / f"{service}-{pid or os.getpid()}.jsonl"
        exporters.append((JsonLinesExporter(path), 200))
    if not exporters:
        return None
    # None: the SDK reads OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG itself.
    sampler = None if settings.traces_sampler else ParentBased(TraceIdRatioBased(settings.trace_sample))
    resource = Resource.create({"service.name": settings.service_name or f"switchyard-{service}",
                                "service.namespace": "switchyard"})
    _provider = TracerProvider(resource=resource, sampler=sampler)
    for exporter, delay_ms in exporters:
        _provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay_ms))
    return _provider.get_tracer("switchyard")


def shutdown() -> None:
    """Flush and stop the exporters (at process exit)."""
    if _provider is not None:
        _provider.shutdown()


def inject(span: Span) -> dict[str, str]:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def inject_current(carrier: MutableMapping[str, str]) -> None:
    """The current span's context into ``carrier`` (nothing when no span is
    being recorded: tracing off, or the trace not sampled)."""
    if _provider is not None and trace.get_current_span().get_span_context().is_valid:
        _PROPAGATOR.inject(carrier)


def extract(carrier: Mapping[str, str]) -> Context:
    return _PROPAGATOR.extract(carrier)
