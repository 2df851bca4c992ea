"""Restarts the mesh's children when they die, with back-off, and gives up
only when one keeps dying.

Every restart happens on the supervisor's own thread, which lives as long
as the mesh: a child is tied to the thread that started it (it gets SIGTERM
when that thread ends, so nothing outlives the launcher).
"""

from __future__ import annotations

import heapq
import itertools
import queue
import subprocess
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from deploy.local.process import Process, describe_exit


@dataclass(frozen=True)
class RestartPolicy:
    initial_backoff_s: float = 0.25  # doubled for each exit still inside the window
    max_backoff_s: float = 8.0
    max_restarts: int = 5  # restarts of one service inside window_s; its next exit stops the mesh
    window_s: float = 60.0

    def next_delay(self, exits: deque[float], now: float) -> float | None:
        """Record an exit at ``now``; the back-off before restarting, or None to give up."""
        exits.append(now)
        while exits and exits[0] < now - self.window_s:
            exits.popleft()
        if len(exits) > self.max_restarts:
            return None
        return min(self.initial_backoff_s * 2 ** (len(exits) - 1), self.max_backoff_s)


_STOP = object()


class Supervisor:
    def __init__(self, policy: RestartPolicy, say: Callable[[str], None], give_up: Callable[[str], None]) -> None:
        self.policy = policy
        self._say = say
        self._give_up = give_up
        self._events: queue.Queue[object] = queue.Queue()
        self._exits: dict[str, deque[float]] = {}
        self._due: list[tuple[float, int, Process]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._paused = False
        self.restarts: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self, process: Process, popen: subprocess.Popen[bytes], code: int) -> None:
        """``Process.on_exit``: called from the child's output thread."""
        self._events.put((process, code))

    def pause(self) -> None:
        """No more restarts (the mesh is stopping); the thread stays up so
        that children it started are stopped in order, not all at once."""
        with self._lock:
            self._paused = True

    def stop(self) -> None:
        self.pause()
        self._events.put(_STOP)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            timeout = max(0.0, self._due[0][0] - time.monotonic()) if self._due else None
            try:
                item = self._events.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            if item is not None:
                process, code = item  # type: ignore[misc]
                self._on_exit(process, code)
            while self._due and self._due[0][0] <= time.monotonic():
                _, _, process = heapq.heappop(self._due)
                self._restart(process)

    def _on_exit(self, process: Process, code: int) -> None:
        with self._lock:
            if self._paused or not process.wanted:
                return
        exits = self._exits.setdefault(process.name, deque())
        delay = self.policy.next_delay(exits, time.monotonic())
        if delay is None:
            self._give_up(f"{process.name} {describe_exit(code)}; it died {len(exits)} times in "
                          f"{self.policy.window_s:g} s, giving up and stopping the mesh (see {process.log_path})")
            return
        self._say(f"{process.name} {describe_exit(code)}; restarting in {delay:g} s "
                  f"(exit {len(exits)} of {self.policy.max_restarts} allowed in {self.policy.window_s:g} s)")
        heapq.heappush(self._due, (time.monotonic() + delay, next(self._order), process))

    def _restart(self, process: Process) -> None:
        with self._lock:
            if self._paused or not process.wanted or process.alive():
                return  # stopped on purpose meanwhile, or already started again by someone
            try:
                process.start()
            except RuntimeError:  # started again by someone else meanwhile
                return
            except OSError as exc:  # e.g. the binary is gone: counts as one more failure
                self._say(f"{process.name} could not be restarted: {exc}")
                self._events.put((process, 1))
                return
            self.restarts[process.name] += 1
        self._say(f"{process.name} restarted (pid {process.pid})")
