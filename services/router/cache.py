"""The cache stage: after admission, before any attempt. A hit is replayed
from the shared store event by event and never reaches a provider worker;
a complete, successful answer is stored at the end of its run.

Per request (``ResponseCache.admit``), in this order:
- mode: the most specific setting wins, key > routing config > model >
  the top-level default (``cache:`` in the config file; absent = off);
  ``off`` | ``read_write`` | ``read_only`` | ``write_only``;
- the request's controls: ``no-cache`` (``mlx:cache: {skip: true}``,
  ``X-Muxx-Cache-Control: no-cache``, ``Cache-Control: no-cache``) skips
  reading, ``no-store`` skips writing, ``max-age=N`` / ``mlx:cache: {ttl:
  N}`` stores for at most N seconds (capped by ``max_ttl_s``) and accepts no
  cached answer older than N (0: neither reads nor writes);
- ``only-if-cached`` (``Cache-Control``): a request the cache cannot answer
  gets 504 ``cache_miss`` and never reaches an upstream;
- reproducibility (``cache_key.unreproducible``): sampled answers (no seed,
  temperature > 0 or unset) are not cached unless ``sampled: true``;
- the key (``cache_key.cache_key``).

Statuses: ``hit`` (served from the cache), ``miss`` (looked up, not there,
or the store was unavailable) and ``bypass`` (not looked up; the decision
trace says why). What is stored: answers with no error, not cancelled, with
their usage, every choice finished and none ``length`` or
``content_filter``, at most ``max_entry_bytes``; every event as the client
received it (chunks with content, reasoning, tool-call deltas, finish
reasons, logprobs; then usage at cost 0), replayed one by one, so a
streamed answer replays chunk by chunk and any entry serves streaming and
non-streaming clients alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from router.cache_key import NotCacheableError, cache_key, unreproducible
from router.cache_store import CacheStore
from router.execute import Outcome
from router.routes import Leaf, Plan, RoutingTable, leaves
from switchyard import event_tags
from switchyard.config import CachePolicy, CacheSettings
from switchyard.errors import SwitchyardError
from switchyard.v1 import cache_pb2 as cpb
from switchyard.v1 import chat_pb2 as pb

log = logging.getLogger(__name__)

HIT, MISS, BYPASS = "hit", "miss", "bypass"
_READS = frozenset({"read_write", "read_only"})
_WRITES = frozenset({"read_write", "write_only"})
_TRUNCATED = frozenset({"length", "content_filter"})


@dataclass(slots=True)
class Ticket:
    """One request's dealings with the cache."""

    status: str
    reason: str = ""        # why not read (bypass) or, after the run, why not stored
    key: str = ""
    read: bool = False
    write: bool = False
    ttl_s: int = 0
    max_age_s: int | None = None
    tenant: str = ""
    stored: bool = False
    age_s: float = 0.0
    applies: bool = True    # False: no cache configured for this request (the usage event says nothing)
    limit: int = 0          # max_entry_bytes
    coalesce_s: float = 0.0  # how long this request may wait for an identical one's answer (0: never)
    leads: bool = False      # identical requests wait for this one's answer (``release`` wakes them)
    entry: cpb.CacheEntry | None = None  # what this request stored, for the requests waiting on it

    def not_stored(self, why: str) -> None:
        self.reason = f"{self.reason}; not stored: {why}" if self.reason else why

    def to_proto(self) -> pb.CacheDecision:
        out = pb.CacheDecision(status=self.status, reason=self.reason, stored=self.stored, key=self.key[:16])
        if self.write or self.stored:
            out.ttl_s = self.ttl_s
        if self.status == HIT:
            out.age_s = round(self.age_s, 3)
        return out


class Rules:
    """The cache settings of one routing table, resolved once."""

    def __init__(self, table: RoutingTable) -> None:
        self.settings: CacheSettings = table.config.cache
        self.models: dict[tuple[str, str], CachePolicy] = {}
        for identifier, policy in self.settings.models.items():
            try:
                target, _ = table.resolver.resolve(identifier)
            except SwitchyardError:  # validated at load; a vanished model simply has no setting
                continue
            self.models[(target.provider, target.model)] = policy

    def mode_and_ttl(self, plan: Plan, key_id: str) -> tuple[str, int]:
        settings = self.settings
        mode, ttl = settings.mode, settings.ttl_s
        if plan.route:
            policy = settings.routes.get(plan.route)
        else:
            leaf = plan.root if isinstance(plan.root, Leaf) else leaves(plan.root)[0][0]
            policy = self.models.get((leaf.target.provider, leaf.target.model)) if self.models else None
        for level in (policy, settings.keys.get(key_id) if settings.keys else None):
            if level is not None:
                mode = level.mode or mode
                ttl = level.ttl_s or ttl
        return mode, ttl


