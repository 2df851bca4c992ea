from __future__ import annotations

import time
from collections import Counter

import pytest

from router import policy
from router.breaker import BreakerBoard
from router.execute import generate_request_bytes
from switchyard.config import BreakerSettings
from switchyard.v1 import provider_pb2 as ppb
from tests.unit.router.scripted import (
    REQUEST,
    Provider,
    answer,
    chunk,
    context,
    copy,
    error,
    kinds,
    run,
    stream_plan,
    table,
    tool_chunk,
    transport_error,
    usage,
)

FALLBACKS = ("m2",)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Back-off waits, recorded instead of slept."""
    recorded: list[float] = []

    async def sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(policy, "sleep", sleep)
    return recorded


def test_generate_request_embeds_request_bytes_unchanged() -> None:
    raw = generate_request_bytes(REQUEST.SerializeToString(), "a", "m1", 3)
    parsed = ppb.GenerateRequest.FromString(raw)
    assert parsed.request == REQUEST
    assert (parsed.target.provider, parsed.target.model, parsed.attempt) == ("a", "m1", 3)


# ------------------------------------------------------------ one target --


async def test_success_relays_events_after_started() -> None:
    provider = Provider([chunk("he"), chunk("llo", "stop"), usage(2)])
    events, outcome = await run(table(), provider)
    assert kinds(events) == ["started", "chunk", "chunk", "usage"]
    started = events[0].started
    assert (started.provider, started.provider_type, started.attempt, started.model_requested) == \
        ("a", "openai", 1, "m1")
    assert outcome.usage.completion_tokens == 2 and outcome.error is None
    assert outcome.attempts[0].outcome == "ok"


async def test_retryable_error_before_output_falls_back_silently() -> None:
    provider = Provider([error(503, True)], answer())
    events, outcome = await run(table(), provider, fallbacks=FALLBACKS)
    assert kinds(events) == ["started", "chunk", "usage"]
    assert events[0].started.provider == "b" and events[0].started.attempt == 2
    assert [a.outcome for a in outcome.attempts] == ["error", "ok"]
    assert provider.targets == ["a/m1", "b/m2"]


async def test_non_retryable_error_does_not_fall_back() -> None:
    provider = Provider([error(400, False)], answer("never"))
    events, _ = await run(table(), provider, fallbacks=FALLBACKS)
    assert kinds(events) == ["error"]
    assert events[0].error.status == 400
    assert len(provider.requests) == 1


async def test_error_after_output_ends_stream_without_fallback() -> None:
    provider = Provider([chunk("part"), error(502, True)], answer("never"))
    events, outcome = await run(table(), provider, fallbacks=FALLBACKS)
    assert kinds(events) == ["started", "chunk", "error"]
    assert outcome.error.status == 502
    assert len(provider.requests) == 1


async def test_dead_worker_before_output_retries_same_target(waits: list[float]) -> None:
    provider = Provider([transport_error()], answer())
    events, _ = await run(table(), provider, fallbacks=FALLBACKS)
    assert events[0].started.provider == "a" and events[0].started.attempt == 2
    assert provider.targets == ["a/m1", "a/m1"]


async def test_dead_worker_retries_with_growing_backoff_then_falls_back(waits: list[float]) -> None:
    dead = [[transport_error()] for _ in range(policy.TRANSPORT_RETRIES + 1)]
    provider = Provider(*dead, answer())
    events, _ = await run(table(), provider, fallbacks=FALLBACKS)
    assert provider.targets == ["a/m1"] * (policy.TRANSPORT_RETRIES + 1) + ["b/m2"]
    assert events[0].started.provider == "b"
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.5]  # about a second for Envoy to notice the dead replica


async def test_single_target_dead_worker_reports_503(waits: list[float]) -> None:
    provider = Provider(*[[transport_error()] for _ in range(policy.TRANSPORT_RETRIES + 1)])
    events, _ = await run(table(), provider)
    assert kinds(events) == ["error"]
    assert events[0].error.status == 503 and len(provider.requests) == policy.TRANSPORT_RETRIES + 1


async def test_dead_worker_mid_stream_is_an_error_event() -> None:
    provider = Provider([chunk("x"), transport_error()])
    events, _ = await run(table(), provider, fallbacks=FALLBACKS)
    assert events[-1].error.code == "provider_unavailable"
    assert provider.closed[0]


async def test_exhausted_plan_reports_the_most_informative_error() -> None:
    # A context-length rejection says more than the 503 that followed it.
    provider = Provider([error(429, True)], [error(503, True, upstream=503)])
    events, _ = await run(table(), provider, fallbacks=FALLBACKS)
    assert kinds(events) == ["error"] and events[0].error.status == 429
    provider = Provider([error(400, False, code="context_length_exceeded")])
    events, _ = await run(table("routes:\n  r:\n    fallback_on: [4xx]\n    targets: [m1, m2]\n"),
                          Provider([error(400, False, code="context_length_exceeded")], [error(503, True)]), "@r")
    assert events[0].error.status == 400 and events[0].error.code == "context_length_exceeded"


async def test_empty_stream_counts_as_failure() -> None:
    provider = Provider([], answer())
    events, _ = await run(table(), provider, fallbacks=FALLBACKS)
    assert events[0].started.provider == "b"


async def test_cancellation_cancels_provider_call() -> None:
    provider = Provider([chunk("a"), chunk("b")])
    ctx = context(table(), provider, "m1")
    agen = stream_plan(ctx)
    await anext(agen)  # started
    await anext(agen)  # first chunk
    await agen.aclose()  # what a cancelled client call does to the generator
    assert provider.closed[0]
    assert ctx.outcome.cancelled
    assert ctx.outcome.attempts[0].outcome == "cancelled"


# --------------------------------------------------------------- retries --

RETRYING = """
routes:
  r:
    targets:
      - model: m1
        retry: {max_attempts: 3, initial_backoff_s: 0.2, max_backoff_s: 1, max_retry_after_s: 5}
      - m2
