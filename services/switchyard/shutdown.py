"""Bounds on a service's shutdown.

After SIGTERM a service drains for its grace period, then cleans up (flushes
usage, closes clients) within ``STOP_CLEANUP_S``. ``exit_if_stuck`` is the
backstop for what no asyncio timeout can catch: a hang inside gRPC's core or
a client library, or a blocked loop.
"""

from __future__ import annotations

import asyncio
import faulthandler
import signal

STOP_CANCEL_S = 5.0  # after the grace period: the gRPC server cancelling what is left
STOP_CLEANUP_S = 15.0  # the service's own clean-up
STOP_MARGIN_S = 5.0


def stop_signal() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT. Call it before the service says it
    is up, so that a signal sent right after that line still drains."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def exit_if_stuck(drain_s: float) -> None:
    """Call when shutdown begins, with the longest the drain may take: if the
    process is still alive ``STOP_CLEANUP_S + STOP_MARGIN_S`` after that, it
    ends with exit status 1 and every thread's stack on stderr, instead of
    lingering unseen. Never disarmed: a hang after the service's own
    "stopped" (interpreter exit waiting for a thread) is caught too."""
    faulthandler.dump_traceback_later(drain_s + STOP_CLEANUP_S + STOP_MARGIN_S, exit=True)
