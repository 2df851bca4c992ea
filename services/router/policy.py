"""The run stage: strategies drive attempts over a plan.

Every node of the plan streams ChatEvent bytes and obeys one rule: until its
first event it may fail by raising ``BeforeOutputError`` (nothing was sent,
so its parent may try something else); after that it ends its stream itself,
with an error event if it failed.

- leaf: one target, retried in place (back-off, ``Retry-After``) while its
  retry policy allows, skipped while its circuit breaker is open;
- fallback: children in order, moving on for the failures ``fallback_on``
  names;
- weighted: one arm, picked by a stable hash of the sticky key (or at random);
- conditional: the first child whose condition holds;
- cascade: children in order, each answer buffered and judged by the gate;
  the first that passes is released, the last tier streams live.
"""

from __future__ import annotations

import hashlib
import logging
import random
from asyncio import sleep
from collections.abc import AsyncIterator
from contextlib import aclosing

from router import gate
from router.execute import Attempt, BeforeOutputError, Decision, RunContext, stream_attempt
from router.retry import backoff_s
from router.routes import Branch, Leaf, Node
from switchyard.conditions import RequestFacts
from switchyard.v1 import chat_pb2 as pb

log = logging.getLogger(__name__)

# A vanished worker: the same target again, on another replica once Envoy has
# noticed (its health check and outlier detection take up to a second or two).
TRANSPORT_RETRIES = 5
TRANSPORT_BACKOFF_S = 0.05     # doubled each time, at most TRANSPORT_BACKOFF_MAX_S
TRANSPORT_BACKOFF_MAX_S = 0.5
MAX_BUFFERED_BYTES = 16 * 1024 * 1024  # a cascade tier's answer held for judging


def plan_failed(error: pb.Error, ctx: RunContext) -> pb.Error:
    """What the client hears when the whole plan failed before any output:
    the most informative error, or a timeout when the deadline ran out."""
    remaining = ctx.remaining()
    if remaining is not None and remaining <= 0 and error.status != 504:
        return pb.Error(status=504, type="timeout_error", code="deadline_exceeded",
                        message="the request deadline passed before any attempt answered")
    return error


def stream_node(node: Node, ctx: RunContext, route: str) -> AsyncIterator[bytes]:
    if isinstance(node, Leaf):
        return stream_leaf(node, ctx, route)
    if node.strategy == "weighted":
        return _stream_weighted(node, ctx)
    if node.strategy == "conditional":
        return _stream_conditional(node, ctx)
    if node.strategy == "cascade":
        return _stream_cascade(node, ctx)
    return _stream_fallback(node, ctx)


# ------------------------------------------------------------------- leaf --


async def stream_leaf(leaf: Leaf, ctx: RunContext, route: str) -> AsyncIterator[bytes]:
    target = leaf.target
    breaker = ctx.breakers.get(target.provider, target.model)
    retries = 0
    transport_left = TRANSPORT_RETRIES
    wait = 0.0
    while True:
        record = Attempt(target.provider, target.model, route, retries, wait * 1000)
        ctx.outcome.attempts.append(record)
        if ctx.models is not None and not retries and (refusal := await ctx.models.admit(target)) is not None:
            record.outcome, record.code = "skipped", refusal.code
            raise BeforeOutputError(refusal)
        if breaker is not None and not breaker.allow():
            record.outcome, record.code = "skipped", "breaker_open"
            raise BeforeOutputError(pb.Error(
                status=503, type="api_error", code="circuit_open", retryable=True, provider=target.provider,
                retry_after_ms=int(breaker.retry_after_s() * 1000),
                message=f"{target.name} is failing; its circuit breaker is open"))
        try:
            async with aclosing(stream_attempt(leaf, ctx, record)) as events:
                async for raw in events:
                    yield raw
        except BeforeOutputError as exc:
            error = exc.error
            if breaker is not None:  # a vanished worker says nothing about the upstream's health
                breaker.failure() if _upstream_fault(error) and not exc.transport else breaker.release()
            if exc.transport and transport_left:
                transport_left -= 1
                wait = min(TRANSPORT_BACKOFF_S * 2 ** (TRANSPORT_RETRIES - transport_left - 1), TRANSPORT_BACKOFF_MAX_S)
                remaining = ctx.remaining()
                if remaining is None or remaining > wait:
                    await sleep(wait)
                    continue
            if not error.retryable or retries + 1 >= leaf.retry.max_attempts:
                raise
            delay = backoff_s(leaf.retry, retries + 1, error.retry_after_ms, ctx.remaining())
            if delay is None:
                raise
            retries += 1
            wait = delay
            log.info("retrying %s in %.2fs after %s", target.name, delay, error.code or error.status)
            await sleep(delay)
            continue
        except BaseException:
            if breaker is not None:
                breaker.release()
            raise
        if breaker is not None:
            if record.outcome == "ok":
                breaker.success()
            elif _upstream_fault(ctx.outcome.error):
                breaker.failure()
            else:
                breaker.release()
        return