"""


async def test_retries_in_place_with_jittered_backoff(waits: list[float]) -> None:
    provider = Provider([error(503, True)], [error(500, True)], answer())
    events, outcome = await run(table(RETRYING), provider, "@r")
    assert provider.targets == ["a/m1", "a/m1", "a/m1"]
    assert events[0].started.attempt == 3
    assert [a.retry for a in outcome.attempts] == [0, 1, 2]
    assert len(waits) == 2 and 0 <= waits[0] <= 0.2 and 0 <= waits[1] <= 0.4  # full jitter under the cap


async def test_retry_after_is_honoured(waits: list[float]) -> None:
    provider = Provider([error(429, True, retry_after_ms=1500)], answer())
    await run(table(RETRYING), provider, "@r")
    assert waits == [1.5] and provider.targets == ["a/m1", "a/m1"]


async def test_retry_after_beyond_the_limit_fails_over_at_once(waits: list[float]) -> None:
    provider = Provider([error(429, True, retry_after_ms=60_000)], answer())
    events, _ = await run(table(RETRYING), provider, "@r")
    assert waits == [] and provider.targets == ["a/m1", "b/m2"]
    assert events[0].started.provider == "b"


async def test_retry_never_sleeps_past_the_deadline(waits: list[float]) -> None:
    provider = Provider([error(429, True, retry_after_ms=2000)], answer())
    await run(table(RETRYING), provider, "@r", deadline=time.monotonic() + 1.0)
    assert waits == [] and provider.targets == ["a/m1", "b/m2"]


async def test_non_retryable_error_is_not_retried(waits: list[float]) -> None:
    provider = Provider([error(400, False)])
    events, _ = await run(table(RETRYING), provider, "@r")
    assert waits == [] and len(provider.requests) == 1 and events[0].error.status == 400


# -------------------------------------------------------------- breakers --


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_open_breaker_skips_target_and_half_open_probe_closes_it() -> None:
    clock = Clock()
    board = BreakerBoard(BreakerSettings(consecutive_failures=2, cooldown_s=10), clock=clock)
    routing = table()
    for _ in range(2):
        await run(routing, Provider([error(503, True)], answer()), fallbacks=FALLBACKS, breakers=board)
    provider = Provider(answer())
    events, outcome = await run(routing, provider, fallbacks=FALLBACKS, breakers=board)
    assert provider.targets == ["b/m2"]  # a/m1 was skipped, not tried
    assert (outcome.attempts[0].outcome, outcome.attempts[0].code) == ("skipped", "breaker_open")
    assert events[0].started.provider == "b"
    clock.now += 11  # cool-down over: one probe goes through
    provider = Provider(answer())
    await run(routing, provider, fallbacks=FALLBACKS, breakers=board)
    assert provider.targets == ["a/m1"]
    assert board.states()[("a", "m1")] == "closed"


async def test_open_breaker_on_the_only_target_answers_503_with_retry_after() -> None:
    clock = Clock()
    board = BreakerBoard(BreakerSettings(consecutive_failures=1, cooldown_s=30), clock=clock)
    await run(table(), Provider([error(500, True)]), breakers=board)
    provider = Provider()
    events, _ = await run(table(), provider, breakers=board)
    assert provider.requests == []
    assert events[0].error.code == "circuit_open" and events[0].error.retry_after_ms == 30_000


async def test_client_errors_do_not_trip_the_breaker() -> None:
    board = BreakerBoard(BreakerSettings(consecutive_failures=1))
    await run(table(), Provider([error(400, False)]), breakers=board)
    provider = Provider(answer())
    await run(table(), provider, breakers=board)
    assert provider.targets == ["a/m1"]


# ----------------------------------------------------------- strategies --

WEIGHTED = """
routes:
  exp:
    strategy: weighted
    sticky: end_user
    targets:
      - {model: m1, name: control, weight: 3}
      - {model: m2, name: candidate, weight: 1}