class Recorder:
    """Collects the events of an answer being served, to store it if it turns
    out complete. Bounded by ``limit`` bytes. Chunks are kept as bytes and
    parsed only at the end, from the last one back, until every choice's
    finish reason is found (one or two for most answers)."""

    __slots__ = ("choices", "closed", "events", "limit", "reason", "size", "usage")

    def __init__(self, limit: int, choices: int) -> None:
        self.limit = limit
        self.choices = choices
        self.events: list[bytes] = []
        self.size = 0
        self.usage = False  # the usage event (the last of a complete answer) was seen
        self.reason = ""
        self.closed = False  # finish() has run

    def add(self, raw: bytes) -> bool:
        """Record one event; True when it completes the answer (the usage
        event comes last), so the answer can be stored before the client
        has it, and a next identical request finds it."""
        if self.reason:
            return False
        tag = raw[0]
        if tag == event_tags.USAGE:
            self.usage = True  # its bytes are written again at cost 0 by finish()
        elif tag == event_tags.STARTED:
            return False  # the run's outcome has it parsed
        elif tag != event_tags.CHUNK:
            self.reason = "the answer ended with an error" if tag == event_tags.ERROR else ""
            return False
        self.size += len(raw)
        if self.size > self.limit:
            self.reason = f"answer larger than max_entry_bytes ({self.limit})"
            self.events.clear()
            return False
        self.events.append(raw)
        return self.usage

    def verdict(self, outcome: Outcome) -> str:
        """Why the answer must not be stored ("" when it may)."""
        if self.reason:
            return self.reason
        if outcome.cancelled:
            return "the client went away"
        if outcome.error is not None:
            return "the answer ended with an error"
        if not self.usage or outcome.started is None or outcome.usage is None:
            return "the answer is incomplete"
        finished: dict[int, str] = {}  # each choice's last finish reason
        for raw in reversed(self.events):
            if raw[0] != event_tags.CHUNK:
                continue
            for delta in pb.ChatEvent.FromString(raw).chunk.choices:
                if delta.finish_reason and delta.index not in finished:
                    finished[delta.index] = delta.finish_reason
            if len(finished) >= self.choices:
                break
        for index in range(self.choices):
            finish = finished.get(index)
            if not finish:
                return f"choice {index} did not finish"
            if finish in _TRUNCATED:
                return f"finish_reason {finish}"
        return ""


