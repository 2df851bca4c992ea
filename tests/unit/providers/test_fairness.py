"""Per-key shares of a provider's connection pool: caps, fair hand-over,
bounded lines, cancellation, and the configured share. (The attempt runner's
errors for a key over its share are in test_attempt.py.)"""

from __future__ import annotations

import asyncio

import pytest

from providers.fairness import KeyBusyError, KeyGate
from providers.registry import ProviderRegistry
from switchyard.config import Config


async def settle() -> None:
    """Let every ready task run (futures resolve on the next loop passes)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_key_holds_at_most_its_share_others_get_the_rest() -> None:
    gate = KeyGate(total=4, per_key=2, max_waiting=4)
    await gate.acquire("flood")
    await gate.acquire("flood")
    third = asyncio.create_task(gate.acquire("flood"))
    await settle()
    assert not third.done() and gate.held("flood") == 2
    await gate.acquire("victim")  # immediate: the pool has room and victim holds none
    assert gate.used == 3
    gate.release("flood")
    await asyncio.wait_for(third, 1)
    assert gate.held("flood") == 2


async def test_a_freed_slot_goes_to_the_key_holding_fewest() -> None:
    gate = KeyGate(total=2, per_key=2, max_waiting=8)
    await gate.acquire("flood")
    await gate.acquire("flood")
    flood_waiting = asyncio.create_task(gate.acquire("flood"))
    await settle()
    victim_waiting = asyncio.create_task(gate.acquire("victim"))  # arrives later, holds nothing
    await settle()
    gate.release("flood")
    await settle()
    assert victim_waiting.done() and not flood_waiting.done()
    gate.release("flood")
    await asyncio.wait_for(flood_waiting, 1)
    assert (gate.held("victim"), gate.held("flood"), gate.used) == (1, 1, 2)


async def test_a_full_line_is_refused_at_once() -> None:
    gate = KeyGate(total=2, per_key=1, max_waiting=2)
    await gate.acquire("k")
    waiting = [asyncio.create_task(gate.acquire("k")) for _ in range(2)]
    await settle()
    with pytest.raises(KeyBusyError):
        await gate.acquire("k")
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert gate.used == 1


async def test_cancelled_waiters_leave_the_line_and_granted_ones_pass_it_on() -> None:
    gate = KeyGate(total=1, per_key=1, max_waiting=4)
    await gate.acquire("a")
    gone = asyncio.create_task(gate.acquire("b"))
    later = asyncio.create_task(gate.acquire("c"))
    await settle()
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    gate.release("a")
    await asyncio.wait_for(later, 1)
    assert (gate.held("b"), gate.held("c"), gate.used) == (0, 1, 1)

    # Granted, then cancelled before it ran: the slot moves on, none leaks.
    granted = asyncio.create_task(gate.acquire("d"))
    after = asyncio.create_task(gate.acquire("e"))
    await settle()
    gate.release("c")
    granted.cancel()
    await asyncio.gather(granted, return_exceptions=True)
    await asyncio.wait_for(after, 1)
    assert (gate.held("d"), gate.held("e"), gate.used) == (0, 1, 1)


async def test_registry_share_default_and_configured() -> None:
    config = Config.model_validate({"providers": {
        "a": {"type": "openai", "base_url": "http://127.0.0.1:1", "max_connections": 10},
        "b": {"type": "openai", "base_url": "http://127.0.0.1:1", "max_connections": 10,
              "max_connections_per_key": 3}}})
    registry = ProviderRegistry(config)
    try:
        gates = [registry.attempt_spec(name, "m").gate for name in ("a", "b")]
        assert [(g.total, g.per_key, g.max_waiting) for g in gates] == [(10, 5, 4096), (10, 3, 4096)]
    finally:
        await registry.close()
