"""Single-answer requests through the same stages as chat: embeddings and
token counts.

plan (routes.py) → admit (the key's scope, admission.py; for embeddings also
the governor's limits and budgets) → run → settle.
Nothing is streamed, so every failure is "before output": a routing
config's strategy picks or falls back exactly as for chat (fallback and
cascade try their targets in order, moving on for the classes in
``fallback_on``; weighted picks the sticky arm; conditional the first rule
that holds), each target retried in place by its retry policy and skipped
while its circuit breaker is open. Embeddings emit one usage event per
request (``endpoint: embeddings``); counting tokens is free and emits none.
"""

from __future__ import annotations

import time
from asyncio import sleep
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from opentelemetry.trace import Span

from router.admission import check_scope
from router.breaker import BreakerBoard
from router.execute import Attempt, BeforeOutputError, Decision, Outcome
from router.governance import Governor, Grant
from router.limits import headers
from router.policy import _upstream_fault, arm_index, falls_back, most_informative, plan_failed
from router.retry import backoff_s
from router.routes import Branch, Leaf, Node, Plan, RoutingTable
from router.unary_spans import UnarySpans, attempt_ended, call_ended
from router.usage import UsageSink, build_usage_event
from switchyard.conditions import RequestFacts
from switchyard.errors import InvalidRequestError, SwitchyardError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb
from switchyard.v1 import provider_pb2 as ppb

TRANSPORT_RETRIES = 5  # a vanished provider worker: the same target again, on another replica
TRANSPORT_BACKOFF_S = 0.05


A = TypeVar("A", epb.EmbedResponse, pb.CountTokensResponse)
# (target, attempt number, request deadline) -> the provider worker's answer
Call = Callable[[ppb.Target, int, float | None], Awaitable[A]]


class _Run:
    """One request's walk over its plan."""

    def __init__(self, call: Call, request: pb.ChatRequest, plan: Plan, breakers: BreakerBoard,
                 provider_types: dict[str, str], deadline: float | None, facts: Callable[[], RequestFacts]) -> None:
        self.call = call
        self.request = request
        self.plan = plan
        self.breakers = breakers
        self.provider_types = provider_types
        self.deadline = deadline
        self.facts = facts
        self.outcome = Outcome()
        self.attempts = 0

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    async def node(self, node: Node, route: str) -> A:
        if isinstance(node, Leaf):
            return await self.leaf(node, route)
        if node.strategy == "weighted":
            index, reason = arm_index(node, self.request)
            self._decide(node, node.labels[index], reason)
            self.outcome.arm = self.outcome.arm or node.labels[index]
            return await self.node(node.children[index], node.route)
        if node.strategy == "conditional":
            facts = self.facts()
            for index, condition in enumerate(node.conditions):
                if condition is None or condition(facts):
                    self._decide(node, node.labels[index], "default" if condition is None else f"rule {index + 1}")
                    return await self.node(node.children[index], node.route)
            raise BeforeOutputError(pb.Error(
                status=400, type="invalid_request_error", code="no_matching_route", param="model",
                message=f"no rule of routing config '@{node.route}' matches this request"))
        self._decide(node)
        errors: list[pb.Error] = []  # fallback, and cascade (no gate judges vectors: the first answer wins)
        for child in node.children:
            try:
                return await self.node(child, node.route)
            except BeforeOutputError as exc:
                errors.append(exc.error)
                remaining = self.remaining()
                if not falls_back(exc.error, node.fallback_on) or (remaining is not None and remaining <= 0):
                    break
        raise BeforeOutputError(most_informative(errors))

    def _decide(self, branch: Branch, chosen: str = "", reason: str = "") -> None:
        if branch.route:
            self.outcome.routes.append(Decision(branch.route, branch.version, branch.strategy, chosen, reason))

    async def leaf(self, leaf: Leaf, route: str) -> A:
        target = leaf.target
        breaker = self.breakers.get(target.provider, target.model)
        retries, transport_left, wait = 0, TRANSPORT_RETRIES, 0.0
        while True:
            record = Attempt(target.provider, target.model, route, retries, wait * 1000)
            self.outcome.attempts.append(record)
            if breaker is not None and not breaker.allow():
                record.outcome, record.code = "skipped", "breaker_open"
                raise BeforeOutputError(pb.Error(
                    status=503, type="api_error", code="circuit_open", retryable=True, provider=target.provider,
                    retry_after_ms=int(breaker.retry_after_s() * 1000),
                    message=f"{target.name} is failing; its circuit breaker is open"))
            self.attempts += 1
            began = time.monotonic()
            transport = False
            try:
                answer = await self.call(ppb.Target(provider=target.provider, model=target.model), self.attempts,
                                         self.deadline)
                error = answer.error if answer.HasField("error") else None
            except grpc.aio.AioRpcError as exc:
                transport = exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED
                error = pb.Error(status=503 if transport else 504, type="api_error" if transport else "timeout_error",
                                 code="provider_unavailable" if transport else "deadline_exceeded",
                                 retryable=transport, provider=target.provider,
                                 message=f"provider worker unavailable ({exc.code().name})")
            except BaseException:
                record.outcome = "cancelled"
                if breaker is not None:
                    breaker.release()
                raise
            finally:
                record.latency_ms = (time.monotonic() - began) * 1000
            if error is None:
                record.outcome = "ok"
                if breaker is not None:
                    breaker.success()
                self.outcome.started = self._started(target.provider, target.model)
                return answer
            record.error_type, record.status, record.code = error.type, error.status, error.code
            if breaker is not None:
                breaker.failure() if _upstream_fault(error) and not transport else breaker.release()
            if transport and transport_left:
                transport_left -= 1
                wait = TRANSPORT_BACKOFF_S * 2 ** (TRANSPORT_RETRIES - transport_left - 1)
                remaining = self.remaining()
                if remaining is None or remaining > wait:
                    await sleep(wait)
                    continue
            delay = None
            if error.retryable and retries + 1 < leaf.retry.max_attempts:
                delay = backoff_s(leaf.retry, retries + 1, error.retry_after_ms, self.remaining())
            if delay is None:
                raise BeforeOutputError(error)
            retries += 1
            wait = delay
            await sleep(delay)

    def _started(self, provider: str, model: str) -> pb.Started:
        plan = self.plan
        started = pb.Started(provider=provider, model=model, attempt=self.attempts,
                             request_id=self.request.request_id, model_requested=plan.model_requested,
                             provider_type=self.provider_types.get(provider, ""))
        if plan.route:
            started.route, started.route_version = plan.route, plan.route_version
        if self.outcome.arm:
            started.arm = self.outcome.arm
        return started


