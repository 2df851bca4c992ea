"""The admit stage's limits and budgets, and their settlement at the end.

``admit`` runs after the scope check, before anything is sent upstream: the
key's and the end user's rate limits (``limits.py``), the key's cap on
requests in flight, and the key's, end user's and tenant's budgets
(``budgets.py``), all against the shared ledgers in NATS key-value
(``ledger.py``), concurrently. A refusal gives back what the other scopes
granted and raises a 429 (with OpenAI's ``x-ratelimit-*`` headers and
``retry-after``) or a 402 ``budget_exceeded``. ``settle`` replaces estimates
by the request's usage once it has ended, in the background (the response
does not wait for it; the reservation holds until it lands).

NATS unreachable: rate limits and concurrency caps admit (fail open) unless
configured ``on_store_unavailable: closed``; budgets refuse with 503
(fail closed) unless configured ``open``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass, field

from router.budgets import commit_op, orphan_op, renew_op, reserve_op, status_op
from router.ledger import Ledger, StoreUnavailableError
from router.limits import RateDecision, adjust_op, admit_op, headers
from router.routes import Branch, Leaf, Plan, RoutingTable, Target, leaves
from switchyard import tokens
from switchyard.catalogue import facts, price_for
from switchyard.config import GovernanceSpec, RateLimitSpec, TenantSpec
from switchyard.errors import SwitchyardError
from switchyard.v1 import chat_pb2 as pb

log = logging.getLogger(__name__)

LIMITS_BUCKET = "SWITCHYARD_LIMITS"    # rate-limit windows
BUDGETS_BUCKET = "SWITCHYARD_BUDGETS"  # budget ledgers and concurrency leases
BUCKETS = {LIMITS_BUCKET: {"ttl": 86400.0}, BUDGETS_BUCKET: {"ttl": 100 * 86400.0}}  # idle entries age out
SETTLE_ATTEMPTS = 6
_PLAIN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class GovernanceError(SwitchyardError):
    """A refusal for the client (429, 402 or 503), as the ``pb.Error`` to send."""

    def __init__(self, error: pb.Error) -> None:
        super().__init__(error.message)
        self.error = error

    def to_proto(self) -> pb.Error:
        return self.error


@dataclass(slots=True)
class _Rate:
    key: str
    limit: pb.RateLimit
    label: str
    admitted: bool = False


@dataclass(slots=True)
class _Budget:
    key: str
    spec: pb.Budget
    label: str
    reserved: float = 0.0
    held: bool = False     # a reservation exists in the ledger (not skipped by fail-open)


@dataclass(slots=True)
class Grant:
    """What one request holds, to be settled when it ends."""

    rid: str
    rates: list[_Rate] = field(default_factory=list)
    budgets: list[_Budget] = field(default_factory=list)
    lease: str = ""
    tokens_reserved: int = 0
    prompt_tokens: int = 0
    decision: RateDecision | None = None
    meter: StreamMeter | None = None


def shared_limits(plan: Plan, table: RoutingTable) -> list[_Rate]:
    """The limits every key shares: the routing config the request names, or
    the model it names directly (a plain model, not a config's targets)."""
    spec: RateLimitSpec | None = None
    if plan.route:
        route = table.config.routes.get(plan.route)
        spec = route.limits if route else None
        key, label = f"rl.r.{_name(plan.route)}", f"routing config @{plan.route}"
    elif isinstance(plan.root, Leaf):
        rate = model_limit(plan.root.target, table)
        return [rate] if rate is not None else []
    if spec is None or not (spec.rpm or spec.tpm):
        return []
    return [_Rate(key, _limit(spec), label)]


def model_limit(target: Target, table: RoutingTable) -> _Rate | None:
    """The limit every key shares on one model of one provider, if it has one."""
    provider = table.config.providers.get(target.provider)
    model = provider.model(target.model) if provider else None
    spec = model.limits if model else None
    if spec is None or not (spec.rpm or spec.tpm):
        return None
    return _Rate(f"rl.m.{_name(target.name)}", _limit(spec), f"model {target.model}")


def _limit(spec: RateLimitSpec) -> pb.RateLimit:
    return pb.RateLimit(rpm=spec.rpm or 0, tpm=spec.tpm or 0, fail_closed=spec.on_store_unavailable == "closed")


def _name(value: str) -> str:
    return value if _PLAIN.match(value) else hashlib.blake2b(value.encode(), digest_size=12).hexdigest()


def _period(spec: pb.Budget) -> str:
    return spec.period + (str(spec.window_s) if spec.period == "rolling" else "")


def _budgets_of(identity: pb.Identity, end_user: str, table: RoutingTable) -> list[_Budget]:
    """``_budgets`` of a key (and ``end_user`` under it, when given) as configured in ``table``."""
    tenant = table.config.tenants.get(identity.tenant) if table.config.tenants else None
    return _budgets(identity, tenant, _name(identity.key_id), _name(end_user) if end_user else "")


def _budgets(identity: pb.Identity, tenant: TenantSpec | None, key: str, user: str) -> list[_Budget]:
    """The budget entries a request charges: its key's, its end user's (under
    its key) and its tenant's. ``key`` and ``user`` are ledger-safe names."""
    budgets = []
    for spec in identity.budgets:
        if spec.scope == "end_user":
            if user:
                budgets.append(_Budget(f"bg.u.{key}.{user}.{_period(spec)}", spec, "end user"))
        else:
            budgets.append(_Budget(f"bg.k.{key}.{_period(spec)}", spec, "key"))
    if tenant is not None:
        for b in tenant.budgets:
            spec = pb.Budget(usd=b.usd, period=b.period, window_s=b.window_s, scope="tenant", hard=b.hard,
                             fail_open=b.on_store_unavailable == "open")
            budgets.append(_Budget(f"bg.t.{_name(identity.tenant)}.{_period(spec)}", spec, "tenant"))
    return budgets


class Governor:
    def __init__(self, limits: Ledger, budgets: Ledger, settings: GovernanceSpec | None = None) -> None:
        self.limits = limits
        self.budgets = budgets
        self.settings = settings or GovernanceSpec()
        self._live: dict[str, Grant] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------- admit --

    async def admit(self, request: pb.ChatRequest, plan: Plan, table: RoutingTable) -> Grant | None:
        identity = request.identity
        tenant = table.config.tenants.get(identity.tenant) if table.config.tenants else None
        shared = shared_limits(plan, table)
        if not (identity.HasField("key_limit") or identity.HasField("end_user_limit") or identity.budgets
                or identity.max_concurrent or (tenant is not None and tenant.budgets) or shared):
            return None
        grant = Grant(request.request_id)
        grant.rates.extend(shared)
        key = _name(identity.key_id)
        end_user = request.routing.end_user or request.user
        user = _name(end_user) if end_user else ""
        if identity.key_limit.rpm or identity.key_limit.tpm:
            grant.rates.append(_Rate(f"rl.k.{key}", identity.key_limit, "key"))
        if user and (identity.end_user_limit.rpm or identity.end_user_limit.tpm):
            grant.rates.append(_Rate(f"rl.u.{key}.{user}", identity.end_user_limit, "end user"))
        grant.budgets.extend(_budgets(identity, tenant, key, user))
        needs_tokens = grant.budgets or any(r.limit.tpm for r in grant.rates)
        if needs_tokens:
            grant.prompt_tokens = tokens.prompt_tokens(request)
            in_rate, out_rate, max_out, tiers = self._plan_facts(plan, table, request)
            grant.tokens_reserved = grant.prompt_tokens + max_out
            worst = (grant.prompt_tokens * in_rate + max_out * out_rate) * tiers
            increment = min(self.settings.stream_increment_tokens, max_out)
            hard = [b for b in grant.budgets if b.spec.hard] if request.stream and out_rate > 0 else []
            for budget in grant.budgets:
                budget.reserved = (grant.prompt_tokens * in_rate + increment * out_rate) * tiers \
                    if budget in hard else worst
            if hard:
                grant.meter = StreamMeter(self, grant, hard, out_rate * tiers, increment)
        if identity.max_concurrent:
            grant.lease = f"cc.k.{key}"
        await self._acquire(grant, identity)
        self._live[grant.rid] = grant
        self._renew_soon()
        return grant

    def model_gate(self, request: pb.ChatRequest, plan: Plan, table: RoutingTable,
                   grant: Grant | None) -> ModelGate | None:
        """The per-attempt check of models' shared limits for a plan that can
        reach more than the one model it names (a routing config, fallbacks);
        a plain model was charged at admission. None: no model it reaches has
        a limit."""
        if not table.model_limits or (isinstance(plan.root, Leaf) and not plan.route):
            return None
        if not any(model_limit(leaf.target, table) for leaf, _ in leaves(plan.root)):
            return None
        return ModelGate(self, request, plan, table, grant)

    def _plan_facts(self, plan: Plan, table: RoutingTable, request: pb.ChatRequest) -> tuple[float, float, int, int]:
        """Highest input and output price per token and output tokens over every
        target the plan can reach, and how many tiers a cascade may bill."""
        in_rate = out_rate = 0.0
        max_out = 0
        targets = leaves(plan.root)
        for leaf, _ in targets:
            provider = table.config.providers[leaf.target.provider]
            spec = provider.model(leaf.target.model)
            known = facts(provider.type, leaf.target.model)
            pricing = price_for(provider.type, leaf.target.model, spec.pricing if spec else None)
            limit = (spec.max_output_tokens if spec else None) or (known.max_output if known else None) \
                or self.settings.default_max_output_tokens
            max_out = max(max_out, tokens.max_output_tokens(request, limit))
            if pricing is not None:
                in_rate = max(in_rate, pricing.input_per_mtok / 1e6)
                out_rate = max(out_rate, pricing.output_per_mtok / 1e6,
                               (pricing.reasoning_per_mtok or 0) / 1e6)
        tiers = len(targets) if _has_cascade(plan.root) else 1
        return in_rate, out_rate, max_out, tiers

    async def _acquire(self, grant: Grant, identity: pb.Identity) -> None:
        ttl = self.settings.reservation_ttl_s
        jobs = [self.limits.apply(r.key, admit_op(r.limit.rpm, r.limit.tpm, grant.tokens_reserved))
                for r in grant.rates]
        if grant.lease:
            jobs.append(self.budgets.apply(grant.lease, reserve_op(grant.rid, 1, identity.max_concurrent, ttl, "none")))
        jobs += [self.budgets.apply(b.key, reserve_op(grant.rid, b.reserved, b.spec.usd, ttl, b.spec.period,
                                                      b.spec.window_s)) for b in grant.budgets]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        refusal: pb.Error | None = None
        index = 0
        for rate in grant.rates:
            result = results[index]
            index += 1
            if isinstance(result, BaseException):
                if rate.limit.fail_closed:
                    refusal = refusal or _unavailable(result)
                continue
            rate.admitted = result.admitted
            if grant.decision is None or rate.label == "key":
                grant.decision = result
            if not result.admitted and refusal is None:
                refusal = _rate_limited(result, rate.label)
        if grant.lease:
            result = results[index]
            index += 1
            if isinstance(result, BaseException):
                grant.lease = ""  # fail open: not held
            elif not result.admitted:
                grant.lease = ""
                refusal = refusal or pb.Error(
                    status=429, type="rate_limit_error", code="concurrency_limit_exceeded", retry_after_ms=1000,
                    message=f"this API key already has {identity.max_concurrent} requests in flight",
                    headers={"retry-after": "1"})
        for budget in grant.budgets:
            result = results[index]
            index += 1
            if isinstance(result, BaseException):
                if not budget.spec.fail_open:
                    refusal = refusal or _unavailable(result)
                continue
            budget.held = result.admitted
            if not result.admitted and refusal is None:
                refusal = _over_budget(budget, result.used, budget.reserved)
        if refusal is not None:
            self._release(grant)
            raise GovernanceError(refusal)

    def _release(self, grant: Grant) -> None:
        """Give back everything a refused request was granted."""
        self._spawn(self._give_back(grant))

    async def _give_back(self, grant: Grant) -> None:
        jobs = [self.limits.apply(r.key, adjust_op(r.limit.rpm, r.limit.tpm, 1, grant.tokens_reserved))
                for r in grant.rates if r.admitted]
        if grant.lease:
            jobs.append(self.budgets.apply(grant.lease, commit_op(grant.rid, 0, "none")))
        jobs += [self.budgets.apply(b.key, commit_op(grant.rid, 0, b.spec.period, b.spec.window_s))
                 for b in grant.budgets if b.held]
        await asyncio.gather(*jobs, return_exceptions=True)

    # ------------------------------------------------------------ settle --

    def settle(self, grant: Grant, usage: pb.Usage | None) -> None:
        """Replace the request's estimates by its usage (in the background)."""
        used_tokens = usage.prompt_tokens + usage.completion_tokens if usage is not None else 0
        cost = usage.cost_usd if usage is not None else 0.0
        self._spawn(self._settle(grant, used_tokens, cost))

    async def _settle(self, grant: Grant, used_tokens: int, cost: float) -> None:
        jobs: list[tuple[Ledger, str, object]] = []
        for rate in grant.rates:
            if rate.admitted and rate.limit.tpm and used_tokens != grant.tokens_reserved:
                jobs.append((self.limits, rate.key, adjust_op(rate.limit.rpm, rate.limit.tpm, 0,
                                                              grant.tokens_reserved - used_tokens)))
        if grant.lease:
            jobs.append((self.budgets, grant.lease, commit_op(grant.rid, 0, "none")))
        for budget in grant.budgets:
            if budget.held or (budget.spec.fail_open and cost > 0):
                jobs.append((self.budgets, budget.key, commit_op(grant.rid, cost, budget.spec.period,
                                                                 budget.spec.window_s)))
        try:
            for attempt in range(SETTLE_ATTEMPTS):
                results = await asyncio.gather(*(ledger.apply(key, op) for ledger, key, op in jobs),
                                               return_exceptions=True)
                jobs = [job for job, result in zip(jobs, results, strict=True) if isinstance(result, BaseException)]
                if not jobs:
                    return
                await asyncio.sleep(min(0.2 * 2 ** attempt, 5.0))
            log.warning("governance: %d settlements of request %s not recorded (NATS unreachable); reservations "
                        "expire after %.0f s", len(jobs), grant.rid, self.settings.reservation_ttl_s)
        finally:
            self._live.pop(grant.rid, None)

    async def settle_orphan(self, request: pb.ChatRequest, cost: float, table: RoutingTable) -> int:
        """Charge ``cost`` to the budgets of an answer whose router died
        mid-answer (the edge's estimate of what it relayed); the number of
        budget entries settled (charged now or before). An entry is charged
        only while the request's reservation is still there (``orphan_op``):
        when the router settled the request itself after all, or this call
        is repeated, nothing more is counted. Raises StoreUnavailableError if
        NATS did not answer, so that the caller may try again."""
        budgets = _budgets_of(request.identity, request.routing.end_user or request.user, table)
        if cost <= 0 or not budgets:
            return 0
        results = await asyncio.gather(
            *(self.budgets.apply(b.key, orphan_op(request.request_id, cost, b.spec.period, b.spec.window_s))
              for b in budgets), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise StoreUnavailableError(f"{len(failed)} of {len(budgets)} budget entries not charged: {failed[0]}")
        return len(budgets)

    async def budget_status(self, identity: pb.Identity, table: RoutingTable,
                            end_user: str = "") -> list[tuple[pb.Budget, float, float]]:
        """(budget, spent, reserved) now for each budget of a key and of its
        tenant, and of ``end_user`` under the key when given (there is one
        entry per end user, so they are not listed without one). Raises
        StoreUnavailableError when NATS does not answer."""
        budgets = _budgets_of(identity, end_user, table)
        states = await asyncio.gather(*(self.budgets.apply(b.key, status_op(b.spec.period, b.spec.window_s))
                                        for b in budgets))
        return [(b.spec, spent, reserved) for b, (spent, reserved) in zip(budgets, states, strict=True)]

    # ----------------------------------------------------------- renewal --

    def _renew_soon(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        """While requests hold reservations, push their expiry every third of the TTL."""
        while self._live:
            await asyncio.sleep(self.settings.reservation_ttl_s / 3)
            groups: dict[tuple[int, str], tuple[Ledger, set[str], str, int]] = {}
            for grant in list(self._live.values()):
                if grant.lease:
                    groups.setdefault((0, grant.lease), (self.budgets, set(), "none", 0))[1].add(grant.rid)
                for b in grant.budgets:
                    if b.held:
                        groups.setdefault((1, b.key), (self.budgets, set(), b.spec.period, b.spec.window_s))[1] \
                            .add(grant.rid)
            ttl = self.settings.reservation_ttl_s
            await asyncio.gather(*(ledger.apply(key, renew_op(frozenset(rids), ttl, period, window))
                                   for (_, key), (ledger, rids, period, window) in groups.items()),
                                 return_exceptions=True)

    def _spawn(self, job: object) -> None:
        task = asyncio.create_task(job)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, wait_s: float = 5.0) -> None:
        """Let settlements in flight land (bounded), then stop renewing."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=wait_s)
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer


class ModelGate:
    """Charges a model's shared limit when an attempt is about to reach it
    through a routing config or fallbacks. A target over its limit is skipped
    like one whose breaker is open: the plan moves on (a 429 is a fallback
    class by default), and the client hears the 429 naming the model only if
    nothing else answered. Charged once per target and request (its retries
    included); settled with the request's other limits."""

    def __init__(self, governor: Governor, request: pb.ChatRequest, plan: Plan, table: RoutingTable,
                 grant: Grant | None) -> None:
        self.governor = governor
        self.request = request
        self.plan = plan
        self.table = table
        self.grant = grant
        self._charged: set[str] = set()

    async def admit(self, target: Target) -> pb.Error | None:
        rate = model_limit(target, self.table)
        if rate is None or rate.key in self._charged:
            return None
        self._charged.add(rate.key)
        grant = self.grant
        if grant is None:
            grant = self.grant = Grant(self.request.request_id)
        if rate.limit.tpm and not grant.tokens_reserved:
            grant.prompt_tokens = grant.prompt_tokens or tokens.prompt_tokens(self.request)
            grant.tokens_reserved = grant.prompt_tokens + self.governor._plan_facts(
                self.plan, self.table, self.request)[2]
        try:
            decision = await self.governor.limits.apply(
                rate.key, admit_op(rate.limit.rpm, rate.limit.tpm, grant.tokens_reserved))
        except Exception as exc:  # the store: fail open unless the limit says closed
            return _unavailable(exc) if rate.limit.fail_closed else None
        if not decision.admitted:
            error = _rate_limited(decision, rate.label)
            error.retryable, error.provider = True, target.provider
            return error
        rate.admitted = True
        grant.rates.append(rate)
        return None


class StreamMeter:
    """A stream under a hard budget: counts the tokens of the chunks it relays
    and extends the reservation an increment at a time; ``allow`` is False
    when an extension is refused (the stream is cut before that chunk)."""

    def __init__(self, governor: Governor, grant: Grant, hard: list[_Budget], out_rate: float,
                 covered: int) -> None:
        self.governor = governor
        self.grant = grant
        self.hard = hard
        self.out_rate = out_rate
        self.covered = covered   # output tokens the reservation covers
        self.delivered_bytes = 0

    @property
    def delivered_tokens(self) -> int:
        return tokens.bytes_tokens(self.delivered_bytes)

    async def allow(self, raw: bytes) -> bool:
        size = tokens.chunk_text_bytes(pb.ChatEvent.FromString(raw).chunk)
        need = tokens.bytes_tokens(self.delivered_bytes + size) - self.covered
        if need <= 0 or await self._extend(need):
            self.delivered_bytes += size
            return True
        return False

    async def _extend(self, need: int) -> bool:
        ask = max(need, self.governor.settings.stream_increment_tokens)
        ttl = self.governor.settings.reservation_ttl_s
        granted = ask
        for budget in self.hard:
            if not budget.held:
                continue
            try:
                result = await self.governor.budgets.apply(budget.key, reserve_op(
                    self.grant.rid, ask * self.out_rate, budget.spec.usd, ttl, budget.spec.period,
                    budget.spec.window_s, at_least=need * self.out_rate))
            except StoreUnavailableError:
                if budget.spec.fail_open:
                    continue
                return False
            if not result.admitted:
                return False
            budget.reserved += result.amount
            granted = min(granted, int(result.amount / self.out_rate + 1e-9))
        self.covered += granted
        return True


def _has_cascade(node: object) -> bool:
    return isinstance(node, Branch) and (node.strategy == "cascade" or any(_has_cascade(c) for c in node.children))


def _unavailable(exc: BaseException) -> pb.Error:
    log.warning("governance: shared store unavailable (%s); refusing (fail closed)", exc)
    return pb.Error(status=503, type="api_error", code="limits_unavailable", retry_after_ms=1000,
                    message="limits and budgets cannot be checked right now; retry shortly",
                    headers={"retry-after": "1"})


def _rate_limited(decision: RateDecision, label: str) -> pb.Error:
    if decision.too_large:
        message = (f"this request may use more tokens (prompt + max_tokens) than the {label}'s limit of "
                   f"{decision.tpm} tokens per minute; lower max_tokens")
        code = "tokens_exceed_rate_limit"
    else:
        what = "requests" if decision.rpm and decision.remaining_requests == 0 else "tokens"
        limit = decision.rpm if what == "requests" else decision.tpm
        message = f"rate limit reached for this {label}: {limit} {what} per minute; retry after the given time"
        code = "rate_limit_exceeded"
    return pb.Error(status=429, type="rate_limit_error", code=code, message=message,
                    retry_after_ms=int(decision.retry_after_s * 1000) if not decision.too_large else 0,
                    headers=headers(decision))


def _over_budget(budget: _Budget, used: float, asked: float) -> pb.Error:
    spec = budget.spec
    period = f"rolling {spec.window_s}s" if spec.period == "rolling" else spec.period
    return pb.Error(status=402, type="insufficient_quota", code="budget_exceeded",
                    message=f"the {budget.label}'s {period} budget of ${spec.usd:g} is exhausted: "
                            f"${used:.6f} spent or reserved, this request may cost up to ${asked:.6f}")


def budget_cut() -> pb.Error:
    """The error event that ends a stream cut at a hard budget."""
    return pb.Error(status=402, type="insufficient_quota", code="budget_exceeded",
                    message="the budget was exhausted while this answer was streaming; it was cut here")
