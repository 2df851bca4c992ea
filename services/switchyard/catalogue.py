"""Model facts as data: prices per token class, context and output limits,
thinking mode, from ``models.yaml`` shipped beside this module (its header
names the vendor pages and the date they were checked). A model's
``pricing`` and ``max_output_tokens`` in the config file override it.

Shared by the provider workers (the cost of an attempt) and the router (the
worst-case cost and tokens that budgets and rate limits reserve, and the cost
of usage it has to estimate)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from switchyard.config import Pricing
from switchyard.v1 import chat_pb2 as pb

THINKING_MODES = frozenset({"none", "effort", "budget", "level"})


@dataclass(frozen=True, slots=True)
class ModelFacts:
    pricing: Pricing
    context: int | None = None      # tokens the model reads at most
    max_output: int | None = None   # tokens it writes at most per answer
    thinking: str = "none"
    kind: str = "chat"              # chat | embedding (input tokens only, no output)


class CatalogueError(ValueError):
    """models.yaml is malformed; the message names the entry."""


def parse_catalogue(text: str) -> dict[tuple[str, str], ModelFacts]:
    data = yaml.safe_load(text)
    out: dict[tuple[str, str], ModelFacts] = {}
    aliases: list[tuple[str, str, str]] = []
    for provider_type, models in (data.get("models") or {}).items():
        for model, entry in models.items():
            where = f"models.{provider_type}.{model}"
            if "same_as" in entry:
                aliases.append((provider_type, model, entry["same_as"]))
                continue
            out[(provider_type, model)] = _facts(entry, where)
    for provider_type, model, target in aliases:
        if (provider_type, target) not in out:
            raise CatalogueError(f"models.{provider_type}.{model}: same_as {target!r} is not in the catalogue")
        out[(provider_type, model)] = out[(provider_type, target)]
    return out


def _facts(entry: dict[str, Any], where: str) -> ModelFacts:
    unknown = set(entry) - {"input", "cached_input", "cache_write", "output", "reasoning", "context", "max_output",
                            "thinking", "kind"}
    if unknown:
        raise CatalogueError(f"{where}: unknown fields {sorted(unknown)}")
    kind = entry.get("kind", "chat")
    if kind not in ("chat", "embedding"):
        raise CatalogueError(f"{where}: kind must be chat or embedding")
    if kind == "embedding":
        entry = {"output": 0, **entry}
    if "input" not in entry or "output" not in entry:
        raise CatalogueError(f"{where}: input and output prices are required")
    thinking = entry.get("thinking", "none")
    if thinking not in THINKING_MODES:
        raise CatalogueError(f"{where}: thinking must be one of {sorted(THINKING_MODES)}")
    try:
        pricing = Pricing(input_per_mtok=entry["input"], output_per_mtok=entry["output"],
                          cached_input_per_mtok=entry.get("cached_input"),
                          cache_write_per_mtok=entry.get("cache_write"), reasoning_per_mtok=entry.get("reasoning"))
    except ValueError as exc:
        raise CatalogueError(f"{where}: {exc}") from None
    return ModelFacts(pricing, entry.get("context"), entry.get("max_output"), thinking, kind)


@lru_cache(maxsize=1)
def catalogue() -> dict[tuple[str, str], ModelFacts]:
    """The shipped catalogue (read once per process, as package data)."""
    return parse_catalogue(resources.files("switchyard").joinpath("models.yaml").read_text())


def facts(provider_type: str, model: str) -> ModelFacts | None:
    return catalogue().get((provider_type, model))


def price_for(provider_type: str, model: str, override: Pricing | None) -> Pricing | None:
    """The config's price for the model if it sets one, else the catalogue's."""
    if override is not None:
        return override
    found = catalogue().get((provider_type, model))
    return found.pricing if found is not None else None


def cost_usd(pricing: Pricing | None, usage: pb.Usage) -> float:
    """Cost of ``usage`` at ``pricing``.

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
