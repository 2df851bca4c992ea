"""Rate limits: requests and tokens per minute as GCRA (generic cell rate
algorithm) windows, one ledger entry per scope holding the two theoretical
arrival times. A limit of N per minute admits a burst of N and then one every
60/N seconds: a sliding window, never the double admission a fixed window
allows at its boundary. Exact across replicas because every change is a
compare-and-set (``ledger.py``).

Tokens are reserved at admission as an estimate and reconciled at the end:
``adjust_op`` moves the token arrival time by the difference (unused tokens
come back, extra tokens are charged)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from router.ledger import Op, State

WINDOW_S = 60.0
EPSILON = 1e-6


@dataclass(slots=True)
class RateDecision:
    admitted: bool
    rpm: int = 0
    tpm: int = 0
    remaining_requests: int = 0
    remaining_tokens: int = 0
    reset_requests_s: float = 0.0
    reset_tokens_s: float = 0.0
    retry_after_s: float = 0.0
    too_large: bool = False  # the request alone needs more tokens than the limit allows in a minute


def admit_op(rpm: int, tpm: int, tokens: int) -> Op:
    """One request of ``tokens`` estimated tokens, if it fits both windows."""

    def op(state: State, now: float) -> tuple[State, RateDecision]:
        r = state.get("r", 0.0) if state else 0.0
        t = state.get("t", 0.0) if state else 0.0
        decision = RateDecision(True, rpm, tpm)
        new_r, new_t = r, t
        if rpm:
            new_r = max(r, now) + WINDOW_S / rpm
            if new_r - now > WINDOW_S + EPSILON:
                decision.admitted = False
                decision.retry_after_s = new_r - now - WINDOW_S
        if tpm:
            if tokens > tpm:
                decision.admitted, decision.too_large = False, True
            new_t = max(t, now) + tokens * WINDOW_S / tpm
            if new_t - now > WINDOW_S + EPSILON:
                decision.admitted = False
                decision.retry_after_s = max(decision.retry_after_s, new_t - now - WINDOW_S)
        if not decision.admitted:
            new_r, new_t = r, t
        _report(decision, new_r, new_t, now)
        if not decision.admitted:
            return state, decision
        return {"r": new_r, "t": new_t}, decision

    return op


def adjust_op(rpm: int, tpm: int, requests: int, tokens: int) -> Op:
    """Give back ``requests`` (a request admitted here but refused by another
    limit) and ``tokens`` (negative: charge more than was reserved)."""

    def op(state: State, now: float) -> tuple[State, None]:
        if state is None or (not requests and not tokens):
            return state, None
        r, t = state.get("r", 0.0), state.get("t", 0.0)
        if rpm and requests:
            r = max(r - requests * WINDOW_S / rpm, min(r, now))
        if tpm and tokens:
            moved = t - tokens * WINDOW_S / tpm
            t = moved if tokens < 0 else max(moved, min(t, now))
        return {"r": r, "t": t}, None

    return op


def _report(decision: RateDecision, r: float, t: float, now: float) -> None:
    if decision.rpm:
        used = max(r - now, 0.0)
        decision.remaining_requests = max(int((WINDOW_S - used) * decision.rpm / WINDOW_S + EPSILON), 0)
        decision.reset_requests_s = used
    if decision.tpm:
        used = max(t - now, 0.0)
        decision.remaining_tokens = max(int((WINDOW_S - used) * decision.tpm / WINDOW_S + EPSILON), 0)
        decision.reset_tokens_s = used


def headers(decision: RateDecision) -> dict[str, str]:
    """OpenAI's rate-limit headers (and ``retry-after`` when refused)."""
    out: dict[str, str] = {}
    if decision.rpm:
        out["x-ratelimit-limit-requests"] = str(decision.rpm)
        out["x-ratelimit-remaining-requests"] = str(decision.remaining_requests)
        out["x-ratelimit-reset-requests"] = go_duration(decision.reset_requests_s)
    if decision.tpm:
        out["x-ratelimit-limit-tokens"] = str(decision.tpm)
        out["x-ratelimit-remaining-tokens"] = str(decision.remaining_tokens)
        out["x-ratelimit-reset-tokens"] = go_duration(decision.reset_tokens_s)
    if not decision.admitted and not decision.too_large:
        out["retry-after"] = str(max(1, math.ceil(decision.retry_after_s)))
        out["retry-after-ms"] = str(max(1, math.ceil(decision.retry_after_s * 1000)))
    return out


def go_duration(seconds: float) -> str:
    """A duration the way OpenAI's headers write it: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(round(seconds * 1000), 0)}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest):d}s"
