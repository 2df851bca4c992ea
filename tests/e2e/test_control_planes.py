"""The local control planes need credentials: NATS refuses anonymous
clients and gives each service only what it needs; Envoy's admin API and the
services' sockets are reachable by this Unix user only."""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js.api import StreamConfig
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh, load_envoy_renderer
from switchyard import nats_client
from switchyard.events import STREAM
from switchyard.v1 import usage_pb2 as upb
from tests.e2e.test_usage import usage_events

REFUSED = (TimeoutError, nats.errors.Error, nats.js.errors.Error)


class Client:
    """A NATS connection as one mesh user, with the server's error reports."""

    def __init__(self, nc: nats.NATS, errors: list[str]) -> None:
        self.nc, self.errors = nc, errors
        self.js = nc.jetstream(timeout=2)

    async def refused(self, subject: str, operation: Callable[[nats.js.JetStreamContext], Awaitable[object]]) -> None:
        """``operation`` gets no answer and the server reports a permissions
        violation for ``subject`` (nats-py lowercases the report)."""
        with pytest.raises(REFUSED):
            await operation(self.nc.jetstream(timeout=0.5))
        async with asyncio.timeout(5):
            while not any("permissions violation" in e.lower() and subject.lower() in e.lower() for e in self.errors):
                await asyncio.sleep(0.01)


@pytest.fixture
async def connect(mesh: Mesh) -> AsyncIterator[Callable[[str], Awaitable[Client]]]:
    """Connect as a mesh user; every connection is closed afterwards."""
    clients: list[Client] = []

    async def as_user(user: str) -> Client:
        errors: list[str] = []

        async def error_cb(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats_client.connect(mesh.nats_url_for(user), allow_reconnect=False, error_cb=error_cb)
        clients.append(Client(nc, errors))
        return clients[-1]

    yield as_user
    for client in clients:
        await client.nc.close()


async def stream_size(admin: Client) -> int:
    return (await admin.js.stream_info(STREAM)).state.messages


async def metered_request(client: AsyncOpenAI, mesh: Mesh) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "metered"}])
    await usage_events(mesh, {raw.headers["x-request-id"]})  # reached the stream, read as analytics


async def test_nats_refuses_clients_without_credentials(mesh: Mesh) -> None:
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        await nats.connect(mesh.nats_url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)
    wrong = mesh.nats_url_for("router").replace(mesh.nats_passwords["router"], secrets.token_urlsafe(24))
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        await nats.connect(wrong, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)


async def test_services_cannot_purge_delete_or_shrink_the_usage_stream(client: AsyncOpenAI, mesh: Mesh,
                                                                       connect) -> None:
    await metered_request(client, mesh)
    admin = await connect("admin")
    before = await stream_size(admin)
    assert before > 0
    for user in ("router", "analytics"):
        client = await connect(user)
        await client.refused(f"STREAM.PURGE.{STREAM}", lambda js: js.purge_stream(STREAM))
        await client.refused(f"STREAM.UPDATE.{STREAM}", lambda js: js.update_stream(
            StreamConfig(name=STREAM, subjects=["switchyard.usage.>"], max_msgs=1)))  # a purge by other means
        await client.refused(f"STREAM.DELETE.{STREAM}", lambda js: js.delete_stream(STREAM))
        await client.refused(f"STREAM.MSG.DELETE.{STREAM}", lambda js, nc=client.nc: nc.request(
            f"$JS.API.STREAM.MSG.DELETE.{STREAM}", b'{"seq": 1}', timeout=0.5))
    assert await stream_size(admin) == before


async def test_analytics_cannot_forge_usage(client: AsyncOpenAI, mesh: Mesh, connect) -> None:
    await metered_request(client, mesh)
    admin = await connect("admin")
    before = await stream_size(admin)
    forged = upb.UsageEvent(request_id="forged-" + secrets.token_hex(4), tenant="default",
                            status="ok").SerializeToString()
    analytics = await connect("analytics")
    await analytics.refused("switchyard.usage.default", lambda js: js.publish("switchyard.usage.default", forged))
    assert await stream_size(admin) == before
    ack = await (await connect("router")).js.publish("switchyard.usage.default", forged)
    assert ack.stream == STREAM and await stream_size(admin) == before + 1


async def test_router_uses_switchyard_buckets_and_nothing_else(mesh: Mesh, connect) -> None:
    router = await connect("router")
    kv = await router.js.key_value("SWITCHYARD_ROUTES")  # the routers created it at start-up
    watcher = await kv.watchall()
    try:
        revision = await kv.put("control-plane-test", b"v1")
        assert (await kv.get("control-plane-test")).value == b"v1"
        async with asyncio.timeout(5):
            async for entry in watcher:
                if entry is not None and entry.key == "control-plane-test" and entry.revision == revision:
                    break
    finally:
        await watcher.stop()
    await router.refused("STREAM.CREATE.KV_OTHER", lambda js: js.create_key_value(bucket="OTHER"))
    await router.refused("STREAM.DELETE.KV_SWITCHYARD_ROUTES", lambda js: js.delete_key_value("SWITCHYARD_ROUTES"))
    await router.refused("STREAM.CREATE.ROGUE", lambda js: js.add_stream(name="ROGUE", subjects=["rogue.>"]))
    # A router purges the response cache (on an admin's request; entries are disposable), no other bucket.
    for kept in ("KV_SWITCHYARD_ROUTES", "KV_SWITCHYARD_LIMITS", "KV_SWITCHYARD_BUDGETS"):
        await router.refused(f"STREAM.PURGE.{kept}", lambda js, kept=kept: js.purge_stream(kept))
    assert await router.js.purge_stream("KV_SWITCHYARD_CACHE", subject="$KV.SWITCHYARD_CACHE.none.>")
    await (await connect("edge")).refused("STREAM.PURGE.KV_SWITCHYARD_CACHE",
                                          lambda js: js.purge_stream("KV_SWITCHYARD_CACHE"))
    admin = await connect("admin")  # only an admin may delete a bucket (not the routers' own: others use it)
    await admin.js.create_key_value(bucket="SWITCHYARD_SCRATCH")
    assert await admin.js.delete_key_value("SWITCHYARD_SCRATCH")


def listening_tcp_ports(pid: int) -> set[int]:
    """TCP ports a process listens on, from its descriptors and /proc/net/tcp{,6}."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_envoy_admin_is_a_private_unix_socket(mesh: Mesh) -> None:
    envoy = mesh.processes["envoy"]
    assert envoy.pid is not None
    # No admin port: besides the public one, only the stats listener (/stats/prometheus, nothing else;
    # tests/e2e/test_observability.py).
    assert listening_tcp_ports(envoy.pid) == {mesh.public_port, mesh.metrics_ports["envoy"]}
    renderer = load_envoy_renderer()
    assert renderer.admin_request(mesh.admin, "/ready")[0] == 200
    assert renderer.effective_settings(mesh.admin)["admin_mode"] == 0o600


def test_sockets_and_secrets_are_private_to_this_user(mesh: Mesh) -> None:
    run = mesh.settings.run_dir
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    sockets = [path for path in run.iterdir() if path.is_socket()]
    assert {path.name for path in sockets} >= {"edge.sock", "router.sock", "providers.sock", "envoy-router.sock",
                                               "envoy-providers.sock", "envoy-admin.sock"}
    for path in [*sockets, run / "nats.conf"]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path.name} is open to others"
