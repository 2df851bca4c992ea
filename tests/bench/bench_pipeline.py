"""The router's request pipeline in process: CPU per request of the stages
themselves (template, plan, scope, strategy, attempt bookkeeping, usage
event), against a provider stub that answers at once, compared with relaying
the stub's events with no pipeline at all. Prints figures; never fails.

    .venv/bin/python tests/bench/bench_pipeline.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

import uvloop  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402

from router.breaker import BreakerBoard, breaker_settings  # noqa: E402
from router.observer import AttemptCalls, ChatCalls, ObservedUsage  # noqa: E402
from router.pipeline import Pipeline  # noqa: E402
from router.routes import RoutingTable  # noqa: E402
from switchyard import metrics  # noqa: E402
from switchyard.config import parse_config  # noqa: E402
from switchyard.session import observed  # noqa: E402
from switchyard.v1 import chat_pb2 as pb  # noqa: E402
from switchyard.v1 import provider_pb2 as ppb  # noqa: E402
from switchyard.v1 import usage_pb2 as upb  # noqa: E402

CONFIG = """
providers:
  a: {type: openai, base_url: "http://127.0.0.1:1/v1", models: [m1, m2, m3]}
routes:
  three:
    targets: [m1, m2, m3]
  exp:
    strategy: weighted
    sticky: end_user
    targets: [{model: m1, weight: 1}, {model: m2, weight: 1}]
templates:
  t:
    messages: [{role: system, content: "You help {{name}}."}]
"""
EVENTS = [ppb.GenerateEvent(chunk=pb.Chunk(choices=[pb.ChoiceDelta(index=0, content="hello", finish_reason="stop")]))
          .SerializeToString(),
          ppb.GenerateEvent(usage=pb.Usage(prompt_tokens=5, completion_tokens=1, cost_usd=1e-6)).SerializeToString()]


async def provider(request: bytes, timeout_s: float | None = None) -> AsyncIterator[bytes]:
    for event in EVENTS:
        yield event


class Sink:
    def record(self, event: upb.UsageEvent, headers: Mapping[str, str] | None = None) -> None:
        event.SerializeToString()  # what a real sink pays at least


class Drop(SpanExporter):
    """Spans are built, batched and handed over, then dropped (no I/O)."""

    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def request_bytes(model: str, *, template: bool = False, end_user: str = "") -> bytes:
    request = pb.ChatRequest(request_id="r", model=model, messages=[pb.Message(role="user", text="hi")])
    if template:
        request.routing.template = "t"
        request.routing.variables["name"] = "Ada"
    if end_user:
        request.routing.end_user = end_user
    return request.SerializeToString()


async def cpu_per_request(run, payload: bytes, count: int) -> float:
    for _ in range(200):  # warm-up
        async for _ in run(payload, None):
            pass
    began = time.process_time()
    for _ in range(count):
        async for _ in run(payload, None):
            pass
    return (time.process_time() - began) / count * 1e6


async def relay(payload: bytes, deadline: float | None) -> AsyncIterator[bytes]:
    """No pipeline: parse the request and relay the events."""
    pb.ChatRequest.FromString(payload)
    async for event in provider(payload):
        yield event


async def main(count: int) -> None:
    config = parse_config(CONFIG)
    table = RoutingTable(config)
    pipeline = Pipeline(lambda: table, provider, Sink(), BreakerBoard(*breaker_settings(config)))
    base = await cpu_per_request(relay, request_bytes("m1"), count)
    rows = [("relay only (reference)", base)]
    for name, payload in (("plain model", request_bytes("m1")),
                          ("@slug, 3-target fallback", request_bytes("@three")),
                          ("@slug, sticky weighted", request_bytes("@exp", end_user="u42")),
                          ("template + plain model", request_bytes("m1", template=True))):
        rows.append((name, await cpu_per_request(pipeline.stream, payload, count)))
    # The observer, as the router's __main__ wires it: metrics, then metrics and every trace sampled.
    router_metrics = metrics.RouterMetrics(metrics.new_registry())
    counted = Pipeline(lambda: table, provider, ObservedUsage(Sink(), router_metrics),
                       BreakerBoard(*breaker_settings(config)))
    rows.append(("plain model, metrics on", await cpu_per_request(
        observed(counted.stream, ChatCalls(None, router_metrics)), request_bytes("m1"), count)))
    tracing = TracerProvider()
    tracing.add_span_processor(BatchSpanProcessor(Drop(), schedule_delay_millis=200))
    tracer = tracing.get_tracer("bench")
    traced = Pipeline(lambda: table, observed(provider, AttemptCalls(tracer, lambda: table)),
                      ObservedUsage(Sink(), router_metrics), BreakerBoard(*breaker_settings(config)))
    rows.append(("  + traces, 100 % sampled", await cpu_per_request(
        observed(traced.stream, ChatCalls(tracer, router_metrics)), request_bytes("m1"), count)))
    tracing.shutdown()
    print(f"\nrouter pipeline, in process, {count:,} requests each (CPU us per request)")
    print(f"{'case':<28} {'total':>8} {'pipeline':>9}")
    for name, value in rows:
        print(f"{name:<28} {value:8.1f} {value - base:9.1f}")
    print("target: pipeline <= 50 us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    uvloop.run(main(parser.parse_args().requests))
