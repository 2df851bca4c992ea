"""Embeddings, token counts and model listing through the router's stages
(plan, scope, strategies, retries, usage), with a scripted provider worker."""

from __future__ import annotations

import pytest

from router.breaker import BreakerBoard
from router.listing import get_model, list_models
from router.unary import UnaryRouter
from switchyard.config import BreakerSettings
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb
from switchyard.v1 import provider_pb2 as ppb
from tests.unit.router.scripted import table
from tests.unit.router.test_governance import memory_governor
from tests.unit.router.test_pipeline import Sink

ROUTES = """
routes:
  pair:
    targets: [m1, m2]
  split:
    strategy: weighted
    sticky: end_user
    targets:
      - {model: m1, name: one, weight: 1}
      - {model: m3, name: three, weight: 1}
  sized:
    strategy: conditional
    targets:
      - {model: m2, when: {prompt_chars: {gt: 20}}}
      - {model: m1}
  careful:
    targets:
      - {model: m1, retry: {max_attempts: 3, initial_backoff_s: 0, max_backoff_s: 0}}
templates:
  intro:
    messages: [{role: system, content: hello}]
    model: m2
  free:
    messages: [{role: system, content: hi}]
"""


class Worker:
    """Answers per model: a list of errors to give first, then vectors."""

    def __init__(self, failures: dict[str, list[pb.Error]] | None = None) -> None:
        self.failures = {k: list(v) for k, v in (failures or {}).items()}
        self.calls: list[ppb.EmbedAttempt] = []

    async def embed(self, attempt: ppb.EmbedAttempt, timeout: float | None = None) -> epb.EmbedResponse:  # noqa: ASYNC109 - a gRPC stub's signature
        self.calls.append(attempt)
        pending = self.failures.get(attempt.target.model)
        if pending:
            return epb.EmbedResponse(error=pending.pop(0))
        vectors = [bytes(4 * 3)] * len(attempt.request.inputs)
        return epb.EmbedResponse(vectors=vectors, usage=pb.Usage(prompt_tokens=7, total_tokens=7, cost_usd=0.5))

    async def count(self, request: ppb.GenerateRequest,
                    timeout: float | None = None) -> pb.CountTokensResponse:  # noqa: ASYNC109 - a gRPC stub's signature
        return pb.CountTokensResponse(input_tokens=len(request.request.messages) * 10)


def unavailable() -> pb.Error:
    return pb.Error(status=503, type="api_error", code="service_unavailable", retryable=True, message="down")


def router(worker: Worker, extra: str = ROUTES) -> tuple[UnaryRouter, Sink]:
    sink = Sink()
    snapshot = table(extra)
    return UnaryRouter(lambda: snapshot, BreakerBoard(BreakerSettings()), sink, worker.embed, worker.count), sink


def request(model: str, *texts: str, **identity: object) -> epb.EmbedRequest:
    out = epb.EmbedRequest(request_id="r1", model=model, identity=pb.Identity(key_id="k", tenant="t", **identity))
    out.inputs.extend(epb.EmbedInput(text=t) for t in texts or ("hi",))
    return out


async def test_embeds_and_meters_once() -> None:
    worker = Worker()
    unary, sink = router(worker)
    reply = await unary.embed(request("quick", "a", "b"), None)
    assert len(reply.vectors) == 2 and reply.usage.prompt_tokens == 7
    assert (reply.started.provider, reply.started.model, reply.started.model_requested) == ("a", "m1", "quick")
    [event] = sink.events
    assert (event.endpoint, event.status, event.model, event.key_id) == ("embeddings", "ok", "m1", "k")
    assert event.usage.cost_usd == 0.5 and len(event.attempts) == 1


async def test_routing_config_falls_back_before_any_answer() -> None:
    worker = Worker({"m1": [unavailable()]})
    unary, sink = router(worker)
    reply = await unary.embed(request("@pair"), None)
    assert (reply.started.model, reply.started.route) == ("m2", "pair")
    assert [c.target.model for c in worker.calls] == ["m1", "m2"]
    assert [a.outcome for a in sink.events[0].attempts] == ["error", "ok"] and sink.events[0].route == "pair"


async def test_retries_in_place() -> None:
    worker = Worker({"m1": [unavailable(), unavailable()]})
    unary, _ = router(worker)
    reply = await unary.embed(request("@careful"), None)
    assert not reply.HasField("error") and len(worker.calls) == 3


