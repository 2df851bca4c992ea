"""Rate limits, concurrency caps and budgets held exactly by two governors
(two router replicas) sharing a real nats-server, and the pipeline's use of
them (refusals before any upstream call, headers, a stream cut at a hard
budget, reservations settled and released)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from edge.orphan_usage import budget_names
from router.breaker import BreakerBoard
from router.budgets import spent_of
from router.governance import BUCKETS, BUDGETS_BUCKET, LIMITS_BUCKET, GovernanceError, Governor
from router.ledger import Buckets, Ledger, MemoryKV
from router.limits import go_duration
from router.pipeline import Pipeline
from router.routes import RoutingTable
from switchyard.config import BreakerSettings, GovernanceSpec, parse_config
from switchyard.v1 import chat_pb2 as pb
from tests.unit.router.scripted import BASE, REQUEST, Provider, chunk, copy, table, transport_error, usage
from tests.unit.router.test_pipeline import Sink
from tests.unit.switchyard.test_events import NatsServer

PRICED = """
  priced:
    type: openai
    base_url: http://127.0.0.1:4/v1
    models:
      - id: p1
        max_output_tokens: 100
        pricing: {input_per_mtok: 1000000, output_per_mtok: 1000000}
"""  # $1 per token: costs are token counts


def routing() -> RoutingTable:
    return table()


def base_with_priced() -> RoutingTable:
    return RoutingTable(parse_config(BASE.replace("\naliases:", PRICED + "aliases:")))


def limited(key: str = "k1", *, rpm: int = 0, tpm: int = 0, user_rpm: int = 0, budgets: tuple = (),
            concurrent: int = 0, model: str = "m1", user: str = "", stream: bool = False,
            max_tokens: int | None = None) -> pb.ChatRequest:
    request = copy(REQUEST)
    request.request_id = f"r{time.monotonic_ns()}"
    request.model, request.stream = model, stream
    request.identity.key_id, request.identity.tenant = key, "acme"
    if rpm or tpm:
        request.identity.key_limit.rpm, request.identity.key_limit.tpm = rpm, tpm
    if user_rpm:
        request.identity.end_user_limit.rpm = user_rpm
    if user:
        request.user = user
    for spec in budgets:
        request.identity.budgets.add(**spec)
    if concurrent:
        request.identity.max_concurrent = concurrent
    if max_tokens is not None:
        request.sampling.max_tokens = max_tokens
    return request


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    server = NatsServer()
    await server.start()
    yield server
    server.remove()


@pytest.fixture
async def replicas(nats_server: NatsServer) -> AsyncIterator[object]:
    opened: list[tuple[Buckets, Governor]] = []

    class Replicas:
        @staticmethod
        async def open(settings: GovernanceSpec | None = None) -> Governor:
            buckets = Buckets(nats_server.url, BUCKETS)
            await buckets.start(wait_s=10)
            governor = Governor(Ledger(lambda: buckets.kv(LIMITS_BUCKET), buckets.connected),
                                Ledger(lambda: buckets.kv(BUDGETS_BUCKET), buckets.connected), settings)
            opened.append((buckets, governor))
            return governor

    yield Replicas()
    for buckets, governor in opened:
        await governor.close()
        await buckets.close()


async def admit_all(governors: list[Governor], requests: list[pb.ChatRequest], routing_table) -> list[object]:
    plan = routing_table.plan(requests[0].model)
    return await asyncio.gather(*(governors[i % len(governors)].admit(r, plan, routing_table)
                                  for i, r in enumerate(requests)), return_exceptions=True)


async def test_two_replicas_admit_exactly_the_limit_and_tell_the_client_when_to_retry(replicas) -> None:
    a, b = await replicas.open(), await replicas.open()
    routing_table = routing()
    results = await admit_all([a, b], [limited(rpm=25) for _ in range(60)], routing_table)
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, GovernanceError)]
    assert len(admitted) == 25 and len(refused) == 35
    error = refused[0].error
    assert error.status == 429 and error.code == "rate_limit_exceeded"
    assert error.headers["x-ratelimit-limit-requests"] == "25"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(error.headers["retry-after"]) <= 3  # the next slot frees in 60/25 s
    assert error.headers["x-ratelimit-reset-requests"].endswith("s")
    # Another key is not affected.
    other = await admit_all([a, b], [limited("k2", rpm=25) for _ in range(3)], routing_table)
    assert not any(isinstance(r, BaseException) for r in other)


async def test_tokens_per_minute_reserve_an_estimate_and_reconcile_to_usage(replicas) -> None:
    a, b = await replicas.open(), await replicas.open()
    routing_table = routing()
    # Each request reserves its prompt estimate + max_tokens 200: five fit in 1,100 tokens, not six.
    results = await admit_all([a, b], [limited(tpm=1100, max_tokens=200) for _ in range(8)], routing_table)
    grants = [r for r in results if not isinstance(r, BaseException)]
    assert len(grants) == 5
    refused = next(r for r in results if isinstance(r, GovernanceError)).error
    assert refused.headers["x-ratelimit-limit-tokens"] == "1100"
    # They used 20 tokens each: what was not used comes back, and more requests fit again.
    for grant in grants:
        a.settle(grant, pb.Usage(prompt_tokens=10, completion_tokens=10))
    await a.close()
    again = await admit_all([b], [limited(tpm=1100, max_tokens=200) for _ in range(4)], routing_table)
    assert sum(not isinstance(r, BaseException) for r in again) == 4
    too_big = await admit_all([b], [limited(tpm=1100, max_tokens=5000)], routing_table)
    assert isinstance(too_big[0], GovernanceError) and too_big[0].error.code == "tokens_exceed_rate_limit"


async def test_end_user_limits_apply_per_user_and_give_back_the_key_slot(replicas) -> None:
    a = await replicas.open()
    routing_table = routing()
    ada = await admit_all([a], [limited(rpm=10, user_rpm=2, user="ada") for _ in range(3)], routing_table)
    assert [isinstance(r, GovernanceError) for r in ada] == [False, False, True]
    await a.close()  # the refused request's key slot is given back
    bob = await admit_all([a], [limited(rpm=10, user_rpm=2, user="bob") for _ in range(3)], routing_table)
    assert sum(not isinstance(r, BaseException) for r in bob) == 2
    rest = await admit_all([a], [limited(rpm=10, user_rpm=2, user=f"u{i}") for i in range(10)], routing_table)
    assert sum(not isinstance(r, BaseException) for r in rest) == 6  # 10 - ada's 2 - bob's 2


async def test_concurrency_cap_across_replicas(replicas) -> None:
    a, b = await replicas.open(), await replicas.open()
    routing_table = routing()
    results = await admit_all([a, b], [limited(concurrent=3) for _ in range(10)], routing_table)
    grants = [r for r in results if not isinstance(r, BaseException)]
    assert len(grants) == 3
    assert next(r for r in results if isinstance(r, GovernanceError)).error.code == "concurrency_limit_exceeded"
    a.settle(grants[0], None)
    await a.close()
    assert sum(not isinstance(r, BaseException) for r in await admit_all([b], [limited(concurrent=3)],
                                                                          routing_table)) == 1


async def test_a_budget_never_overspends_under_concurrency_on_two_replicas(replicas) -> None:
    a, b = await replicas.open(), await replicas.open()
    routing_table = base_with_priced()
    # $1 per token; each request reserves prompt (~6) + max_tokens 10 = ~$16; budget $100: six fit.
    budget = {"usd": 100, "period": "daily", "scope": "key"}
    requests = [limited(budgets=(budget,), model="p1", max_tokens=10) for _ in range(20)]
    results = await admit_all([a, b], requests, routing_table)
    grants = [r for r in results if not isinstance(r, BaseException)]
    worst = grants[0].budgets[0].reserved
    assert len(grants) == int(100 // worst)
    refused = next(r for r in results if isinstance(r, GovernanceError)).error
    assert refused.status == 402 and refused.code == "budget_exceeded"
    # Each actually cost $9: settled, the spend is exact and the rest of the budget is free again.
    for grant in grants:
        (a if grants.index(grant) % 2 else b).settle(grant, pb.Usage(prompt_tokens=5, completion_tokens=4,
                                                                     cost_usd=9.0))
        (a if grants.index(grant) % 2 else b).settle(grant, pb.Usage(cost_usd=9.0))  # a replayed settle
    await a.close()
    await b.close()
    state = (await a.budgets._kv().get(grants[0].budgets[0].key)).value
    spent, reserved = spent_of(orjson.loads(state), "daily", 0, time.time())
    assert spent == pytest.approx(9.0 * len(grants)) and reserved == 0
    assert spent <= 100


async def test_a_dead_replicas_reservations_expire(replicas) -> None:
    settings = GovernanceSpec(reservation_ttl_s=1.5)
    a, b = await replicas.open(settings), await replicas.open(settings)
    routing_table = base_with_priced()
    budget = {"usd": 20, "period": "monthly", "scope": "key"}
    [grant] = await admit_all([a], [limited(budgets=(budget,), model="p1", max_tokens=10)], routing_table)
    assert not isinstance(grant, BaseException)
    a._renewer.cancel()
    a._live.clear()
    [refused] = await admit_all([b], [limited(budgets=(budget,), model="p1", max_tokens=10)], routing_table)
    assert isinstance(refused, GovernanceError)
    deadline = time.monotonic() + 10
    while True:
        [result] = await admit_all([b], [limited(budgets=(budget,), model="p1", max_tokens=10)], routing_table)
        if not isinstance(result, BaseException):
            break
        assert time.monotonic() < deadline, "the dead replica's reservation was never released"
        await asyncio.sleep(0.1)


async def test_a_live_reservation_is_renewed_past_its_ttl(replicas) -> None:
    settings = GovernanceSpec(reservation_ttl_s=1.0)
    a, b = await replicas.open(settings), await replicas.open(settings)
    routing_table = base_with_priced()
    budget = {"usd": 20, "period": "monthly", "scope": "key"}
    [grant] = await admit_all([a], [limited(budgets=(budget,), model="p1", max_tokens=10)], routing_table)
    assert not isinstance(grant, BaseException)
    started = time.monotonic()
    while time.monotonic() - started < 2.5:  # 2.5 TTLs: still held because replica a renews it
        [refused] = await admit_all([b], [limited(budgets=(budget,), model="p1", max_tokens=10)], routing_table)
        assert isinstance(refused, GovernanceError)
        await asyncio.sleep(0.2)


async def test_nats_unreachable_rate_limits_fail_open_and_budgets_fail_closed() -> None:
    down = Governor(Ledger(lambda: None), Ledger(lambda: None))
    routing_table = base_with_priced()
    [grant] = await admit_all([down], [limited(rpm=1)], routing_table)
    assert not isinstance(grant, BaseException)
    closed = limited(rpm=1)
    closed.identity.key_limit.fail_closed = True
    [refused] = await admit_all([down], [closed], routing_table)
    assert isinstance(refused, GovernanceError) and refused.error.status == 503
    [refused] = await admit_all([down], [limited(budgets=({"usd": 5, "period": "daily"},), model="p1")],
                                routing_table)
    assert isinstance(refused, GovernanceError) and refused.error.code == "limits_unavailable"
    [grant] = await admit_all([down], [limited(budgets=({"usd": 5, "period": "daily", "fail_open": True},),
                                               model="p1")], routing_table)
    assert not isinstance(grant, BaseException)


def test_reset_durations_read_like_openais() -> None:
    assert [go_duration(s) for s in (0.02, 1.0, 1.5, 360.0)] == ["20ms", "1s", "1.5s", "6m0s"]


# ------------------------------------------------------------ the pipeline --


async def run_pipeline(request: pb.ChatRequest, provider: Provider, governor: Governor,
                       routing_table: RoutingTable | None = None) -> tuple[list[pb.ChatEvent], Sink]:
    sink = Sink()
    routing_table = routing_table or base_with_priced()
    pipeline = Pipeline(lambda: routing_table, provider, sink, BreakerBoard(BreakerSettings()), governor=governor)
    events = [pb.ChatEvent.FromString(raw) async for raw in pipeline.stream(request.SerializeToString(), None)]
    return events, sink


def memory_governor(**settings: object) -> Governor:
    kv = MemoryKV()
    return Governor(Ledger(lambda: kv), Ledger(lambda: kv), GovernanceSpec(**settings))  # type: ignore[arg-type]


async def test_a_refused_request_never_reaches_a_provider_and_is_metered_once() -> None:
    governor = memory_governor()
    provider = Provider([chunk("ok", "stop"), usage(1)])
    events, sink = await run_pipeline(limited(rpm=1), provider, governor)
    assert events[0].started.model == "m1"
    assert events[0].started.headers["x-ratelimit-limit-requests"] == "1"  # what OpenAI sends on every answer
    assert events[0].started.headers["x-ratelimit-remaining-requests"] == "0"
    events, sink = await run_pipeline(limited(rpm=1), provider, governor)
    assert events[0].error.status == 429 and events[0].error.headers["x-ratelimit-limit-requests"] == "1"
    assert len(provider.requests) == 1
    assert len(sink.events) == 1 and sink.events[0].http_status == 429


async def test_a_hard_budget_cuts_a_live_stream_and_bills_what_was_delivered() -> None:
    governor = memory_governor(stream_increment_tokens=16)
    words = [chunk("abcd" * 4) for _ in range(40)]  # 4 tokens a chunk, 160 in all
    provider = Provider([*words, chunk("", "stop"), usage(160)])
    budget = {"usd": 60, "period": "daily", "scope": "key", "hard": True}
    request = limited(budgets=(budget,), model="p1", stream=True)  # $1 per token, no max_tokens: 100 (model limit)
    events, sink = await run_pipeline(request, provider, governor)
    assert events[-1].error.code == "budget_exceeded" and events[-1].error.status == 402
    delivered = sum(len(e.chunk.choices[0].content) for e in events if e.HasField("chunk")) // 4
    event = sink.events[0]
    assert event.usage_estimated and event.usage.completion_tokens == delivered
    prompt = event.usage.prompt_tokens
    assert delivered > 0 and event.usage.cost_usd == pytest.approx(prompt + delivered)
    assert event.usage.cost_usd <= 60
    assert provider.closed == [True]  # the upstream attempt was cancelled


async def test_a_stream_cut_before_its_usage_is_billed_by_estimate() -> None:
    # The provider worker vanishes mid-answer.
    provider = Provider([*(chunk("abcd" * 8) for _ in range(5)), transport_error()])
    events, sink = await run_pipeline(limited(model="p1", stream=True), provider, memory_governor())
    event = sink.events[0]
    assert events[-1].error.code == "provider_unavailable" and event.status == "error"
    assert event.usage_estimated and 5 * 8 <= event.usage.completion_tokens <= 5 * 8 + 5
    assert event.usage.prompt_tokens > 0 and event.usage.cost_usd == pytest.approx(event.usage.total_tokens)


async def test_a_client_that_leaves_mid_stream_is_billed_for_what_was_generated() -> None:
    provider = Provider([*(chunk("abcd" * 8) for _ in range(50)), chunk("", "stop"), usage(400)])
    sink = Sink()
    routing_table = base_with_priced()
    pipeline = Pipeline(lambda: routing_table, provider, sink, BreakerBoard(BreakerSettings()),
                        governor=memory_governor())
    stream = pipeline.stream(limited(model="p1", stream=True).SerializeToString(), None)
    seen = [await anext(stream) for _ in range(11)]  # started + 10 chunks, then the client goes away
    await stream.aclose()
    assert len(seen) == 11
    event = sink.events[0]
    assert event.status == "cancelled" and event.usage_estimated
    assert 10 * 8 <= event.usage.completion_tokens <= 11 * 8 + 2  # what was generated so far, not 0


async def test_limits_of_a_routing_config_and_of_a_model_are_shared_by_every_key() -> None:
    config = BASE.replace("    models: [m1, m3]", "    models: [{id: m1, limits: {rpm: 1}}, m3]") + \
        "routes:\n  busy:\n    limits: {rpm: 2}\n    targets: [m3]\n"
    routing_table = RoutingTable(parse_config(config))
    governor = memory_governor()
    answers = [[chunk("ok", "stop"), usage(1)] for _ in range(4)]
    provider = Provider(*answers)
    statuses = []
    for key in ("k1", "k2", "k3"):  # three keys without limits of their own
        events, _ = await run_pipeline(limited(key, model="@busy"), provider, governor, routing_table)
        statuses.append(events[0].error.status if events[0].HasField("error") else 200)
    assert statuses == [200, 200, 429]
    assert "routing config @busy" in events[0].error.message
    assert events[0].error.headers["x-ratelimit-limit-requests"] == "2"
    events, _ = await run_pipeline(limited("k1", model="m1"), provider, governor, routing_table)
    assert events[0].HasField("started")
    events, _ = await run_pipeline(limited("k2", model="m1"), provider, governor, routing_table)
    assert events[0].error.status == 429 and "model m1" in events[0].error.message
    assert len(provider.requests) == 3  # the refused ones reached no provider



def spill_table(limits: str) -> RoutingTable:
    config = BASE.replace("    models: [m1, m3]", f"    models: [{{id: m1, limits: {limits}}}, m3]") + \
        "routes:\n  spill:\n    targets: [m1, m3]\n  only:\n    targets: [m1]\n"
    return RoutingTable(parse_config(config))


def answers(n: int) -> Provider:
    return Provider(*([chunk("ok", "stop"), usage(7)] for _ in range(n)))


async def test_a_models_limit_holds_when_a_routing_config_or_a_fallback_reaches_it() -> None:
    routing_table = spill_table("{rpm: 1}")
    governor = memory_governor()
    provider = answers(3)
    models = []
    for _ in range(2):  # the second finds m1 at its limit and spills over to m3
        events, _ = await run_pipeline(limited("k1", model="@spill"), provider, governor, routing_table)
        models.append(events[0].started.model)
    assert models == ["m1", "m3"]
    events, sink = await run_pipeline(limited("k2", model="@only"), provider, governor, routing_table)
    assert events[0].error.status == 429 and "model m1" in events[0].error.message
    assert events[0].error.headers["x-ratelimit-limit-requests"] == "1"
    assert sink.events[0].http_status == 429
    request = limited("k3", model="m1")
    request.routing.fallbacks.append("m3")  # a request's own fallbacks: m1 is still charged per attempt
    events, _ = await run_pipeline(request, provider, governor, routing_table)
    assert events[0].started.model == "m3"
    assert provider.targets.count("a/m1") == 1 and len(provider.requests) == 3


async def test_a_models_token_limit_is_settled_to_the_usage_through_a_routing_config() -> None:
    # Each request reserves its prompt estimate + max_tokens 60 against m1's 100 tokens a minute: two
    # reservations would not fit, but the first settles to the 7 tokens it used and the second fits.
    routing_table = spill_table("{tpm: 100}")
    governor = memory_governor()
    provider = answers(3)
    events, _ = await run_pipeline(limited("k1", model="@spill", max_tokens=60), provider, governor, routing_table)
    assert events[0].started.model == "m1"
    await governor.close()  # the settlement has landed
    events, _ = await run_pipeline(limited("k2", model="@spill", max_tokens=60), provider, governor, routing_table)
    assert events[0].started.model == "m1"
    big = limited("k3", model="@spill", max_tokens=200)  # more than m1's whole minute: m3 answers it
    events, _ = await run_pipeline(big, provider, governor, routing_table)
    assert events[0].started.model == "m3"


async def spend(governor: Governor, key: str) -> tuple[float, float]:
    entry = await governor.budgets._kv().get(key)
    return spent_of(orjson.loads(entry.value), "daily", 0, time.time())


async def test_an_orphaned_answer_is_charged_to_its_budgets_once(replicas) -> None:
    """The router that carried the answer died holding its reservation; the
    edge's estimate is charged through another replica, once however often
    it is sent, and the dead router's reservation goes with it."""
    dead, live = await replicas.open(), await replicas.open()
    routing_table = base_with_priced()
    budget = {"usd": 1000, "period": "daily", "scope": "key"}
    request = limited(budgets=(budget,), model="p1", max_tokens=10, user="u1")
    request.identity.budgets.add(usd=1000, period="daily", scope="end_user")
    [grant] = await admit_all([dead], [request], routing_table)
    assert not isinstance(grant, BaseException)
    dead._live.clear()  # the router is gone: it neither settles nor renews
    assert await live.settle_orphan(budget_names(request), 7.5, routing_table) == 2
    assert await live.settle_orphan(budget_names(request), 7.5, routing_table) == 2  # a retried call
    for entry in grant.budgets:
        assert await spend(live, entry.key) == (pytest.approx(7.5), 0)  # charged once, reservation gone


