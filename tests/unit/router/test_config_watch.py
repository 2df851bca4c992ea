"""Live routing configuration across replicas, against a real nats-server."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import nats
import pytest

from router.config_watch import ConfigWatcher
from router.versions import RoutingDocument
from tests.unit.router.scripted import BASE
from tests.unit.switchyard.test_events import NatsServer

V1 = BASE + "routes:\n  prod:\n    targets: [m1]\n  other:\n    targets: [m2]\n"
V2 = BASE + "routes:\n  prod:\n    targets: [m2, m1]\n  other:\n    targets: [m2]\n"
V3 = BASE + "routes:\n  prod:\n    targets: [m3]\n  other:\n    targets: [m2]\n"


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sy-cfg-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    server = NatsServer()
    await server.start()
    yield server
    server.remove()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def served(watcher: ConfigWatcher) -> tuple[int, list[str]]:
    plan = watcher.table.plan("@prod")
    return plan.route_version, [child.target.model for child in plan.root.children]


async def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_an_edit_reaches_a_replica_whose_own_file_is_stale(folder: Path, nats_server: NatsServer) -> None:
    a = ConfigWatcher(write(folder / "a.yaml", V1), nats_server.url, poll_s=0.05)
    b = ConfigWatcher(write(folder / "b.yaml", V1), nats_server.url, poll_s=0.05)
    await a.start()
    await b.start()
    try:
        assert served(a) == served(b) == (1, ["m1"])
        assert a.synced and b.synced
        write(folder / "a.yaml", V2)  # only a's copy of the file changes
        await wait_until(lambda: served(b) == (2, ["m2", "m1"]))
        assert served(a) == (2, ["m2", "m1"])
        assert b.table.plan("@other").route_version == 1  # unchanged configs keep their version
        assert [c.target.model for c in b.table.plan("@prod@1").root.children] == ["m1"]  # pinned
    finally:
        await a.close()
        await b.close()
    # b restarts with its old file: it follows the bucket instead of reverting it.
    b = ConfigWatcher(folder / "b.yaml", nats_server.url, poll_s=0.05)
    await b.start()
    try:
        assert served(b) == (2, ["m2", "m1"])
    finally:
        await b.close()


async def test_a_bad_edit_is_refused_and_the_last_good_version_stays(folder: Path, nats_server: NatsServer,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = write(folder / "a.yaml", V1)
    watcher = ConfigWatcher(path, nats_server.url)
    await watcher.start()
    try:
        write(path, V1.replace("targets: [m1]", "targets: [ghost]"))
        await watcher.check()
        assert served(watcher) == (1, ["m1"])
        assert "routes.prod.targets.0.model (line 18)" in caplog.text and str(path) in caplog.text
        write(path, V2)
        await watcher.check()
        assert served(watcher) == (2, ["m2", "m1"])
    finally:
        await watcher.close()


async def test_without_nats_the_replica_keeps_serving_and_publishes_when_back(folder: Path,
                                                                              nats_server: NatsServer) -> None:
    path = write(folder / "a.yaml", V1)
    watcher = ConfigWatcher(path, nats_server.url, poll_s=0.05)
    await watcher.start()
    follower = ConfigWatcher(write(folder / "b.yaml", V1), nats_server.url, poll_s=0.05)
    await follower.start()
    try:
        nats_server.stop()
        await wait_until(lambda: not watcher.synced)
        write(path, V3)  # an edit while NATS is away is not applied alone (versions must agree)
        await wait_until(lambda: watcher._unpublished is not None)
        assert served(watcher) == (1, ["m1"])
        await nats_server.start()
        await wait_until(lambda: watcher.synced and served(watcher) == (2, ["m3"]), timeout=20)
        await wait_until(lambda: served(follower) == (2, ["m3"]), timeout=20)
    finally:
        await watcher.close()
        await follower.close()


async def test_without_nats_configured_edits_apply_locally(folder: Path) -> None:
    path = write(folder / "a.yaml", V1)
    watcher = ConfigWatcher(path, None)
    assert watcher.synced
    write(path, V2)
    await watcher.check()
    assert served(watcher) == (2, ["m2", "m1"])


async def test_a_deleted_bucket_is_created_again_with_the_live_configuration(folder: Path,
                                                                            nats_server: NatsServer) -> None:
    watcher = ConfigWatcher(write(folder / "a.yaml", V2), nats_server.url)
    await watcher.start()
    try:
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().delete_key_value("SWITCHYARD_ROUTES")
        await watcher.check()
        entry = await (await nc.jetstream().key_value("SWITCHYARD_ROUTES")).get("config")
        assert RoutingDocument.from_bytes(entry.value).version_of("prod") == 1
        assert served(watcher) == (1, ["m2", "m1"]) and watcher.synced
        await nc.close()
    finally:
        await watcher.close()
