"""When an attempt's first upstream request left, and how the upstream named
its answer, for the timing event the provider worker sends before an
attempt's first output (``server.py``).

The attempt code is a stack of generators (JSON-schema retries, n fan-out
in tasks); rather than thread a clock through each, the worker puts a fresh
``UpstreamClock`` in a context variable before it starts an attempt, and the
code that sends an upstream request notes the time on it. Tasks the attempt
starts copy the context, so they share the same clock object."""

from __future__ import annotations

import time
from contextvars import ContextVar


class UpstreamClock:
    __slots__ = ("model", "response_id", "sent_at")

    def __init__(self) -> None:
        self.sent_at = 0.0  # time.monotonic() of the first upstream request; 0 until then
        self.response_id = self.model = ""  # the upstream's id of its answer and the model that answered


CURRENT: ContextVar[UpstreamClock | None] = ContextVar("switchyard_upstream_clock", default=None)


def start() -> UpstreamClock:
    """A fresh clock for the attempt about to run in this context."""
    clock = UpstreamClock()
    CURRENT.set(clock)
    return clock


def note_sent() -> None:
    """An upstream request is about to be sent (only the attempt's first counts)."""
    clock = CURRENT.get()
    if clock is not None and not clock.sent_at:
        clock.sent_at = time.monotonic()


def note_answer(response_id: object, model: object) -> bool:
    """The upstream's id of its answer and the model (version) that answered,
    as its response or first event naming them states them; only the first
    that names either counts, and anything but a string is ignored. True once
    nothing more is to be noted (a stream stops asking)."""
    clock = CURRENT.get()
    if clock is None or clock.response_id or clock.model:
        return True
    if isinstance(response_id, str):
        clock.response_id = response_id[:256]
    if isinstance(model, str):
        clock.model = model[:256]
    return bool(clock.response_id or clock.model)