async def test_an_orphan_the_router_settled_itself_is_not_charged_again(replicas) -> None:
    router, other = await replicas.open(), await replicas.open()
    routing_table = base_with_priced()
    request = limited(budgets=({"usd": 1000, "period": "daily", "scope": "key"},), model="p1", max_tokens=10)
    [grant] = await admit_all([router], [request], routing_table)
    router.settle(grant, pb.Usage(prompt_tokens=5, completion_tokens=4, cost_usd=9.0))
    await router.close()  # lets the settlement land
    await other.settle_orphan(budget_names(request), 3.0, routing_table)  # only the hop had broken
    assert await spend(other, grant.budgets[0].key) == (pytest.approx(9.0), 0)


async def test_an_orphan_without_budgets_or_cost_charges_nothing(replicas) -> None:
    governor = await replicas.open()
    routing_table = base_with_priced()
    assert await governor.settle_orphan(budget_names(limited(model="p1")), 5.0, routing_table) == 0
    budgeted = limited(budgets=({"usd": 10, "period": "daily", "scope": "key"},), model="p1")
    assert await governor.settle_orphan(budget_names(budgeted), 0.0, routing_table) == 0


async def test_budget_status_reads_spent_and_reserved_of_the_key_and_its_tenant(replicas) -> None:
    governor = await replicas.open()
    routing_table = RoutingTable(parse_config(BASE.replace("\naliases:", PRICED + "aliases:")
                                              + "\ntenants:\n  acme:\n    budgets: [{usd: 50, period: monthly}]\n"))
    request = limited(budgets=({"usd": 100, "period": "daily", "scope": "key"},
                               {"usd": 300, "period": "daily", "scope": "end_user"}), model="p1", max_tokens=10,
                      user="u1")
    [held] = await admit_all([governor], [request], routing_table)
    settled = limited(budgets=({"usd": 100, "period": "daily", "scope": "key"},), model="p1", max_tokens=10)
    [done] = await admit_all([governor], [settled], routing_table)
    governor.settle(done, pb.Usage(prompt_tokens=2, completion_tokens=2, cost_usd=4.0))
    await asyncio.gather(*governor._tasks)
    found = {spec.scope: (spec.usd, spent, reserved)
             for spec, spent, reserved in await governor.budget_status(request.identity, routing_table)}
    worst = held.budgets[0].reserved
    assert found == {"key": (100, pytest.approx(4.0), pytest.approx(worst)),  # the end user's is per end user
                     "tenant": (50, pytest.approx(4.0), pytest.approx(worst))}
    # Given an end user, that end user's budget under the key too: u1 holds the reservation, u2 nothing.
    for user, reserved in (("u1", worst), ("u2", 0)):
        found = {spec.scope: (spec.usd, spent, held_now) for spec, spent, held_now in
                 await governor.budget_status(request.identity, routing_table, user)}
        assert found["end_user"] == (300, 0, pytest.approx(reserved))
