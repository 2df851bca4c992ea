"""The budget ledger's operations as pure functions of (state, now): an
orphaned answer is charged exactly when its router never settled it, however
many other requests settled meanwhile; expired reservations count nowhere
and are forgotten after the grace."""

from __future__ import annotations

import pytest

from router.budgets import (
    ORPHAN_GRACE_S,
    RECENT_COMMITS,
    commit_op,
    orphan_op,
    renew_op,
    reserve_op,
    spent_of,
)
from router.ledger import Op, State

T0 = 1_800_000_000.0  # a fixed "now" (unix seconds)
TTL = 30.0


def apply(state: State, op: Op, now: float = T0) -> tuple[State, object]:
    return op(state, now)


def reserved(state: State, rid: str, amount: float = 1.0, now: float = T0) -> State:
    state, result = apply(state, reserve_op(rid, amount, 1000.0, TTL, "daily"), now)
    assert result.admitted  # type: ignore[attr-defined]
    return state


def test_an_orphan_is_charged_once_while_its_reservation_is_there() -> None:
    state = reserved(None, "dead")
    state, charged = apply(state, orphan_op("dead", 2.5, "daily"), T0 + 5)
    assert charged and spent_of(state, "daily", 0, T0 + 5) == (pytest.approx(2.5), 0)
    again, charged = apply(state, orphan_op("dead", 2.5, "daily"), T0 + 6)
    assert not charged and again is state  # a retried call


def test_an_orphan_its_router_settled_is_not_charged_even_past_the_recent_commits() -> None:
    state = reserved(None, "settled")
    state, _ = apply(state, commit_op("settled", 4.0, "daily"))
    for n in range(RECENT_COMMITS + 50):  # the settled id has left the recent-commit list
        state = reserved(state, f"other-{n}")
        state, _ = apply(state, commit_op(f"other-{n}", 0.01, "daily"))
    assert "settled" not in state["c"]  # type: ignore[index]
    before = spent_of(state, "daily", 0, T0)
    state2, charged = apply(state, orphan_op("settled", 4.0, "daily"), T0 + 1)
    assert not charged and state2 is state and spent_of(state2, "daily", 0, T0 + 1) == before


def test_an_expired_reservation_counts_nowhere_but_still_proves_an_orphan() -> None:
    state = reserved(reserved(None, "dead", 600.0), "alive", 1.0)
    state, _ = apply(state, renew_op(frozenset({"alive"}), TTL, "daily"), T0 + TTL - 1)  # only "alive" renews
    later = T0 + TTL + 1  # the dead router's reservation has expired
    assert spent_of(state, "daily", 0, later) == (0, 1.0)  # the expired 600 no longer holds budget
    state, result = apply(state, reserve_op("new", 900.0, 1000.0, TTL, "daily"), later)
    assert result.admitted  # type: ignore[attr-defined]
    state, charged = apply(state, orphan_op("dead", 3.0, "daily"), later + 1)
    assert charged and spent_of(state, "daily", 0, later + 1) == (pytest.approx(3.0), 901.0)


def test_expired_reservations_are_forgotten_after_the_grace() -> None:
    state = reserved(None, "dead")
    gone = T0 + TTL + ORPHAN_GRACE_S + 1
    state, _ = apply(reserved(state, "next", now=gone), renew_op(frozenset({"next"}), TTL, "daily"), gone)
    assert set(state["r"]) == {"next"}  # type: ignore[index]
    state2, charged = apply(state, orphan_op("dead", 3.0, "daily"), gone)
    assert not charged and state2 is state


def test_a_commit_after_the_reservation_expired_still_bills_and_ends_the_orphan() -> None:
    state = reserved(None, "slow")
    late = T0 + TTL + 5  # the router was cut off from NATS past its reservation's TTL, then settled
    state, _ = apply(state, commit_op("slow", 2.0, "daily"), late)
    state2, charged = apply(state, orphan_op("slow", 2.0, "daily"), late + 1)
    assert not charged and spent_of(state2, "daily", 0, late + 1) == (pytest.approx(2.0), 0)