def _upstream_fault(error: pb.Error | None) -> bool:
    """Whether a failure says the upstream is unhealthy (not the client's request)."""
    if error is None:
        return False
    return error.retryable or error.status >= 500 or error.status == 429


# --------------------------------------------------------------- branches --


def falls_back(error: pb.Error, classes: tuple[str, ...]) -> bool:
    """Whether ``error`` (before any output) is one the branch moves on from."""
    if error.code == "deadline_exceeded":
        return False
    status, upstream = error.status, error.upstream_status
    for cls in classes:
        if cls == "retryable" and error.retryable:
            return True
        if cls == "timeout" and (error.type == "timeout_error" or status in (408, 504)):
            return True
        if cls == "5xx" and (status >= 500 or upstream >= 500):
            return True
        if cls == "4xx" and (400 <= status < 500 or 400 <= upstream < 500):
            return True
        if cls.isdigit() and int(cls) in (status, upstream):
            return True
        if cls == error.code:
            return True
    return False


_RANK_CLIENT, _RANK_RATE, _RANK_UPSTREAM, _RANK_TIMEOUT, _RANK_TRANSPORT, _RANK_OTHER = range(6)


def most_informative(errors: list[pb.Error]) -> pb.Error:
    """The error that tells the client most: a rejection of the request
    itself over rate limits over upstream failures over timeouts over
    unavailable workers and open breakers; the latest among equals."""
    def rank(error: pb.Error) -> int:
        if 400 <= error.status < 500 and error.status not in (408, 429):
            return _RANK_CLIENT
        if error.status == 429:
            return _RANK_RATE
        if error.upstream_status >= 500 or error.code in ("upstream_error", "upstream_auth_error"):
            return _RANK_UPSTREAM
        if error.type == "timeout_error":
            return _RANK_TIMEOUT
        if error.code in ("provider_unavailable", "empty_response"):
            return _RANK_TRANSPORT
        return _RANK_OTHER

    best = errors[0]
    for error in errors[1:]:
        if rank(error) <= rank(best):
            best = error
    return best


def _decide(ctx: RunContext, branch: Branch, chosen: str = "", reason: str = "") -> None:
    if branch.route:
        ctx.outcome.routes.append(Decision(branch.route, branch.version, branch.strategy, chosen, reason))


async def _stream_fallback(branch: Branch, ctx: RunContext) -> AsyncIterator[bytes]:
    _decide(ctx, branch)
    errors: list[pb.Error] = []
    for child in branch.children:
        try:
            async with aclosing(stream_node(child, ctx, branch.route)) as events:
                async for raw in events:
                    yield raw
            return
        except BeforeOutputError as exc:
            errors.append(exc.error)
            if not falls_back(exc.error, branch.fallback_on):
                break
            remaining = ctx.remaining()
            if remaining is not None and remaining <= 0:
                break
    raise BeforeOutputError(most_informative(errors))


