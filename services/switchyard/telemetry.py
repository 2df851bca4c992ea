"""Tracing: one trace per request across edge, router, provider worker and
the upstream call, with W3C trace context carried inside the requests
themselves (ChatRequest/GenerateRequest ``trace_context``) so it survives
multiplexed sessions, and in the usage event's NATS headers.

Off unless ``SWITCHYARD_TRACE_DIR`` is set: then each process writes its
finished spans as JSON lines to ``<dir>/<service>-<pid>.jsonl`` from a
background thread (never on the event loop). ``SWITCHYARD_TRACE_SAMPLE``
(0..1, default 1) samples new traces; a sampled parent is always followed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

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


def setup(service: str) -> Tracer | None:
    """The service's tracer, or None when tracing is off (then nothing is
    recorded and the request path pays nothing)."""
    global _provider
    folder = os.environ.get("SWITCHYARD_TRACE_DIR")
    if not folder:
        return None
    ratio = float(os.environ.get("SWITCHYARD_TRACE_SAMPLE", "1"))
    _provider = TracerProvider(resource=Resource.create({"service.name": f"switchyard-{service}"}),
                               sampler=ParentBased(TraceIdRatioBased(ratio)))
    exporter = JsonLinesExporter(Path(folder) / f"{service}-{os.getpid()}.jsonl")
    _provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    return _provider.get_tracer("switchyard")


def shutdown() -> None:
    """Flush and stop the exporter (at process exit)."""
    if _provider is not None:
        _provider.shutdown()


def inject(span: Span) -> dict[str, str]:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def extract(carrier: Mapping[str, str]) -> Context:
    return _PROPAGATOR.extract(carrier)