"""


async def test_weighted_is_sticky_per_end_user_and_follows_the_weights() -> None:
    routing = table(WEIGHTED)
    arms: Counter[str] = Counter()
    for user in range(400):
        request = copy(REQUEST)
        request.routing.end_user = f"user-{user}"
        first, _ = await run(routing, Provider(answer()), "@exp", request=request)
        again, outcome = await run(routing, Provider(answer()), "@exp", request=request)
        assert first[0].started.arm == again[0].started.arm == outcome.arm
        arms[outcome.arm] += 1
    assert 240 <= arms["control"] <= 360  # 3:1 of 400 is 300
    assert outcome.routes[0].reason == "sticky on end_user"


async def test_weighted_without_sticky_value_is_random_and_says_so() -> None:
    _, outcome = await run(table(WEIGHTED), Provider(answer()), "@exp")
    assert outcome.arm in ("control", "candidate")
    assert outcome.routes[0].reason == "random (the request has no end_user)"


CONDITIONAL = """
routes:
  cond:
    strategy: conditional
    targets:
      - {model: m2, when: {tags.tier: premium}}
      - {model: m3, when: {or: [{stream: true}, {prompt_tokens: {gte: 1000}}]}}
  strict:
    strategy: conditional
    targets:
      - {model: m2, when: {tags.tier: premium}}
"""


async def test_conditional_first_match_wins() -> None:
    request = copy(REQUEST)
    request.routing.tags["tier"] = "premium"
    request.stream = True
    provider = Provider(answer())
    _, outcome = await run(table(CONDITIONAL), provider, "@cond", request=request)
    assert provider.targets == ["b/m2"]
    assert (outcome.routes[0].chosen, outcome.routes[0].reason) == ("m2", "rule 1 matched")
    request.routing.tags["tier"] = "free"
    provider = Provider(answer())
    await run(table(CONDITIONAL), provider, "@cond", request=request)
    assert provider.targets == ["a/m3"]


async def test_conditional_without_a_match_is_a_400() -> None:
    provider = Provider()
    events, _ = await run(table(CONDITIONAL), provider, "@strict")
    assert events[0].error.status == 400 and events[0].error.code == "no_matching_route"
    assert provider.requests == []


CASCADE = """
routes:
  cas:
    strategy: cascade
    targets: [m1, m3, m2]
    gate: {min_chars: 3}
