"""Price tables (USD per million tokens) and the cost of one attempt.

Each translator module registers its provider family's list prices here via
``PRICES[(type, model)]``; the config's ``pricing`` on a model overrides them.
Prices are list prices at the time of writing and are only defaults.
"""

from __future__ import annotations

from switchyard.config import Pricing
from switchyard.v1 import chat_pb2 as pb

PRICES: dict[tuple[str, str], Pricing] = {
    ("openai", "gpt-4o"): Pricing(input_per_mtok=2.5, output_per_mtok=10.0, cached_input_per_mtok=1.25),
    ("openai", "gpt-4o-mini"): Pricing(input_per_mtok=0.15, output_per_mtok=0.6, cached_input_per_mtok=0.075),
    ("openai", "gpt-4.1"): Pricing(input_per_mtok=2.0, output_per_mtok=8.0, cached_input_per_mtok=0.5),
    ("openai", "gpt-4.1-mini"): Pricing(input_per_mtok=0.4, output_per_mtok=1.6, cached_input_per_mtok=0.1),
    ("openai", "o4-mini"): Pricing(input_per_mtok=1.1, output_per_mtok=4.4, cached_input_per_mtok=0.275),
    # More OpenAI list prices (standard tier, short context), mid-2026. OpenAI bills no cache writes.
    ("openai", "gpt-5.5"): Pricing(input_per_mtok=5.0, output_per_mtok=30.0, cached_input_per_mtok=0.5),
    ("openai", "gpt-5.4"): Pricing(input_per_mtok=2.5, output_per_mtok=15.0, cached_input_per_mtok=0.25),
    ("openai", "gpt-5.4-mini"): Pricing(input_per_mtok=0.75, output_per_mtok=4.5, cached_input_per_mtok=0.075),
    ("openai", "gpt-5.4-nano"): Pricing(input_per_mtok=0.2, output_per_mtok=1.25, cached_input_per_mtok=0.02),
    ("openai", "gpt-5.2"): Pricing(input_per_mtok=1.75, output_per_mtok=14.0, cached_input_per_mtok=0.175),
    ("openai", "gpt-5.1"): Pricing(input_per_mtok=1.25, output_per_mtok=10.0, cached_input_per_mtok=0.125),
    ("openai", "gpt-5"): Pricing(input_per_mtok=1.25, output_per_mtok=10.0, cached_input_per_mtok=0.125),
    ("openai", "gpt-5-mini"): Pricing(input_per_mtok=0.25, output_per_mtok=2.0, cached_input_per_mtok=0.025),
    ("openai", "gpt-5-nano"): Pricing(input_per_mtok=0.05, output_per_mtok=0.4, cached_input_per_mtok=0.005),
    ("openai", "gpt-4.1-nano"): Pricing(input_per_mtok=0.1, output_per_mtok=0.4, cached_input_per_mtok=0.025),
    ("openai", "o3"): Pricing(input_per_mtok=2.0, output_per_mtok=8.0, cached_input_per_mtok=0.5),
    ("openai", "o3-mini"): Pricing(input_per_mtok=1.1, output_per_mtok=4.4, cached_input_per_mtok=0.55),
    # Anthropic list prices: input, output, cache reads, 5-minute cache writes (Haiku 5.5: prompts <= 100k tokens).
    ("anthropic", "claude-fable-5-2"): Pricing(input_per_mtok=8.0, output_per_mtok=40.0,
                                               cached_input_per_mtok=0.2, cache_write_per_mtok=10.0),
    ("anthropic", "claude-mythos-5-2"): Pricing(input_per_mtok=8.0, output_per_mtok=40.0,
                                                cached_input_per_mtok=0.2, cache_write_per_mtok=10.0),
    ("anthropic", "claude-fable-5-1"): Pricing(input_per_mtok=10.0, output_per_mtok=50.0,
                                               cached_input_per_mtok=0.25, cache_write_per_mtok=12.5),
    ("anthropic", "claude-mythos-5-1"): Pricing(input_per_mtok=10.0, output_per_mtok=50.0,
                                                cached_input_per_mtok=0.25, cache_write_per_mtok=12.5),
    ("anthropic", "claude-fable-5"): Pricing(input_per_mtok=10.0, output_per_mtok=50.0,
                                             cached_input_per_mtok=1.0, cache_write_per_mtok=12.5),
    ("anthropic", "claude-mythos-5"): Pricing(input_per_mtok=10.0, output_per_mtok=50.0,
                                              cached_input_per_mtok=1.0, cache_write_per_mtok=12.5),
    ("anthropic", "claude-opus-5-5"): Pricing(input_per_mtok=4.0, output_per_mtok=20.0,
                                              cached_input_per_mtok=0.2, cache_write_per_mtok=5.0),
    ("anthropic", "claude-opus-5"): Pricing(input_per_mtok=5.0, output_per_mtok=25.0,
                                            cached_input_per_mtok=0.5, cache_write_per_mtok=6.25),
    ("anthropic", "claude-opus-4-8"): Pricing(input_per_mtok=5.0, output_per_mtok=25.0,
                                              cached_input_per_mtok=0.5, cache_write_per_mtok=6.25),
    ("anthropic", "claude-opus-4-7"): Pricing(input_per_mtok=5.0, output_per_mtok=25.0,
                                              cached_input_per_mtok=0.5, cache_write_per_mtok=6.25),
    ("anthropic", "claude-opus-4-6"): Pricing(input_per_mtok=5.0, output_per_mtok=25.0,
                                              cached_input_per_mtok=0.5, cache_write_per_mtok=6.25),
    ("anthropic", "claude-opus-4-5"): Pricing(input_per_mtok=5.0, output_per_mtok=25.0,
                                              cached_input_per_mtok=0.5, cache_write_per_mtok=6.25),
    ("anthropic", "claude-opus-4-5-20251101"): Pricing(input_per_mtok=5.0, output_per_mtok=25.0,
                                                       cached_input_per_mtok=0.5, cache_write_per_mtok=6.25),
    ("anthropic", "claude-sonnet-5-5"): Pricing(input_per_mtok=2.0, output_per_mtok=10.0,
                                                cached_input_per_mtok=0.1, cache_write_per_mtok=2.5),
    ("anthropic", "claude-sonnet-5"): Pricing(input_per_mtok=2.0, output_per_mtok=10.0,
                                              cached_input_per_mtok=0.2, cache_write_per_mtok=2.5),
    ("anthropic", "claude-sonnet-4-6"): Pricing(input_per_mtok=3.0, output_per_mtok=15.0,
                                                cached_input_per_mtok=0.3, cache_write_per_mtok=3.75),
    ("anthropic", "claude-sonnet-4-5"): Pricing(input_per_mtok=3.0, output_per_mtok=15.0,
                                                cached_input_per_mtok=0.3, cache_write_per_mtok=3.75),
    ("anthropic", "claude-sonnet-4-5-20250929"): Pricing(input_per_mtok=3.0, output_per_mtok=15.0,
                                                         cached_input_per_mtok=0.3, cache_write_per_mtok=3.75),
    ("anthropic", "claude-haiku-5-5"): Pricing(input_per_mtok=0.1, output_per_mtok=0.5,
                                               cached_input_per_mtok=0.01, cache_write_per_mtok=0.125),
    ("anthropic", "claude-haiku-4-5"): Pricing(input_per_mtok=1.0, output_per_mtok=5.0,
                                               cached_input_per_mtok=0.1, cache_write_per_mtok=1.25),
    ("anthropic", "claude-haiku-4-5-20251001"): Pricing(input_per_mtok=1.0, output_per_mtok=5.0,
                                                        cached_input_per_mtok=0.1, cache_write_per_mtok=1.25),
    # Gemini Developer API standard (paid tier) prices: input, output, cached reads (implicit and explicit
    # caching). Pro models double above 200k prompt tokens, which a flat table cannot express; cache
    # storage is billed per hour, not per token written. gemini-3.8-flash is at its introductory rate
    # (through 2026-12-31; then 1.50 / 7.50 / 0.15).
    ("gemini", "gemini-3.8-flash"): Pricing(input_per_mtok=0.75, output_per_mtok=3.75, cached_input_per_mtok=0.075),
    ("gemini", "gemini-3.7-flash"): Pricing(input_per_mtok=1.5, output_per_mtok=7.5, cached_input_per_mtok=0.15),
    ("gemini", "gemini-3.5-flash"): Pricing(input_per_mtok=1.5, output_per_mtok=9.0, cached_input_per_mtok=0.15),
    ("gemini", "gemini-3.1-pro-preview"): Pricing(input_per_mtok=2.0, output_per_mtok=12.0, cached_input_per_mtok=0.2),
    ("gemini", "gemini-3.1-flash-lite"): Pricing(input_per_mtok=0.25, output_per_mtok=1.5, cached_input_per_mtok=0.025),
    ("gemini", "gemini-3-pro-preview"): Pricing(input_per_mtok=2.0, output_per_mtok=12.0, cached_input_per_mtok=0.2),
    ("gemini", "gemini-3-flash-preview"): Pricing(input_per_mtok=0.5, output_per_mtok=3.0, cached_input_per_mtok=0.05),
    ("gemini", "gemini-2.5-pro"): Pricing(input_per_mtok=1.25, output_per_mtok=10.0, cached_input_per_mtok=0.125),
    ("gemini", "gemini-2.5-flash"): Pricing(input_per_mtok=0.3, output_per_mtok=2.5, cached_input_per_mtok=0.03),
    ("gemini", "gemini-2.5-flash-lite"): Pricing(input_per_mtok=0.1, output_per_mtok=0.4, cached_input_per_mtok=0.01),
    ("gemini", "gemini-2.0-flash"): Pricing(input_per_mtok=0.1, output_per_mtok=0.4, cached_input_per_mtok=0.025),
    # Embedding models: input tokens only.
    ("openai", "text-embedding-3-small"): Pricing(input_per_mtok=0.02),
    ("openai", "text-embedding-3-large"): Pricing(input_per_mtok=0.13),
    ("openai", "text-embedding-ada-002"): Pricing(input_per_mtok=0.1),
    ("gemini", "gemini-embedding-001"): Pricing(input_per_mtok=0.15),
}


