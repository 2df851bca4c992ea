"""Named conditions a process reports beside its overall health.

A condition is a part that can degrade without the process having to stop
serving (the usage spool cannot be written, say). ``serve()`` publishes each
one as its own gRPC health service name: the overall status (``""``, what
Envoy checks) stays SERVING, while ``Check(service="switchyard.usage")``
answers NOT_SERVING for as long as the usage publisher is degraded, so a
readiness probe or an operator can see it.
"""

from __future__ import annotations

from collections.abc import Callable

Watcher = Callable[["Condition"], None]


class Condition:
    def __init__(self, name: str) -> None:
        self.name = name
        self.degraded = False
        self.reason = ""
        self._watchers: list[Watcher] = []

    def set(self, degraded: bool, reason: str = "") -> None:
        """Record the state; watchers hear only about changes."""
        changed = degraded != self.degraded
        self.degraded, self.reason = degraded, reason if degraded else ""
        if changed:
            for watcher in list(self._watchers):
                watcher(self)

    def watch(self, watcher: Watcher) -> None:
        self._watchers.append(watcher)


_conditions: dict[str, Condition] = {}


def condition(name: str) -> Condition:
    """The process-wide condition called ``name`` (created on first use)."""
    return _conditions.setdefault(name, Condition(name))


def conditions() -> list[Condition]:
    return list(_conditions.values())
