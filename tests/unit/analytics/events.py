"""Generated usage events for the analytics tests and benchmarks, and the
reference figures they must produce, computed here in plain Python."""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable
from typing import Any

from switchyard.v1 import usage_pb2 as upb

MODELS = (("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"),
          ("gemini", "gemini-2.5-flash"))
# Awkward strings on purpose: quotes, backslashes, tabs must round-trip.
TEAMS = ("search", "billing", "o'brien", "back\\slash", "tab\tbed")


def make_events(count: int, *, seed: int = 7, start_ms: int = 1_750_000_000_000, span_ms: int = 3 * 3600_000,
                tenants: tuple[str, ...] = ("acme", "globex"), prefix: str = "r") -> list[upb.UsageEvent]:
    rng = random.Random(seed)
    events = []
    for i in range(count):
        provider, model = rng.choice(MODELS)
        status = rng.choices(("ok", "error", "cancelled"), (90, 8, 2))[0]
        prompt, completion = rng.randint(5, 2000), rng.randint(0, 800)
        event = upb.UsageEvent(
            request_id=f"{prefix}{i:08d}", timestamp_ms=start_ms + rng.randrange(span_ms),
            tenant=rng.choice(tenants), key_id=rng.choice(("k1", "k2", "k3")),
            end_user=rng.choice(("", "u1", "u2", "u3")), session_id=rng.choice(("", "s1", "s2")),
            model_requested=model, model=model, provider=provider,
            route=rng.choice(("", "support")), route_version=rng.choice((1, 2)),
            status=status, http_status={"ok": 200, "error": 502, "cancelled": 499}[status],
            error_type="api_error" if status == "error" else "", stream=rng.random() < 0.5,
            latency_ms=rng.uniform(50, 5000), ttft_ms=rng.uniform(20, 800) if status == "ok" else 0.0,
            cache_status=rng.choice(("", "hit", "miss")), usage_estimated=rng.random() < 0.1,
            cost_saved_usd=0.0, endpoint=rng.choices(("", "embeddings"), (80, 20))[0],
        )
        if event.route:
            event.route_arm = rng.choice(("a", "b"))
        event.usage.prompt_tokens, event.usage.completion_tokens = prompt, completion
        event.usage.total_tokens = prompt + completion
        event.usage.cached_tokens = rng.randint(0, prompt)
        event.usage.reasoning_tokens = rng.randint(0, completion)
        event.usage.cost_usd = (prompt * 0.15 + completion * 0.6) / 1e6
        if event.cache_status == "hit":
            event.cost_saved_usd = event.usage.cost_usd
        event.tags["team"] = rng.choice(TEAMS)
        if rng.random() < 0.5:
            event.tags["feature"] = rng.choice(("chat", "summarise"))
        event.attempts.add(provider=provider, model=model, outcome=status)
        events.append(event)
    return events


def quantile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (what both engines compute)."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[round(q * 100) - 1]


def expected(events: Iterable[upb.UsageEvent]) -> dict[str, Any]:
    events = list(events)
    ok = [e.latency_ms for e in events if e.status == "ok"]
    ttft = [e.ttft_ms for e in events if e.ttft_ms > 0]
    return {
        "requests": len(events),
        "errors": sum(e.status == "error" for e in events),
        "cancelled": sum(e.status == "cancelled" for e in events),
        "cache_hits": sum(e.cache_status == "hit" for e in events),
        "prompt_tokens": sum(e.usage.prompt_tokens for e in events),
        "completion_tokens": sum(e.usage.completion_tokens for e in events),
        "cached_tokens": sum(e.usage.cached_tokens for e in events),
        "reasoning_tokens": sum(e.usage.reasoning_tokens for e in events),
        "cost_usd": sum(e.usage.cost_usd for e in events),
        "cost_saved_usd": sum(e.cost_saved_usd for e in events),
        "latency_p50_ms": quantile(ok, 0.5), "latency_p95_ms": quantile(ok, 0.95),
        "latency_p99_ms": quantile(ok, 0.99), "ttft_p50_ms": quantile(ttft, 0.5),
        "ttft_p95_ms": quantile(ttft, 0.95), "ttft_p99_ms": quantile(ttft, 0.99),
    }
