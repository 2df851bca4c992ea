"""The router's request path, stage by stage, with a scripted provider."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from router.breaker import BreakerBoard
from router.pipeline import Pipeline
from switchyard.config import BreakerSettings
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb
from switchyard.v1 import usage_pb2 as upb
from tests.unit.router.scripted import REQUEST, Provider, answer, copy, error, table

TEMPLATES = """
templates:
  greet:
    id: 0b9a3c52-5a7e-4d4e-9a55-3f0c6c1c9e10
    messages:
      - {role: system, content: "You help {{name}} in {{lang}}."}
    model: m2
    params: {temperature: 0.4, max_tokens: 50}
routes:
  pair:
    targets: [m1, m2]
  wide:
    targets: [m1, "@pair", local/anything]
"""


class Sink:
    def __init__(self) -> None:
        self.events: list[upb.UsageEvent] = []

    def record(self, event: upb.UsageEvent, headers: Mapping[str, str] | None = None) -> None:
        self.events.append(event)


async def run(request: pb.ChatRequest, provider: Provider) -> tuple[list[pb.ChatEvent], Sink]:
    sink = Sink()
    routing = table(TEMPLATES)
    pipeline = Pipeline(lambda: routing, provider, sink, BreakerBoard(BreakerSettings()))
    events = [pb.ChatEvent.FromString(raw) async for raw in pipeline.stream(request.SerializeToString(), None)]
    return events, sink


def request(model: str = "m1", **routing: object) -> pb.ChatRequest:
    out = copy(REQUEST)
    out.model = model
    for name, value in routing.items():
        field = getattr(out.routing, name)
        if isinstance(value, dict):
            field.update(value)
        elif isinstance(value, list):
            field.extend(value)
        else:
            setattr(out.routing, name, value)
    return out


async def test_template_messages_model_and_defaults() -> None:
    provider = Provider(answer())
    req = request("", template="greet", variables={"name": "Ada", "lang": "{{secret}}"})
    req.sampling.max_tokens = 10  # the request's own value wins over the template's default
    events, sink = await run(req, provider)
    sent = provider.requests[0]
    assert sent.target.model == "m2"
    assert [m.role for m in sent.request.messages] == ["system", "user"]
    # A value is text: "{{secret}}" is not rendered again.
    assert sent.request.messages[0].text == "You help Ada in {{secret}}."
    assert sent.request.sampling.temperature == pytest.approx(0.4) and sent.request.sampling.max_tokens == 10
    assert not sent.request.routing.variables  # prompt content goes no further than needed
    assert events[0].started.model == "m2" and sink.events[0].status == "ok"


async def test_template_by_id_and_the_errors() -> None:
    provider = Provider(answer())
    await run(request("m1", template="0b9a3c52-5a7e-4d4e-9a55-3f0c6c1c9e10", variables={"name": "a", "lang": "b"}),
              provider)
    assert provider.requests[0].target.model == "m1"  # the request's model wins over the template's
    events, sink = await run(request("", template="greet", variables={"name": "Ada"}), Provider())
    assert (events[0].error.status, events[0].error.param) == (400, "variables.lang")
    events, _ = await run(request("", template="nope"), Provider())
    assert (events[0].error.status, events[0].error.code, events[0].error.param) == \
        (404, "template_not_found", "template")
    assert sink.events[0].status == "error" and sink.events[0].http_status == 400


async def test_key_default_model_applies_last() -> None:
    provider = Provider(answer())
    req = request("")
    req.identity.default_model = "quick"
    await run(req, provider)
    assert provider.targets == ["a/m1"]
    events, _ = await run(request(""), Provider())
    assert (events[0].error.status, events[0].error.param) == (400, "model")


def restricted(req: pb.ChatRequest, *allowed: str) -> pb.ChatRequest:
    req.identity.restricted = True
    req.identity.allowed_models.extend(allowed)
    return req


@pytest.mark.parametrize(("req", "param"), [
    (restricted(request("m1", fallbacks=["m2"]), "m1"), "fallbacks[0]"),   # the bug this stage fixes
    (restricted(request("@pair"), "m1"), "model"),
    (restricted(request("@wide"), "@pair", "m1"), "model"),             # local/anything is out of scope
    (restricted(request("", template="greet", variables={"name": "a", "lang": "b"}), "m1"), "model"),
])
async def test_scope_applies_to_every_target_the_request_can_reach(req: pb.ChatRequest, param: str) -> None:
    provider = Provider(answer())
    events, sink = await run(req, provider)
    assert (events[0].error.status, events[0].error.code, events[0].error.param) == (403, "model_not_allowed", param)
    assert provider.requests == []  # nothing upstream was called
    assert sink.events[0].http_status == 403


async def test_scope_grants_what_a_listed_config_reaches() -> None:
    provider = Provider([error(503, True)], answer())
    events, _ = await run(restricted(request("@pair"), "@pair"), provider)
    assert provider.targets == ["a/m1", "b/m2"] and events[0].started.route == "pair"
    provider = Provider(answer())
    await run(restricted(request("quick", fallbacks=["b/m2"]), "m1", "m2"), provider)
    assert provider.targets == ["a/m1"]


async def test_decision_trace_and_usage_event() -> None:
    provider = Provider([error(503, True)], answer())
    req = request("@pair", trace=True, end_user="u1", tags={"team": "x"})
    events, sink = await run(req, provider)
    trace = events[-1].trace
    assert trace.resolved_by == "route"
    assert [(r.route, r.version, r.strategy) for r in trace.routes] == [("pair", 1, "fallback")]
    assert [(a.model, a.outcome, a.status) for a in trace.attempts] == [("m1", "error", 503), ("m2", "ok", 0)]
    assert "hi" not in str(trace)  # never prompt text
    usage = sink.events[0]
    assert (usage.route, usage.route_version, usage.model, usage.provider) == ("pair", 1, "m2", "b")
    assert (usage.end_user, dict(usage.tags), usage.status) == ("u1", {"team": "x"}, "ok")
    assert len(usage.attempts) == 2


async def test_usage_event_records_the_experiment_arm() -> None:
    routing_extra = "  exp:\n    strategy: weighted\n    sticky: end_user\n    targets:\n" \
                    "      - {model: m1, name: left, weight: 1}\n      - {model: m2, name: right, weight: 1}\n"
    sink = Sink()
    routing = table(TEMPLATES + routing_extra)
    pipeline = Pipeline(lambda: routing, Provider(answer()), sink, BreakerBoard(BreakerSettings()))
    req = request("@exp", end_user="u7")
    events = [pb.ChatEvent.FromString(raw) async for raw in pipeline.stream(req.SerializeToString(), None)]
    assert sink.events[0].route_arm == events[0].started.arm in ("left", "right")


async def test_the_workers_timing_rides_on_the_started_event_and_goes_no_further() -> None:
    worker = ppb.GenerateEvent(timing=pb.Timing(provider_us=120, upstream_us=3000,
                                                provider_total_us=3200)).SerializeToString()
    events, _ = await run(request("@pair"), Provider([error(503, True)], [worker, *answer("hi")]))
    assert [e.WhichOneof("event") for e in events] == ["started", "chunk", "usage"]
    timing = events[0].started.timing
    assert (timing.provider_us, timing.upstream_us, timing.provider_total_us) == (120, 3000, 3200)
    assert 0 < timing.router_us <= timing.router_total_us  # the router's own share, then until the first output
    events, _ = await run(request("m1"), Provider(answer("no timing")))  # a worker that sends none
    assert events[0].started.timing.provider_total_us == 0 and events[0].started.timing.router_total_us > 0
