"""Maps a provider's config ``type`` to its translator, and holds one
translator and one pooled HTTP session per configured provider."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from providers.anthropic import AnthropicTranslator
from providers.attempt import AttemptSpec
from providers.base import Translator
from providers.fairness import KeyGate
from providers.gemini import GeminiTranslator
from providers.openai import OpenAITranslator
from providers.openai_compat import OpenAICompatTranslator
from providers.upstream import new_session
from switchyard.catalogue import price_for
from switchyard.config import Config, ProviderSpec
from switchyard.v1 import provider_pb2 as ppb

TRANSLATORS: dict[str, type[Translator]] = {
    cls.type: cls for cls in (OpenAITranslator, OpenAICompatTranslator, AnthropicTranslator, GeminiTranslator)
}


@dataclass(slots=True)
class _Provider:
    spec: ProviderSpec
    translator: Translator
    session: aiohttp.ClientSession
    gate: KeyGate


# Requests one key may have waiting for its share of a provider's pool: as
# many as one edge process admits at once, so a burst the edge accepted is
# queued here, not refused (a waiter costs a future; the wait is bounded by
# the attempt's time-to-first-token timeout).
MAX_WAITING_PER_KEY = 4096


def new_gate(spec: ProviderSpec) -> KeyGate:
    """The provider's pool shared by keys: each key may hold its configured share."""
    per_key = spec.max_connections_per_key or max(1, spec.max_connections // 2)
    return KeyGate(spec.max_connections, per_key, max_waiting=max(MAX_WAITING_PER_KEY, spec.max_connections))


class ProviderRegistry:
    """Translators and sessions for every provider in the config."""

    def __init__(self, config: Config) -> None:
        self._providers: dict[str, _Provider] = {}
        for name, spec in config.providers.items():
            translator = TRANSLATORS[spec.type](name, spec, spec.api_key())
            self._providers[name] = _Provider(spec, translator, new_session(spec), new_gate(spec))

    def attempt_spec(self, provider: str, model: str,
                     overrides: ppb.AttemptTimeouts | None = None) -> AttemptSpec | None:
        """How to run one attempt; ``overrides`` are a routing config target's timeouts."""
        entry = self._providers.get(provider)
        if entry is None:
            return None
        model_spec = entry.spec.model(model)
        timeouts = model_spec.timeouts if model_spec and model_spec.timeouts else entry.spec.timeouts
        if overrides is not None and overrides.ListFields():
            timeouts = timeouts.model_copy(update={f.name: value for f, value in overrides.ListFields()})
        pricing = price_for(entry.spec.type, model, model_spec.pricing if model_spec else None)
        return AttemptSpec(entry.translator, entry.session, model, timeouts, pricing, entry.gate)

    async def close(self) -> None:
        for entry in self._providers.values():
            await entry.session.close()
