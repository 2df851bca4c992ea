"""Budgets and concurrency caps as reservation ledgers: one ledger entry per
budget holding what was spent in the current period and the reservations of
requests in flight (each with an expiry, renewed while its router lives), so
a reservation whose router died is released within its TTL.

A request reserves its worst-case cost at admission; it is admitted only if
spent + live reservations + its reservation <= the budget, so concurrent
requests on any number of replicas cannot overspend. At the end the
reservation is replaced by the actual cost (``commit_op``), once: the last
committed request ids are kept, so a commit that is retried after an
ambiguous failure is not counted twice.

An expired reservation stays in the entry for ``ORPHAN_GRACE_S`` (counted
nowhere) so that ``orphan_op`` can tell a request whose router died (its
reservation is still there) from one its router settled (gone): the edge's
estimate for an answer whose router died mid-answer is charged exactly
when the router never settled it, however many other requests settled
meanwhile.

Periods: ``daily`` and ``monthly`` (calendar, UTC; the spent amount restarts
at a new period), ``rolling`` (the last ``window_s``, in 60 buckets), and
``none`` (concurrency caps: only reservations, each of 1)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from router.ledger import Op, State

MAX_RESERVATIONS = 4096     # requests in flight on one budget
RECENT_COMMITS = 128
ORPHAN_GRACE_S = 120.0      # an expired reservation is remembered (not counted) this long
BUCKETS = 60
EPSILON = 1e-9


@dataclass(slots=True)
class Reserved:
    admitted: bool
    amount: float = 0.0       # granted (an extension may grant less than asked, never less than needed)
    limit: float = 0.0
    used: float = 0.0         # spent + reserved by others, at the decision


def period_id(period: str, now: float) -> str:
    if period == "daily":
        return time.strftime("%Y-%m-%d", time.gmtime(now))
    if period == "monthly":
        return time.strftime("%Y-%m", time.gmtime(now))
    return ""


def _spent(state: State, period: str, window_s: int, now: float) -> tuple[float, dict[str, float]]:
    """Spent in the current period, and the rolling buckets still inside the window."""
    if not state:
        return 0.0, {}
    if period == "rolling":
        width = window_s / BUCKETS
        start = now - window_s
        buckets = {k: v for k, v in state.get("b", {}).items() if float(k) * width + width > start}
        return sum(buckets.values()), buckets
    if period == "none" or state.get("p") != period_id(period, now):
        return 0.0, {}
    return state.get("s", 0.0), {}


def _kept(state: State, now: float) -> dict[str, list[float]]:
    """The reservations to write back: live ones, and expired ones for ORPHAN_GRACE_S."""
    return {rid: [r[0], r[1]] for rid, r in (state or {}).get("r", {}).items() if r[1] + ORPHAN_GRACE_S > now}


def _live(reservations: dict[str, list[float]], now: float) -> dict[str, list[float]]:
    """The reservations that count (not expired); the lists are shared with ``reservations``."""
    return {rid: r for rid, r in reservations.items() if r[1] > now}


def _rebuild(state: State, period: str, now: float, spent: float, buckets: dict[str, float],
             reservations: dict[str, list[float]], committed: list[str] | None = None) -> dict:
    out: dict = {"r": reservations}
    if period == "rolling":
        out["b"] = buckets
    elif period != "none":
        out["p"], out["s"] = period_id(period, now), spent
    recent = committed if committed is not None else (state or {}).get("c", [])
    if recent:
        out["c"] = recent
    return out


def reserve_op(rid: str, amount: float, limit: float, ttl_s: float, period: str, window_s: int = 0,
               at_least: float | None = None) -> Op:
    """Reserve ``amount`` for ``rid`` (added to what it already holds). With
    ``at_least``, grant as much of ``amount`` as fits if that is at least
    ``at_least`` (a stream extending its reservation)."""

    def op(state: State, now: float) -> tuple[State, Reserved]:
        spent, buckets = _spent(state, period, window_s, now)
        kept = _kept(state, now)
        live = _live(kept, now)
        held = live.get(rid, [0.0, 0.0])[0]
        used = spent + sum(r[0] for r in live.values())
        free = limit - used
        grant = amount if amount <= free + EPSILON else (free if at_least is not None and free + EPSILON >= at_least
                                                          else -1.0)
        if grant < 0 or (rid not in live and len(live) >= MAX_RESERVATIONS):
            return state, Reserved(False, 0.0, limit, used)
        kept[rid] = [held + grant, now + ttl_s]
        return _rebuild(state, period, now, spent, buckets, kept), Reserved(True, grant, limit, used + grant)

    return op


def commit_op(rid: str, cost: float, period: str, window_s: int = 0) -> Op:
    """Replace ``rid``'s reservation by its actual ``cost`` (0 releases it)."""

    def op(state: State, now: float) -> tuple[State, None]:
        recent = (state or {}).get("c", [])
        kept = _kept(state, now)
        if rid in recent or (rid not in _live(kept, now) and cost <= 0):
            return state, None
        kept.pop(rid, None)
        return _charged(state, period, window_s, now, kept, recent, rid, cost), None

    return op


def orphan_op(rid: str, cost: float, period: str, window_s: int = 0) -> Op:
    """Charge ``cost`` for ``rid`` if its router never settled it: its
    reservation (live or expired within ORPHAN_GRACE_S) is still there. True
    when charged now."""

    def op(state: State, now: float) -> tuple[State, bool]:
        recent = (state or {}).get("c", [])
        kept = _kept(state, now)
        if rid not in kept or rid in recent or cost <= 0:
            return state, False
        kept.pop(rid)
        return _charged(state, period, window_s, now, kept, recent, rid, cost), True

    return op


def _charged(state: State, period: str, window_s: int, now: float, kept: dict[str, list[float]],
             recent: list[str], rid: str, cost: float) -> dict:
    """The entry with ``cost`` added to what was spent (``rid`` remembered as committed)."""
    spent, buckets = _spent(state, period, window_s, now)
    if cost > 0:
        if period == "rolling":
            key = str(int(now // (window_s / BUCKETS)))
            buckets[key] = buckets.get(key, 0.0) + cost
        spent += cost
        recent = [*recent[-(RECENT_COMMITS - 1):], rid]
    return _rebuild(state, period, now, spent, buckets, kept, recent)


def renew_op(rids: frozenset[str], ttl_s: float, period: str, window_s: int = 0) -> Op:
    """Push the expiry of live reservations held by requests still running."""

    def op(state: State, now: float) -> tuple[State, None]:
        kept = _kept(state, now)
        live = _live(kept, now)
        if not any(rid in live for rid in rids):
            return state, None
        for rid in rids:
            if rid in live:
                live[rid][1] = now + ttl_s  # the same list as in ``kept``
        spent, buckets = _spent(state, period, window_s, now)
        return _rebuild(state, period, now, spent, buckets, kept), None

    return op


def status_op(period: str, window_s: int = 0) -> Op:
    """Read-only: (spent, reserved) of the entry, read fresh from the store."""

    def op(state: State, now: float) -> tuple[State, tuple[float, float]]:
        return state, spent_of(state, period, window_s, now)

    return op


def spent_of(state: State, period: str, window_s: int, now: float) -> tuple[float, float]:
    """(spent, reserved) of a budget entry: for tests and the admin API."""
    spent, _ = _spent(state, period, window_s, now)
    return spent, sum(r[0] for r in _live(_kept(state, now), now).values())