async def test_weighted_arm_is_sticky_and_conditions_see_the_text() -> None:
    unary, _ = router(Worker())
    first = await unary.embed(request("@split"), None)
    again = [await unary.embed(_with_user(request("@split")), None) for _ in range(3)]
    assert len({r.started.arm for r in again}) == 1 and first.started.route == "split"
    long = await unary.embed(request("@sized", "x" * 30), None)
    short = await unary.embed(request("@sized", "x"), None)
    assert (long.started.model, short.started.model) == ("m2", "m1")


def _with_user(req: epb.EmbedRequest) -> epb.EmbedRequest:
    req.routing.end_user = "user-7"
    return req


async def test_client_errors_and_scope() -> None:
    worker = Worker({"m1": [pb.Error(status=400, type="invalid_request_error", message="bad", param="input")]})
    unary, sink = router(worker)
    reply = await unary.embed(request("@pair"), None)
    assert reply.error.status == 400 and len(worker.calls) == 1  # not a failure to fall back from
    denied = await unary.embed(request("m2", restricted=True, allowed_models=["m1"]), None)
    assert denied.error.status == 403 and denied.error.code == "model_not_allowed"
    missing = await unary.embed(request("nope"), None)
    assert missing.error.status == 404
    assert [e.status for e in sink.events] == ["error", "error", "error"]
    assert len(worker.calls) == 1  # neither reached a worker


async def test_count_tokens_uses_the_plan_and_templates() -> None:
    worker = Worker()
    unary, sink = router(worker)
    chat = pb.ChatRequest(request_id="c", model="quick", messages=[pb.Message(role="user", text="hi")])
    chat.routing.template = "intro"
    reply = await unary.count_tokens(chat, None)
    assert reply.input_tokens == 20 and reply.started.model == "m1"  # the template's message counts
    assert sink.events == []  # counting is free


@pytest.mark.parametrize(("identity", "visible"), [
    (pb.Identity(), {"m1", "m3", "m2", "quick", "@pair", "@split", "@sized", "@careful", "intro", "free"}),
    (pb.Identity(restricted=True, allowed_models=["m1", "@split"]),
     {"m1", "quick", "@careful", "@split", "free"}),  # m3 only through @split
])
def test_listing_applies_scope(identity: pb.Identity, visible: set[str]) -> None:
    listing = list_models(table(ROUTES), identity)
    assert {m.id for m in listing.models} == visible
    kinds = {m.id: (m.kind, m.version, m.model) for m in listing.models}
    if "@split" in visible:
        assert kinds["@split"] == ("route", 1, "")
    assert kinds["free"] == ("template", 0, "")


def test_get_model() -> None:
    snapshot = table(ROUTES)
    assert get_model(snapshot, pb.Identity(), "local/any-model").models[0].owned_by == "local"
    assert get_model(snapshot, pb.Identity(), "quick").models[0].model == "a/m1"
    assert get_model(snapshot, pb.Identity(), "intro").models[0].kind == "template"
    assert get_model(snapshot, pb.Identity(), "@pair@1").models[0].version == 1
    assert get_model(snapshot, pb.Identity(), "missing").error.status == 404
    limited = pb.Identity(restricted=True, allowed_models=["m1"])
    assert get_model(snapshot, limited, "m2").error.status == 403
    assert get_model(snapshot, limited, "intro").error.status == 404


async def test_embeddings_pass_the_keys_rate_limit_and_budget() -> None:
    worker = Worker()
    snapshot = table(ROUTES)
    sink = Sink()
    unary = UnaryRouter(lambda: snapshot, BreakerBoard(BreakerSettings()), sink, worker.embed, worker.count,
                        memory_governor())
    limited = pb.Identity(key_id="k", tenant="t", key_limit=pb.RateLimit(rpm=1))
    first = await unary.embed(epb.EmbedRequest(request_id="e1", model="quick", identity=limited,
                                               inputs=[epb.EmbedInput(text="a")]), None)
    assert not first.HasField("error")
    assert first.started.headers["x-ratelimit-remaining-requests"] == "0"  # on every answer, as for chat
    refused = await unary.embed(epb.EmbedRequest(request_id="e2", model="quick", identity=limited,
                                                 inputs=[epb.EmbedInput(text="a")]), None)
    assert refused.error.status == 429 and refused.error.headers["x-ratelimit-limit-requests"] == "1"
    assert len(worker.calls) == 1  # the refused request reached no provider
    assert [e.http_status for e in sink.events] == [200, 429]