@dataclass(slots=True)
class ResponseCache:
    store: CacheStore | None = None
    _rules: tuple[RoutingTable, Rules] | None = field(default=None, repr=False)
    # Requests running on this replica that will store their answer, by key:
    # identical non-streaming requests wait on them (request coalescing).
    _running: dict[str, asyncio.Future[cpb.CacheEntry | None]] = field(default_factory=dict, repr=False)

    def admit(self, request: pb.ChatRequest, plan: Plan, table: RoutingTable) -> Ticket:
        """The cache decision for a planned request (no I/O)."""
        if self.store is None:
            return Ticket(BYPASS, "no cache store (SWITCHYARD_NATS_URL unset)", applies=False)
        rules = self._rules[1] if self._rules is not None and self._rules[0] is table else self._rules_for(table)
        settings = rules.settings
        mode, ttl = rules.mode_and_ttl(plan, request.identity.key_id)
        if mode == "off":
            return Ticket(BYPASS, "cache off", applies=False)
        routing = request.routing
        read, write = mode in _READS, mode in _WRITES
        max_age = None
        if routing.HasField("cache_ttl_s"):
            max_age = routing.cache_ttl_s
            ttl = min(max_age, settings.max_ttl_s)
        reasons = []
        if routing.cache_skip:
            read = False
            reasons.append("no-cache")
        if routing.cache_no_store:
            write = False
            reasons.append("no-store")
        if max_age == 0:
            read = write = False
            reasons.append("max-age=0")
        if not read and not write:
            return Ticket(BYPASS, ", ".join(reasons) or f"mode {mode}")
        if not settings.sampled and (why := unreproducible(request, plan)):
            return Ticket(BYPASS, why)
        tenant = request.identity.tenant
        scope = ""
        if settings.scope == "key":
            scope = request.identity.key_id
        elif settings.scope == "end_user":
            scope = routing.end_user or request.user
        try:
            key = cache_key(request, plan, tenant, scope)
        except NotCacheableError as exc:
            return Ticket(BYPASS, str(exc))
        except Exception:  # the cache never fails a request
            log.exception("cache: key failed")
            return Ticket(BYPASS, "the cache key could not be computed")
        status = MISS if read else BYPASS
        reason = "" if read else ", ".join(reasons) or f"mode {mode}"
        return Ticket(status, reason, key, read, write, ttl, max_age, tenant, limit=settings.max_entry_bytes,
                      coalesce_s=settings.coalesce_wait_s if read and write else 0.0)

    async def coalesce(self, ticket: Ticket, request: pb.ChatRequest,
                       remaining_s: float | None) -> cpb.CacheEntry | None:
        """After a miss: the answer of an identical request already running
        on this replica, waited for (non-streaming requests only: a stream
        would lose its time to first token), or None, in which case this
        request runs itself and, if it will store its answer, is the one
        others wait for until ``release``."""
        if not ticket.coalesce_s:
            return None
        running = self._running.get(ticket.key)
        if running is None:
            self._running[ticket.key] = asyncio.get_running_loop().create_future()
            ticket.leads = True
            return None
        if request.stream:
            return None
        wait = ticket.coalesce_s if remaining_s is None else max(0.0, min(ticket.coalesce_s, remaining_s))
        try:
            entry = await asyncio.wait_for(asyncio.shield(running), wait)
        except TimeoutError:
            return None
        if entry is not None:
            ticket.reason = "coalesced: the answer of an identical request that was running"
        return entry

    def release(self, ticket: Ticket) -> None:
        """The leader is done: its waiters get what it stored (None: they run themselves)."""
        if ticket.leads and (running := self._running.pop(ticket.key, None)) is not None:
            running.set_result(ticket.entry if ticket.stored else None)

    @staticmethod
    def refusal(request: pb.ChatRequest, ticket: Ticket) -> pb.Error | None:
        """The error for an only-if-cached request the cache did not answer."""
        if not request.routing.cache_only:
            return None
        why = ticket.reason or "no cached answer"
        return pb.Error(status=504, type="api_error", code="cache_miss", param="Cache-Control",
                        message=f"only-if-cached: the cache cannot answer this request ({why})")

    def _rules_for(self, table: RoutingTable) -> Rules:
        rules = Rules(table)
        self._rules = (table, rules)
        return rules

    async def lookup(self, ticket: Ticket) -> cpb.CacheEntry | None:
        """The entry to answer from, or None (a miss)."""
        assert self.store is not None
        entry = await self.store.get(ticket.key, ticket.tenant)
        if entry is None:
            return None
        now_ms = time.time() * 1000
        age_s = (now_ms - entry.created_ms) / 1000
        if entry.tenant != ticket.tenant:  # the tenant is in the key: only a digest collision gets here
            log.error("cache: entry under another tenant's key; ignored")
            return None
        if now_ms >= entry.expires_ms or (ticket.max_age_s is not None and age_s > ticket.max_age_s):
            return None
        ticket.age_s = age_s
        return entry

    def replay(self, entry: cpb.CacheEntry, ticket: Ticket, request: pb.ChatRequest, plan: Plan,
               outcome: Outcome, headers: dict[str, str] | None = None, received: float = 0.0) -> Iterator[bytes]:
        """The hit's events: a fresh ``started`` (this request's id, the
        answer's original provider and model, ``headers`` for the client,
        the router's time since ``received``), then the stored events."""
        ticket.status = HIT
        started = pb.Started()
        started.CopyFrom(entry.started)
        started.request_id, started.model_requested, started.cache = request.request_id, plan.model_requested, HIT
        if plan.route:
            started.route, started.route_version = plan.route, plan.route_version
        if headers:
            started.headers.update(headers)
        outcome.started = started
        outcome.arm = started.arm
        outcome.cache_status, outcome.cost_saved_usd = HIT, entry.cost_usd
        outcome.first_output_at = now = time.monotonic()
        if received:
            started.timing.router_us = started.timing.router_total_us = int((now - received) * 1e6)
        yield pb.ChatEvent(started=started).SerializeToString()
        for raw in entry.events:
            if raw[0] == event_tags.USAGE:
                outcome.usage = pb.ChatEvent.FromString(raw).usage
            yield raw

    def recorder(self, ticket: Ticket, request: pb.ChatRequest) -> Recorder | None:
        if not ticket.write:
            return None
        return Recorder(ticket.limit, request.sampling.n or 1)

    def finish(self, ticket: Ticket, recorder: Recorder, outcome: Outcome) -> None:
        """Store the answer if it is complete and successful (queued: never
        waits for the store); ``ticket`` says whether and why not. Runs once."""
        assert self.store is not None
        if recorder.closed:
            return
        recorder.closed = True
        if reason := recorder.verdict(outcome):
            ticket.not_stored(reason)
            return
        now_ms = int(time.time() * 1000)
        started, billed = outcome.started, outcome.usage
        assert started is not None and billed is not None  # the verdict checked them
        kept = pb.Started(provider=started.provider, provider_type=started.provider_type, model=started.model,
                          arm=started.arm)
        free = pb.Usage()
        free.CopyFrom(billed)  # what the client was told (the sum over billed attempts), at cost 0 for a hit
        free.cost_usd = 0.0
        events = recorder.events
        for i in range(len(events) - 1, -1, -1):
            if events[i][0] == event_tags.USAGE:
                events[i] = pb.ChatEvent(usage=free).SerializeToString()
                break
        entry = cpb.CacheEntry(tenant=ticket.tenant, created_ms=now_ms, expires_ms=now_ms + ticket.ttl_s * 1000,
                               started=kept, events=events, cost_usd=billed.cost_usd)
        ticket.stored = self.store.put(ticket.key, entry, ticket.ttl_s)
        ticket.entry = entry
        if not ticket.stored:
            ticket.not_stored("the cache store is unavailable")