def price_for(provider_type: str, model: str, override: Pricing | None) -> Pricing | None:
    if override is not None:
        return override
    return PRICES.get((provider_type, model))


def cost_usd(pricing: Pricing | None, usage: pb.Usage) -> float:
    """Cost of one attempt from the upstream's reported usage.

    ``prompt_tokens`` includes cached reads and cache writes (OpenAI
    convention; translators normalise to it), so those are billed at their
    own rates and the remainder at the input rate. Reasoning tokens are part
    of ``completion_tokens`` and billed at the output rate unless priced apart.
    """
    if pricing is None:
        return 0.0
    cached = usage.cached_tokens
    written = usage.cache_write_tokens
    fresh = max(usage.prompt_tokens - cached - written, 0)
    cached_rate = pricing.cached_input_per_mtok if pricing.cached_input_per_mtok is not None else pricing.input_per_mtok
    write_rate = pricing.cache_write_per_mtok if pricing.cache_write_per_mtok is not None else pricing.input_per_mtok
    output = usage.completion_tokens
    total = fresh * pricing.input_per_mtok + cached * cached_rate + written * write_rate
    if pricing.reasoning_per_mtok is not None:
        reasoning = min(usage.reasoning_tokens, output)
        total += reasoning * pricing.reasoning_per_mtok + (output - reasoning) * pricing.output_per_mtok
    else:
        total += output * pricing.output_per_mtok
    return total / 1_000_000
