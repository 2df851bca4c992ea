"""Circuit breaking per (provider, model), per router process.

A breaker opens after ``consecutive_failures`` retryable failures in a row,
or when at least ``min_requests`` attempts in the last ``window_s`` seconds
failed at ``failure_ratio`` or more. While open, the target is skipped (and
the skip recorded in the decision trace) instead of waiting for another
timeout. After ``cooldown_s`` one probe is let through (half-open): success
closes the breaker, failure opens it for another cool-down.

State is per process: each router replica learns on its own, which costs at
most ``consecutive_failures`` failed attempts per replica.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from switchyard.config import BreakerSettings, Config

log = logging.getLogger(__name__)
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
BUCKETS = 10  # the failure-ratio window is counted in this many slices: constant memory at any rate


@dataclass(slots=True)
class Breaker:
    settings: BreakerSettings
    name: str = ""
    clock: Callable[[], float] = time.monotonic
    state: str = CLOSED
    consecutive: int = 0
    opened_at: float = 0.0
    probing: bool = False
    # per window slice: [slice number, attempts, failures]
    buckets: list[list[int]] = field(default_factory=lambda: [[-1, 0, 0] for _ in range(BUCKETS)])

    def allow(self) -> bool:
        """Whether an attempt may go to this target now. In half-open state
        only one probe is out at a time."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self.clock() - self.opened_at < self.settings.cooldown_s:
                return False
            self.state = HALF_OPEN
            self.probing = False
        if self.probing:
            return False
        self.probing = True
        return True

    def retry_after_s(self) -> float:
        return max(self.settings.cooldown_s - (self.clock() - self.opened_at), 0.0)

    def success(self) -> None:
        if self.state != CLOSED:
            log.info("circuit breaker %s closed", self.name)
        self.consecutive = 0
        self.probing = False
        self._note(False)
        self.state = CLOSED

    def failure(self) -> None:
        self.consecutive += 1
        self.probing = False
        self._note(True)
        if self.state == HALF_OPEN or self.consecutive >= self.settings.consecutive_failures or self._ratio_tripped():
            if self.state != OPEN:
                log.warning("circuit breaker %s opened after %d consecutive failures", self.name, self.consecutive)
            self.state = OPEN
            self.opened_at = self.clock()

    def release(self) -> None:
        """An attempt allowed through ended with no verdict (cancelled, or a
        client error that says nothing about the upstream's health)."""
        self.probing = False

    def _slice(self) -> int:
        return int(self.clock() * BUCKETS / self.settings.window_s)

    def _note(self, failed: bool) -> None:
        number = self._slice()
        bucket = self.buckets[number % BUCKETS]
        if bucket[0] != number:
            bucket[:] = [number, 0, 0]
        bucket[1] += 1
        bucket[2] += failed

    def _ratio_tripped(self) -> bool:
        oldest = self._slice() - BUCKETS + 1
        total = failed = 0
        for number, attempts, failures in self.buckets:
            if number >= oldest:
                total += attempts
                failed += failures
        return total >= self.settings.min_requests and failed / total >= self.settings.failure_ratio


class BreakerBoard:
    """The breakers of one router process, created on first use. A provider
    may override the default settings."""

    def __init__(self, settings: BreakerSettings, overrides: Mapping[str, BreakerSettings] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.overrides = dict(overrides or {})
        self.clock = clock
        self._breakers: dict[tuple[str, str], Breaker] = {}

    def reconfigure(self, settings: BreakerSettings, overrides: Mapping[str, BreakerSettings]) -> None:
        """New settings (a config reload): breakers start over if they changed."""
        if settings != self.settings or dict(overrides) != self.overrides:
            self.settings = settings
            self.overrides = dict(overrides)
            self._breakers.clear()

    def get(self, provider: str, model: str) -> Breaker | None:
        key = (provider, model)
        breaker = self._breakers.get(key)
        if breaker is None:
            settings = self.overrides.get(provider, self.settings)
            if not settings.enabled:
                return None
            breaker = self._breakers[key] = Breaker(settings, f"{provider}/{model}", self.clock)
        return breaker

    def states(self) -> dict[tuple[str, str], str]:
        return {key: b.state for key, b in self._breakers.items()}


def breaker_settings(config: Config) -> tuple[BreakerSettings, dict[str, BreakerSettings]]:
    """The default settings and the per-provider overrides of a config."""
    return config.breaker, {name: spec.breaker for name, spec in config.providers.items() if spec.breaker}