"""


async def test_cascade_releases_only_the_accepted_answer_and_bills_every_tier() -> None:
    provider = Provider([chunk("trunc", "length"), usage(5, 0.1)],
                        [chunk("ab", "stop"), usage(1, 0.2)],
                        [chunk("a full answer", "stop"), usage(3, 0.3)])
    events, outcome = await run(table(CASCADE), provider, "@cas")
    assert provider.targets == ["a/m1", "a/m3", "b/m2"]
    assert kinds(events) == ["started", "chunk", "usage"]
    assert events[1].chunk.choices[0].content == "a full answer"
    assert events[2].usage.completion_tokens == 9  # every tier's tokens were bought
    assert events[2].usage.cost_usd == pytest.approx(0.6)
    assert [a.gate for a in outcome.attempts] == ["rejected: finish_reason length",
                                                  "rejected: choice 0: shorter than 3 characters", ""]
    assert events[0].started.provider == "b"


async def test_cascade_accepts_the_first_tier_that_passes() -> None:
    provider = Provider([chunk("good enough", "stop"), usage(2)], answer("never"))
    events, outcome = await run(table(CASCADE), provider, "@cas")
    assert provider.targets == ["a/m1"]
    assert events[1].chunk.choices[0].content == "good enough"
    assert outcome.attempts[0].gate == "accepted"


async def test_cascade_gate_checks_json_and_required_tools() -> None:
    request = copy(REQUEST)
    request.response_format.type = "json_schema"
    request.response_format.schema_json = '{"type": "object", "required": ["a"]}'
    provider = Provider([chunk("{not json", "stop"), usage(1)], [chunk('{"b": 1}', "stop"), usage(1)],
                        [chunk('{"a": 1}', "stop"), usage(1)])
    _, outcome = await run(table(CASCADE), provider, "@cas", request=request)
    assert [a.gate for a in outcome.attempts][:2] == [
        "rejected: choice 0: not valid JSON",
        "rejected: choice 0: does not match the schema: 'a' is a required property"]
    request = copy(REQUEST)
    request.tool_choice.mode = "required"
    provider = Provider([chunk("I would rather talk", "stop"), usage(1)], [tool_chunk("lookup"), usage(1)])
    _, outcome = await run(table(CASCADE), provider, "@cas", request=request)
    assert outcome.attempts[0].gate == "rejected: choice 0: no tool call although tool_choice is required"
    assert outcome.attempts[1].gate == "accepted"


async def test_cascade_tier_failing_after_output_is_rejected_not_shown() -> None:
    provider = Provider([chunk("half"), error(502, True)], answer("second tier"))
    events, outcome = await run(table(CASCADE), provider, "@cas")
    assert kinds(events) == ["started", "chunk", "usage"]
    assert outcome.error is None and outcome.attempts[0].gate == "rejected: failed after output"


NESTED = """
routes:
  inner:
    targets: [m2, m3]
  outer:
    fallback_on: ["503"]
    targets:
      - model: m1
      - model: "@inner"
        params: {temperature: 0.1}
        timeouts: {first_token_s: 7}
"""


async def test_nested_config_inherits_target_overrides() -> None:
    provider = Provider([error(503, True)], [error(500, True)], answer())
    events, outcome = await run(table(NESTED), provider, "@outer")
    assert provider.targets == ["a/m1", "b/m2", "a/m3"]
    sent = provider.requests[2]
    assert sent.request.sampling.temperature == pytest.approx(0.1)
    assert sent.timeouts.first_token_s == 7
    assert not provider.requests[0].request.sampling.HasField("temperature")
    assert [r.route for r in outcome.routes] == ["outer", "inner"]
    assert outcome.attempts[2].route == "inner"
    assert events[0].started.route == "outer"


async def test_fallback_on_limits_what_moves_on() -> None:
    provider = Provider([error(500, True)], answer())
    events, _ = await run(table(NESTED), provider, "@outer")
    assert provider.targets == ["a/m1"] and events[0].error.status == 500