def arm_index(branch: Branch, request: pb.ChatRequest) -> tuple[int, str]:
    """The weighted arm for this request and why: a stable hash of the sticky
    key keeps a caller on its arm while the weights stay the same."""
    sticky = branch.spec.sticky if branch.spec is not None else None
    value = _sticky_value(sticky, request) if sticky else ""
    if value:
        digest = hashlib.blake2b(f"{branch.route}\0{value}".encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") / 2**64
        reason = f"sticky on {sticky}"
    else:
        point = random.random()
        reason = "random" if not sticky else f"random (the request has no {sticky})"
    total = sum(branch.weights)
    cumulative = 0.0
    for index, weight in enumerate(branch.weights):
        cumulative += weight
        if point * total < cumulative:
            return index, reason
    return len(branch.weights) - 1, reason


def _sticky_value(sticky: str, request: pb.ChatRequest) -> str:
    if sticky == "end_user":
        return request.routing.end_user or request.user
    if sticky == "session":
        return request.routing.session_id
    if sticky == "key":
        return request.identity.key_id
    if sticky == "tenant":
        return request.identity.tenant
    return request.routing.tags.get(sticky.removeprefix("tag:"), "")


async def _stream_weighted(branch: Branch, ctx: RunContext) -> AsyncIterator[bytes]:
    index, reason = arm_index(branch, ctx.request)
    label = branch.labels[index]
    _decide(ctx, branch, label, reason)
    if not ctx.outcome.arm:
        ctx.outcome.arm = label
    async with aclosing(stream_node(branch.children[index], ctx, branch.route)) as events:
        async for raw in events:
            yield raw


async def _stream_conditional(branch: Branch, ctx: RunContext) -> AsyncIterator[bytes]:
    facts = RequestFacts(ctx.request)
    for index, condition in enumerate(branch.conditions):
        if condition is None or condition(facts):
            reason = "default" if condition is None else f"rule {index + 1} matched"
            _decide(ctx, branch, branch.labels[index], reason)
            async with aclosing(stream_node(branch.children[index], ctx, branch.route)) as events:
                async for raw in events:
                    yield raw
            return
    _decide(ctx, branch, "", "no rule matched")
    raise BeforeOutputError(pb.Error(status=400, type="invalid_request_error", code="no_matching_route",
                                     param="model",
                                     message=f"no rule of routing config '@{branch.route}' matches this request"))


async def _stream_cascade(branch: Branch, ctx: RunContext) -> AsyncIterator[bytes]:
    """Tiers in order. Every tier but the last is buffered and judged; only an
    accepted answer reaches the client, so a streaming client's first byte
    waits for the accepted tier's whole answer (the last tier streams live)."""
    assert branch.spec is not None
    _decide(ctx, branch)
    errors: list[pb.Error] = []
    last = len(branch.children) - 1
    for index, child in enumerate(branch.children):
        if index == last:
            try:
                async with aclosing(stream_node(child, ctx, branch.route)) as events:
                    async for raw in events:
                        yield raw
                return
            except BeforeOutputError as exc:
                errors.append(exc.error)
                break
        buffered: list[bytes] = []
        size = 0
        try:
            async with aclosing(stream_node(child, ctx, branch.route)) as events:
                async for raw in events:
                    buffered.append(raw)
                    size += len(raw)
                    if size > MAX_BUFFERED_BYTES:
                        break
        except BeforeOutputError as exc:
            errors.append(exc.error)
            if not falls_back(exc.error, branch.fallback_on):
                break
            continue
        verdict = "answer too large to judge" if size > MAX_BUFFERED_BYTES else \
            gate.judge(buffered, ctx.request, branch.spec.gate)
        record = ctx.outcome.attempts[-1]
        if verdict is None:
            record.gate = "accepted"
            for raw in buffered:
                yield raw
            return
        record.gate = f"rejected: {verdict}"
        record.outcome = "rejected"
        ctx.outcome.error = None  # the client never saw that tier
        ctx.outcome.started = None
    raise BeforeOutputError(most_informative(errors) if errors else pb.Error(
        status=502, type="api_error", code="cascade_exhausted", message="no cascade tier produced an answer"))

