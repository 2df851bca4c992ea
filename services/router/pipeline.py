"""One client request through the router, top to bottom:

1. expand  — a stored template's messages, model and parameters (templates.py)
2. plan    — the model identifier and fallbacks into a plan (routes.py)
3. admit   — the key's scope over every target the plan can reach (admission.py);
             after planning, because the scope applies to what the plan reaches;
             then the key's and end user's rate limits, concurrency cap and the
             key's, end user's and tenant's budgets (governance.py)
4. cache   — a hit is replayed from the shared store and never reaches a provider
             worker (it still counts against rate limits, and costs nothing); a
             non-streaming miss identical to a request running here waits for it;
             otherwise the answer is recorded for storing (cache.py)
5. run     — strategies drive attempts, falling back only before output (policy.py,
             one attempt in execute.py); a model's shared limit is charged when a
             routing config or a fallback reaches it; a hard budget meters the stream
6. settle  — a complete answer stored, the decision trace if asked for, an answer
             cut before its usage billed by estimate, one usage event always
             (usage.py), reservations settled

Each stage raises a ``SwitchyardError`` for the client (nothing upstream has
been called before ``run``) or streams ChatEvent bytes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from router.admission import check_scope
from router.breaker import BreakerBoard
from router.cache import ResponseCache, Ticket
from router.execute import BeforeOutputError, Outcome, RunContext
from router.governance import Governor, Grant, ModelGate, budget_cut
from router.limits import headers
from router.policy import plan_failed, stream_node
from router.routes import Plan, RoutingTable
from router.usage import UsageSink, bill_unfinished, build_usage_event
from switchyard import event_tags
from switchyard.errors import InvalidRequestError, SwitchyardError
from switchyard.session import Streamer
from switchyard.v1 import chat_pb2 as pb


class Pipeline:
    def __init__(self, table: Callable[[], RoutingTable], generate: Streamer, usage: UsageSink,
                 breakers: BreakerBoard, governor: Governor | None = None,
                 cache: ResponseCache | None = None) -> None:
        self.governor = governor
        self.table = table
        self.generate = generate
        self.usage = usage
        self.breakers = breakers
        self.cache = cache or ResponseCache()

    async def stream(self, request_bytes: bytes, deadline: float | None) -> AsyncIterator[bytes]:
        """ChatEvent bytes for one request; ``deadline`` is time.monotonic()-based."""
        received = time.monotonic()
        request = pb.ChatRequest.FromString(request_bytes)
        table = self.table()  # this request keeps the snapshot it started with
        outcome = Outcome()
        plan: Plan | None = None
        grant: Grant | None = None
        models: ModelGate | None = None
        cached: Ticket | None = None
        try:
            try:
                request_bytes = expand(table, request, request_bytes, outcome)
                plan = table.plan(request.model, request.routing.fallbacks)
                check_scope(request.identity, plan, list(request.routing.fallbacks))
                if self.governor is not None:
                    grant = await self.governor.admit(request, plan, table)
            except SwitchyardError as exc:
                outcome.error = exc.to_proto()
                yield pb.ChatEvent(error=outcome.error).SerializeToString()
                return
            limit_headers = headers(grant.decision) if grant is not None and grant.decision is not None else None
            cached = self.cache.admit(request, plan, table)
            if cached.applies:
                outcome.cache_status = cached.status
            entry = await self.cache.lookup(cached) if cached.read else None
            if entry is None and cached.coalesce_s:
                remaining = deadline - time.monotonic() if deadline is not None else None
                entry = await self.cache.coalesce(cached, request, remaining)
            if entry is not None:
                for raw in self.cache.replay(entry, cached, request, plan, outcome, limit_headers, received):
                    yield raw
                if request.routing.trace:
                    yield pb.ChatEvent(trace=decision_trace(plan, outcome, cached.to_proto())).SerializeToString()
                return
            if (refused := self.cache.refusal(request, cached)) is not None:  # only-if-cached
                outcome.error = refused
                yield pb.ChatEvent(error=refused).SerializeToString()
                return
            models = self.governor.model_gate(request, plan, table, grant) if self.governor is not None else None
            ctx = RunContext(request, request_bytes, deadline, self.generate, self.breakers, plan, outcome,
                             table.provider_types, cache=cached.status, models=models, headers=limit_headers,
                             received=received)
            record = self.cache.recorder(cached, request)
            events = stream_node(plan.root, ctx, "")
            meter = grant.meter if grant is not None else None
            try:
                async for raw in events:
                    if outcome.first_output_at is None and raw[0] == event_tags.STARTED:
                        outcome.first_output_at = time.monotonic()
                    elif meter is not None and raw[0] == event_tags.CHUNK and not await meter.allow(raw):
                        outcome.error = budget_cut()
                        yield pb.ChatEvent(error=outcome.error).SerializeToString()
                        break
                    if record is not None and record.add(raw):
                        self.cache.finish(cached, record, outcome)  # complete: stored before the client has it
                    yield raw
            except BeforeOutputError as exc:
                outcome.error = plan_failed(exc.error, ctx)
                yield pb.ChatEvent(error=outcome.error).SerializeToString()
            finally:
                await events.aclose()
            if record is not None:
                self.cache.finish(cached, record, outcome)
            if request.routing.trace:
                yield pb.ChatEvent(trace=decision_trace(plan, outcome, cached.to_proto())).SerializeToString()
        finally:
            if cached is not None:
                self.cache.release(cached)  # requests waiting for this answer get it, or run themselves
            if models is not None:
                grant = models.grant  # the admission's grant, or one holding only models' limits
            if outcome.unbilled:
                bill_unfinished(request, outcome, table, grant.meter.delivered_tokens
                                if grant is not None and grant.meter is not None else None)
            if grant is not None:
                self.governor.settle(grant, outcome.usage)  # type: ignore[union-attr]
            self.usage.record(build_usage_event(request, plan, outcome, received))


def expand(table: RoutingTable, request: pb.ChatRequest, request_bytes: bytes, outcome: Outcome) -> bytes:
    """The expand stage, in place on ``request``; the request bytes to send on."""
    template = table.templates.expand(request)
    if template is not None:
        outcome.template = template.name
    if not request.model:
        if not request.identity.default_model:
            raise InvalidRequestError("you must provide a model parameter", param="model")
        request.model = request.identity.default_model
        if template is None:  # protobuf merges appended fields: no need to re-serialise
            return request_bytes + pb.ChatRequest(model=request.model).SerializeToString()
    return request.SerializeToString() if template is not None else request_bytes


def decision_trace(plan: Plan, outcome: Outcome, cache: pb.CacheDecision | None = None) -> pb.DecisionTrace:
    trace = pb.DecisionTrace(resolved_by=plan.resolved_by, routes=[r.to_proto() for r in outcome.routes],
                             template=outcome.template, cache=cache)
    for attempt in outcome.attempts:
        attempt.to_proto(trace.attempts.add())
    return trace
