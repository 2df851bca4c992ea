"""A usage spool that cannot be written (a full disk) while NATS is down:
the publisher survives, holds events in bounded memory, says so loudly and
in the router's readiness, and publishes everything once NATS is back;
spooling resumes once the disk has room again."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from openai import AsyncOpenAI

from deploy.local.mesh import SERVICES, Mesh, MeshSettings, isolated_environ
from deploy.local.probes import grpc_status
from switchyard.events import CONDITION, Spool, UsagePublisher
from tests.e2e.conftest import running_mesh, write_test_config
from tests.e2e.test_usage import usage_events
from tests.unit.switchyard.test_events import NatsServer, event, stored

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class SmallDisk:
    """A folder on a 64 KiB tmpfs that can be filled up and freed: writes
    then fail with the kernel's real ENOSPC. (Mounting needs root; without
    it the folder is made read-only instead, and writes fail with EACCES.)"""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.mounted = os.geteuid() == 0
        if self.mounted:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(path)], check=True)
        self.filler = path / "filler"

    def fill(self) -> None:
        if not self.mounted:
            self.path.chmod(0o500)
            return
        with open(self.filler, "ab", buffering=0) as filler:
            with contextlib.suppress(OSError):
                while True:
                    filler.write(bytes(4096))
        with pytest.raises(OSError) as info:
            Spool(self.path / "check").append([b"x"])
        assert info.value.errno == errno.ENOSPC

    def free(self) -> None:
        self.path.chmod(0o700)
        self.filler.unlink(missing_ok=True)

    def remove(self) -> None:
        self.free()
        if self.mounted:
            subprocess.run(["umount", str(self.path)], check=True)


@pytest.fixture
def small_disk() -> Iterator[SmallDisk]:
    disk = SmallDisk(Path(tempfile.mkdtemp(prefix="sy-disk-")))
    yield disk
    disk.remove()
    shutil.rmtree(disk.path, ignore_errors=True)


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer()
    yield server
    server.remove()


async def wait_until(predicate, within_s: float = 15) -> None:
    async with asyncio.timeout(within_s):
        while not predicate():
            await asyncio.sleep(0.02)


APPEND_UNDER_A_FILE_SIZE_LIMIT = """
import resource, signal, sys
from pathlib import Path
from switchyard.events import Spool
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    Spool(Path(sys.argv[1])).append([bytes(200_000)])
except OSError as exc:
    print(exc.errno)
"""


def test_a_failed_append_leaves_the_spool_as_it_was(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "router.usage")
    spool.append([event("kept").SerializeToString()])
    size = spool.path.stat().st_size
    # A write that stops half-way (here at a file size limit, as on a full disk).
    result = subprocess.run([sys.executable, "-c", APPEND_UNDER_A_FILE_SIZE_LIMIT, str(spool.path)],
                            capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(SERVICES)})
    assert result.stdout.strip() == str(errno.EFBIG), result.stderr
    assert spool.path.stat().st_size == size  # the partial record was rolled back
    spool.append([event("after").SerializeToString()])
    assert spool.read() == [event("kept").SerializeToString(), event("after").SerializeToString()]


async def test_publisher_holds_events_while_the_spool_is_full(nats_server: NatsServer,
                                                              small_disk: SmallDisk) -> None:
    small_disk.fill()
    publisher = UsagePublisher(nats_server.url, small_disk.path / "router.usage", publish_timeout_s=0.5,
                               replay_interval_s=0.1, max_held=150)
    await publisher.start()  # NATS is not running
    try:
        for i in range(200):
            publisher.record(event(f"full-{i}"))
        await wait_until(lambda: publisher.held + publisher.dropped == 200)
        assert publisher.degraded and publisher.condition.reason.startswith("usage spool not writable")
        assert (publisher.held, publisher.dropped, publisher.spooled) == (150, 50, 0)  # bounded, counted
        assert publisher.write_errors >= 1
        assert publisher._task is not None and not publisher._task.done()  # alive

        await nats_server.start()
        rows = await stored(nats_server.url, 150)
        assert sorted(r for r, _ in rows) == sorted(f"full-{i}" for i in range(150))
        assert publisher.held == 0 and publisher.degraded  # published from memory; the disk is still full

        small_disk.free()
        await wait_until(lambda: not publisher.degraded)  # the disk is probed again
        nats_server.stop()
        await wait_until(lambda: publisher._nc is not None and not publisher._nc.is_connected)
        for i in range(10):
            publisher.record(event(f"later-{i}"))
        await wait_until(lambda: publisher.spooled == 10)  # spooling resumed
        assert len(Spool(small_disk.path / "router.usage").read()) == 10
    finally:
        await publisher.close()


@pytest.fixture
def full_disk_mesh() -> Iterator[tuple[Mesh, SmallDisk]]:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-n-"))
    disk = SmallDisk(run_dir / "spool")  # where the launcher puts the router's spool
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=write_test_config(run_dir, "sy_" + "n" * 40),
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ())
    try:
        with running_mesh(settings) as mesh:
            yield mesh, disk
    finally:
        disk.remove()
        shutil.rmtree(run_dir, ignore_errors=True)


async def test_router_reports_a_full_spool_and_publishes_everything_after(full_disk_mesh) -> None:
    mesh, disk = full_disk_mesh
    router = f"unix:{mesh.sockets['router']}"
    assert grpc_status(router, CONDITION) == SERVING
    disk.fill()
    mesh.processes["nats"].stop(10)  # on purpose: the launcher does not restart it
    ids = set()
    async with AsyncOpenAI(base_url=mesh.base_url, api_key=mesh.api_key, max_retries=0, timeout=30) as client:
        for i in range(200):
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"metered {i}"}])
            ids.add(raw.headers["x-request-id"])
    # Still serving (overall status), but the usage condition says what is wrong.
    await wait_until(lambda: grpc_status(router, CONDITION) == NOT_SERVING)
    assert grpc_status(router) == SERVING
    assert "cannot write the spool" in mesh.tail("router", 400)

    mesh.processes["nats"].start()
    events = await usage_events(mesh, ids, wait_s=60)
    assert sorted(e.request_id for e in events) == sorted(ids)  # all 200, once each

    disk.free()
    await wait_until(lambda: grpc_status(router, CONDITION) == SERVING)
