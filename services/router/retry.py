"""When to try the same target again, and how long to wait first."""

from __future__ import annotations

import random
from collections.abc import Callable

from switchyard.config import RetryPolicy

# An attempt needs at least this much of the deadline left to be worth starting.
MIN_ATTEMPT_S = 0.25


def backoff_s(policy: RetryPolicy, retry: int, retry_after_ms: int, remaining_s: float | None,
              rng: Callable[[], float] = random.random) -> float | None:
    """Seconds to wait before retry number ``retry`` (1-based), or None when
    the target should not be retried but failed over: the upstream asked for
    a longer wait than ``max_retry_after_s``, or the wait would leave too
    little of the request's deadline. Without a ``Retry-After``: exponential
    back-off with full jitter."""
    if retry_after_ms > 0:
        wait = retry_after_ms / 1000
        if wait > policy.max_retry_after_s:
            return None
    else:
        cap = min(policy.max_backoff_s, policy.initial_backoff_s * 2 ** (retry - 1))
        wait = rng() * cap
    if remaining_s is not None and wait + MIN_ATTEMPT_S > remaining_s:
        return None
    return wait
