"""Prometheus metrics: one registry per process, served as ``/metrics`` on a
listener of its own (``SWITCHYARD_<SERVICE>_METRICS_ADDRESS``), never on a
public one.

Label values are bounded: no request ids and no end users are labels, and a
label whose values come from outside (a model name a pass-through provider
accepts, an upstream's error code) keeps its first ``limit`` values and
reports the rest as ``_other`` (``Bounded``), so no client can grow the
series count.

The metric families each service records live here too, so their names and
labels are in one place (README: Metrics).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from switchyard.genai import DURATION_BUCKETS, TOKEN_BUCKETS
from switchyard.http_site import start_site

if TYPE_CHECKING:
    from switchyard.events import UsagePublisher

log = logging.getLogger(__name__)

OTHER = "_other"
# Requests and streams can run for minutes (reasoning models, long answers).
LONG_DURATION_BUCKETS = (*DURATION_BUCKETS, 163.84, 327.68, 655.36)


class Bounded:
    """At most ``limit`` distinct values of one label; later ones are ``_other``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value


class Labeled:
    """A metric's children by label values, cached: prometheus_client's
    ``labels()`` costs microseconds, a dict lookup a fraction of one. The
    cache holds one child per series, which the bounded labels keep few."""

    __slots__ = ("children", "metric")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = self.metric.labels(*values)
        return child


HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


def http_method(method: str) -> str:
    """A known method, else ``_OTHER`` (as the HTTP conventions say): a client
    can send any token as a method."""
    return method if method in HTTP_METHODS else "_OTHER"


def new_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


async def serve(address: str, registry: CollectorRegistry) -> web.AppRunner:
    """``GET /metrics`` on ``address`` (``host:port`` or ``unix:/path``)."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"content-type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await start_site(runner, address)
    log.info("metrics on %s/metrics", address)
    return runner


# ------------------------------------------------------------------- HTTP --

class HttpMetrics:
    """An aiohttp service's requests (edge, analytics), by route and status."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Labeled(Histogram(
            "http_server_request_duration_seconds", "HTTP requests served, by route, method and status "
            "(streams: until the last byte)", ["http_route", "http_request_method", "http_response_status_code"],
            buckets=LONG_DURATION_BUCKETS, registry=registry))
        self.active = Gauge("http_server_active_requests", "HTTP requests in flight", registry=registry)


# ----------------------------------------------------------------- router --

class RouterMetrics:
    """Client requests as the router settled them (one usage event each)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["endpoint", "route", "model", "provider", "status"]
        self.requests = Labeled(Counter(
            "switchyard_requests", "Client requests by endpoint, routing config, the model and provider that "
            "answered, and outcome (ok, error, cancelled)", labels, registry=registry))
        self.duration = Labeled(Histogram(
            "switchyard_request_duration_seconds", "Request latency in the router (streams: until the last event)",
            labels, buckets=LONG_DURATION_BUCKETS, registry=registry))
        self.ttft = Labeled(Histogram(
            "switchyard_time_to_first_token_seconds", "Time from the request's arrival to the first output",
            labels[:-1], buckets=DURATION_BUCKETS, registry=registry))
        self.tokens = Labeled(Histogram(
            "switchyard_token_usage", "Tokens per request by type (input, output, cache_read, cache_creation, "
            "reasoning), as gen_ai.client.token.usage", ["route", "model", "provider", "token_type"],
            buckets=TOKEN_BUCKETS, registry=registry))
        self.cost = Labeled(Counter("switchyard_cost_usd", "Spend computed by the gateway, in US dollars",
                                    ["route", "model", "provider"], registry=registry))
        self.cost_saved = Counter("switchyard_cost_saved_usd", "Spend avoided (response cache hits)",
                                  registry=registry)
        self.cache = Labeled(Counter("switchyard_cache_requests", "Requests by response-cache status (hit, miss, "
                                     "bypass)", ["status"], registry=registry))
        self.rejections = Labeled(Counter(
            "switchyard_admission_rejections", "Requests refused before any attempt: rate limits, concurrency "
            "caps, budgets, scope (by HTTP status and error type)", ["http_status", "error_type"],
            registry=registry))
        self.attempts = Labeled(Counter("switchyard_attempts", "Attempts by provider, model and outcome (ok, "
                                        "error, cancelled, skipped, rejected)", ["provider", "model", "outcome"],
                                        registry=registry))
        self.in_flight = Gauge("switchyard_in_flight_requests", "Requests the router is serving", registry=registry)


def publish_lag(registry: CollectorRegistry) -> Callable[[float], None]:
    """How long usage events took from their request's end to NATS's ack."""
    return Histogram("switchyard_usage_publish_lag_seconds", "Time from a request's usage event to its "
                     "acknowledgement by NATS (replays from the spool included)",
                     buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600),
                     registry=registry).observe


# -------------------------------------------------------------- providers --

class GenAiClientMetrics:
    """The provider worker's upstream calls, as the GenAI conventions'
    client metrics (gen_ai.client.token.usage, gen_ai.client.operation.*)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "switchyard_provider"]
        self.tokens = Labeled(Histogram("gen_ai_client_token_usage", "Number of input and output tokens used",
                                        [*labels, "gen_ai_token_type"], buckets=TOKEN_BUCKETS, registry=registry))
        self.duration = Labeled(Histogram("gen_ai_client_operation_duration_seconds", "GenAI operation duration",
                                          [*labels, "error_type"], buckets=LONG_DURATION_BUCKETS,
                                          registry=registry))
        self.ttfc = Labeled(Histogram("gen_ai_client_operation_time_to_first_chunk_seconds", "Time to receive "
                                      "the first chunk of a streaming answer", labels, buckets=DURATION_BUCKETS,
                                      registry=registry))
        self.in_flight = Gauge("switchyard_provider_in_flight_attempts", "Upstream calls in flight",
                               registry=registry)


# ------------------------------------------------------------- collectors --

class StateCollector(Collector):
    """Gauges read at scrape time from ``source`` (no cost per request):
    ``source()`` yields (name, help, labels, rows) with rows of (label
    values, value)."""

    def __init__(self, source: Callable[[], Iterable[tuple[str, str, list[str], Iterable[tuple[Any, float]]]]]):
        self.source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, doc, labels, rows in self.source():
            family = GaugeMetricFamily(name, doc, labels=labels)
            for values, value in rows:
                family.add_metric([str(v) for v in values], value)
            yield family


State = Iterator[tuple[str, str, list[str], list[Any]]]


def publisher_metrics(publisher: UsagePublisher) -> State:
    """A usage publisher's gauges, for a ``StateCollector``: what became of
    its events, what is pending, how big its spool is."""
    try:
        spool_bytes = os.path.getsize(publisher.spool.path)
    except OSError:
        spool_bytes = 0
    yield ("switchyard_usage_events", "Usage events by what became of them since start (published, spooled to "
           "disk, spool write errors, dropped)", ["state"],
           [(("published",), publisher.published), (("spooled",), publisher.spooled),
            (("write_errors",), publisher.write_errors), (("dropped",), publisher.dropped)])
    yield ("switchyard_usage_pending_events", "Usage events not yet on NATS: queued, or held in memory while the "
           "spool is unwritable", ["where"], [(("queued",), publisher.queued), (("held",), publisher.held)])
    yield ("switchyard_usage_spool_bytes", "Size of the spool of events waiting for NATS", [],
           [((), spool_bytes)])