def _prepare(table: RoutingTable, request: pb.ChatRequest) -> Plan:
    """The plan and admission stages; ``SwitchyardError`` for the client."""
    if not request.model:
        if not request.identity.default_model:
            raise InvalidRequestError("you must provide a model parameter", param="model")
        request.model = request.identity.default_model
    plan = table.plan(request.model, request.routing.fallbacks)
    check_scope(request.identity, plan, list(request.routing.fallbacks))
    return plan


def embed_view(request: epb.EmbedRequest) -> pb.ChatRequest:
    """The routing facts of an embeddings request, as the stages read them."""
    return pb.ChatRequest(request_id=request.request_id, model=request.model, identity=request.identity,
                          routing=request.routing, user=request.user)


def _with_inputs(view: pb.ChatRequest, request: epb.EmbedRequest) -> pb.ChatRequest:
    """The view with the inputs' text as its prompt and no output to expect:
    what prompt-size conditions and the governor's reservations measure."""
    full = pb.ChatRequest()
    full.CopyFrom(view)
    full.messages.add(role="user", text="\n".join(i.text for i in request.inputs))
    full.sampling.max_completion_tokens = 1  # an embedding writes no tokens
    return full


class UnaryRouter:
    def __init__(self, table: Callable[[], RoutingTable], breakers: BreakerBoard, usage: UsageSink,
                 embed: Callable[..., Awaitable[epb.EmbedResponse]],
                 count: Callable[..., Awaitable[pb.CountTokensResponse]], governor: Governor | None = None,
                 spans: UnarySpans | None = None) -> None:
        self.governor = governor
        self.spans = spans  # traces of embeddings and token-count calls (unary_spans.py)
        self.table = table
        self.breakers = breakers
        self.usage = usage
        self._embed = embed      # (EmbedAttempt, timeout=) -> EmbedResponse
        self._count = count      # (GenerateRequest, timeout=) -> CountTokensResponse

    async def embed(self, request: epb.EmbedRequest, deadline: float | None) -> epb.EmbedResponse:
        received = time.monotonic()
        table = self.table()
        view = embed_view(request)
        plan: Plan | None = None
        run: _Run | None = None
        outcome = Outcome()
        answer = epb.EmbedResponse()
        grant: Grant | None = None
        spans = self.spans
        span = spans.call("Embed", request.request_id, request.model, request.trace_context) \
            if spans is not None else None
        try:
            plan = _prepare(table, view)
            request.model = view.model

            async def call(target: ppb.Target, attempt: int, deadline: float | None) -> epb.EmbedResponse:
                message = ppb.EmbedAttempt(request=request, target=target, attempt=attempt)
                if spans is None or span is None:
                    return await self._embed(message, timeout=_timeout(deadline))
                attempt_span = spans.embed_attempt(span, message)  # writes its context into the message first
                return await _traced(self._embed(message, timeout=_timeout(deadline)), attempt_span, target.model)

            if self.governor is not None:  # rate limits, budgets and concurrency, as for chat
                grant = await self.governor.admit(_with_inputs(view, request), plan, table)
            run = _Run(call, view, plan, self.breakers, table.provider_types, deadline,
                       lambda: RequestFacts(_with_inputs(view, request)))
            outcome = run.outcome
            answer = await run.node(plan.root, "")
            answer.started.CopyFrom(outcome.started)
            if grant is not None and grant.decision is not None:  # the key's rate-limit state, as for chat
                answer.started.headers.update(headers(grant.decision))
            outcome.usage = answer.usage
        except SwitchyardError as exc:
            outcome.error = exc.to_proto()
        except BeforeOutputError as exc:
            outcome.error = exc.error if run is None else plan_failed(exc.error, run)  # type: ignore[arg-type]
        except BaseException:
            outcome.cancelled = True
            raise
        finally:
            if grant is not None:
                self.governor.settle(grant, outcome.usage)  # type: ignore[union-attr]
            event = build_usage_event(view, plan, outcome, received)
            event.endpoint = "embeddings"
            if answer.usage_estimated:
                event.usage_estimated = True
            self.usage.record(event)
            if span is not None:
                call_ended(span, outcome.error, outcome.cancelled)
        if outcome.error is not None:
            return epb.EmbedResponse(error=outcome.error)
        return answer

    async def count_tokens(self, request: pb.ChatRequest, deadline: float | None) -> pb.CountTokensResponse:
        table = self.table()
        spans = self.spans
        span = spans.call("CountTokens", request.request_id, request.model, request.trace_context) \
            if spans is not None else None
        error: pb.Error | None = None
        cancelled = False
        try:
            table.templates.expand(request)
            plan = _prepare(table, request)

            async def call(target: ppb.Target, attempt: int, deadline: float | None) -> pb.CountTokensResponse:
                message = ppb.GenerateRequest(request=request, target=target, attempt=attempt)
                if spans is None or span is None:
                    return await self._count(message, timeout=_timeout(deadline))
                attempt_span = spans.count_attempt(span, message)  # writes its context into the message first
                return await _traced(self._count(message, timeout=_timeout(deadline)), attempt_span, target.model)

            run = _Run(call, request, plan, self.breakers, table.provider_types, deadline,
                       lambda: RequestFacts(request))
            try:
                answer = await run.node(plan.root, "")
            except BeforeOutputError as exc:
                error = plan_failed(exc.error, run)  # type: ignore[arg-type]
                return pb.CountTokensResponse(error=error)
            answer.started.CopyFrom(run.outcome.started)
            return answer
        except SwitchyardError as exc:
            error = exc.to_proto()
            return pb.CountTokensResponse(error=error)
        except BaseException:
            cancelled = True
            raise
        finally:
            if span is not None:
                call_ended(span, error, cancelled)


async def _traced(reply: Awaitable[A], span: Span, model: str) -> A:
    """An attempt's answer, its span closed with what came back."""
    answer: A | None = None
    failure: BaseException | None = None
    try:
        answer = await reply
        return answer
    except BaseException as exc:
        failure = exc
        raise
    finally:
        attempt_ended(span, model, answer, failure)


def _timeout(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.001)
