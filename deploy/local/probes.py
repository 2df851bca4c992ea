"""Small checks the launcher and the tests poll: ports, HTTP, gRPC health."""

from __future__ import annotations

import random
import shutil
import socket
import sys
import threading
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_EPHEMERAL = _ephemeral_range()
_FREE_RANGE = (10000, _EPHEMERAL[0] - 1) if _EPHEMERAL[0] > 12000 else (_EPHEMERAL[1] + 1, 65535)


_RECENT_MAX = 4096  # ports this process handed out lately, not handed out again
_recent: deque[int] = deque()
_recent_set: set[int] = set()
_recent_lock = threading.Lock()


def free_port() -> int:
    """A port nothing listens on, for a process started next to bind.

    Taken outside the kernel's ephemeral range: a port the kernel handed out
    (bind to 0) and we released can be given again, before our process binds
    it, as the source port of any outgoing connection on this machine, which
    then makes the bind fail. Ports outside the range are never handed out
    that way. Nor is a port this process handed out lately (a mesh asks for
    dozens before its services bind them: two random picks of the same port
    would otherwise race); only another process picking the same random port
    could."""
    with _recent_lock:
        for _ in range(200):
            port = random.randint(*_FREE_RANGE)
            if port in _recent_set or not _bindable(port):
                continue
            return _remember(port)
        with socket.socket() as sock:  # a crowded range: the kernel's choice
            sock.bind(("127.0.0.1", 0))
            return _remember(sock.getsockname()[1])


def _bindable(port: int) -> bool:
    """Whether a listener could bind the port now (nothing listening, no connection lingering on it)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _remember(port: int) -> int:
    _recent.append(port)
    _recent_set.add(port)
    if len(_recent) > _RECENT_MAX:
        _recent_set.discard(_recent.popleft())
    return port


def bin_path(name: str) -> str:
    """A console script from this interpreter's environment, else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: run `make setup`")
    return found


def tcp_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def grpc_status(target: str, service: str = "") -> int | None:
    """The gRPC health status of ``service`` at ``target`` (None: no answer)."""
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                               timeout=1)
            return reply.status
    except grpc.RpcError:
        return None


def grpc_serving(target: str, service: str = "") -> bool:
    return grpc_status(target, service) == health_pb2.HealthCheckResponse.SERVING
