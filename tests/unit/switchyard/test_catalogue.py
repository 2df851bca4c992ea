"""The model catalogue: data that parses, covers every model the shipped
config serves, and prices usage per token class."""

from __future__ import annotations

import pytest

from deploy.local.mesh import DEFAULT_CONFIG
from switchyard.catalogue import CatalogueError, catalogue, cost_usd, facts, parse_catalogue, price_for
from switchyard.config import Pricing, load_config
from switchyard.v1 import chat_pb2 as pb


def test_every_model_in_the_shipped_config_has_a_price_and_an_output_limit() -> None:
    config = load_config(DEFAULT_CONFIG)
    missing = []
    for name, provider in config.providers.items():
        for model in provider.models:
            if price_for(provider.type, model.id, model.pricing) is None:
                missing.append(f"{name}/{model.id}")
            found = facts(provider.type, model.id)
            if found is not None and found.kind == "embedding":
                continue  # writes no tokens
            assert model.max_output_tokens or (found and found.max_output), f"{name}/{model.id}: no output limit"
    assert not missing, f"models without a price: {missing}"
    # The model that answered with x-switchyard-cost-usd: 0.000000 before the catalogue.
    opus = price_for("anthropic", "claude-opus-4-1", None)
    assert opus is not None and (opus.input_per_mtok, opus.output_per_mtok) == (15, 75)


def test_dated_snapshots_share_their_model_and_every_entry_is_complete() -> None:
    table = catalogue()
    assert table[("anthropic", "claude-haiku-4-5-20251001")] == table[("anthropic", "claude-haiku-4-5")]
    for (provider_type, model), entry in table.items():
        assert provider_type in {"openai", "anthropic", "gemini"}
        if entry.kind == "embedding":
            assert entry.pricing.output_per_mtok == 0 < entry.pricing.input_per_mtok, model
            continue
        assert entry.pricing.output_per_mtok >= entry.pricing.input_per_mtok > 0, model
        cached = entry.pricing.cached_input_per_mtok
        assert cached is None or cached < entry.pricing.input_per_mtok, model


def test_config_pricing_overrides_the_catalogue() -> None:
    mine = Pricing(input_per_mtok=1, output_per_mtok=2)
    assert price_for("openai", "gpt-4o", mine) is mine
    assert price_for("openai_compat", "llama", None) is None


def test_cost_per_token_class() -> None:
    pricing = Pricing(input_per_mtok=3, output_per_mtok=15, cached_input_per_mtok=0.3, cache_write_per_mtok=3.75)
    usage = pb.Usage(prompt_tokens=1000, cached_tokens=200, cache_write_tokens=300, completion_tokens=100)
    assert cost_usd(pricing, usage) == pytest.approx((500 * 3 + 200 * 0.3 + 300 * 3.75 + 100 * 15) / 1e6)
    assert cost_usd(None, usage) == 0.0


@pytest.mark.parametrize(("text", "message"), [
    ("models: {openai: {m: {input: 1}}}", "input and output prices are required"),
    ("models: {openai: {m: {input: 1, output: 2, colour: red}}}", "unknown fields"),
    ("models: {openai: {m: {input: 1, output: 2, thinking: deep}}}", "thinking must be one of"),
    ("models: {openai: {m: {same_as: n}}}", "same_as 'n' is not in the catalogue"),
    ("models: {openai: {m: {input: -1, output: 2}}}", "models.openai.m"),
])
def test_a_malformed_entry_is_named(text: str, message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        parse_catalogue(text)
