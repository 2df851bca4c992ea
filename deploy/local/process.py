"""One child process of the local mesh: started, logged, stopped, restarted."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1
# Children create files and sockets that only this Unix user can use.
CHILD_UMASK = 0o077


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the thread that started
    it dies, so a killed test run or `make run` never leaves orphans behind.
    (The signal follows the *thread*: start children from long-lived ones.)"""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


ExitHandler = Callable[["Process", "subprocess.Popen[bytes]", int], None]


@dataclass
class Process:
    """A child whose output goes to a log file and optionally to a line sink
    with a name prefix. ``on_exit`` hears about every exit the launcher did
    not ask for (from the thread that copied the child's output)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    sink: Callable[[str], None] | None = None
    sockets: tuple[Path, ...] = ()  # Unix sockets it binds: stale files are removed before each start
    on_exit: ExitHandler | None = None
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    wanted: bool = False  # False once the launcher stopped it on purpose
    _pump: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        if self.alive():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        for sock in self.sockets:
            sock.unlink(missing_ok=True)
        self.wanted = True
        popen = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True, umask=CHILD_UMASK,
                                 preexec_fn=_die_with_parent)
        self.popen, self.started_at = popen, time.monotonic()
        self._pump = threading.Thread(target=self._copy_output, args=(popen,), name=f"log-{self.name}",
                                      daemon=True)
        self._pump.start()

    def _copy_output(self, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None
        with open(self.log_path, "ab") as log:
            for line in popen.stdout:
                log.write(line)
                log.flush()
                if self.sink is not None:
                    self.sink(f"{self.name:>11} | {line.decode(errors='replace').rstrip()}")
        code = popen.wait()
        if self.wanted and popen is self.popen and self.on_exit is not None:
            self.on_exit(self, popen, code)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.popen
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, and not restarted until ``start`` (a fault test keeping a node down)."""
        self.wanted = False
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)

    def stop(self, grace: float) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; not restarted."""
        self.wanted = False
        if self.popen is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(timeout=5)
        if self._pump is not None and self._pump is not threading.current_thread():
            self._pump.join(timeout=2)
        return self.popen.returncode


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exited with code {code}"
