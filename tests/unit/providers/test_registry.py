from __future__ import annotations

from providers.registry import ProviderRegistry
from switchyard.config import parse_config
from switchyard.v1 import provider_pb2 as ppb

CONFIG = parse_config("""
providers:
  up:
    type: openai
    base_url: http://127.0.0.1:1/v1
    timeouts: {first_token_s: 30, between_chunks_s: 20, total_s: 300}
    models: [m1, {id: slow, timeouts: {first_token_s: 200}}]
""")


async def test_route_target_timeouts_override_only_what_they_set() -> None:
    registry = ProviderRegistry(CONFIG)
    try:
        plain = registry.attempt_spec("up", "m1")
        assert (plain.timeouts.first_token_s, plain.timeouts.total_s) == (30, 300)
        overridden = registry.attempt_spec("up", "m1", ppb.AttemptTimeouts(first_token_s=2.5))
        assert (overridden.timeouts.first_token_s, overridden.timeouts.between_chunks_s) == (2.5, 20)
        assert registry.attempt_spec("up", "slow", ppb.AttemptTimeouts()).timeouts.first_token_s == 200
    finally:
        await registry.close()
