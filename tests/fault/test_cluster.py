"""Scale-out on one machine: two replicas of edge, router and provider worker
behind Envoy on a 3-node NATS JetStream cluster (every stream and bucket R3).

- A NATS node (the one leading most streams) killed under load: no usage
  event lost or counted twice, a routing-config edit still reaches both
  routers through the bucket, a managed key created meanwhile works on both
  edges with its rate limit exact.
- One replica of each service SIGKILLed under load and restarted: exactly the
  streams it carried end in an error, none hangs, new requests go elsewhere,
  and the restarted replica takes traffic again.
- Every replica restarted in turn (SIGTERM, drain, restart) under load:
  no request fails.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh, MeshSettings, isolated_environ
from deploy.local.probes import http_ok
from switchyard.events import STREAM
from tests.e2e.conftest import marker, running_mesh, write_test_config
from tests.e2e.test_chat import sim_requests
from tests.fault.cluster_load import (
    BEFORE_FIRST_BYTE,
    CUT,
    ERROR_EVENT,
    OK,
    Load,
    send,
    stored_usage,
    stream_leaders,
    usage_counts,
    usage_statuses,
)
from tests.fault.test_config_live import all_serve, edit, served
from tests.fault.test_replicas import socket_owner

pytestmark = pytest.mark.slow
BUCKETS = ("KV_SWITCHYARD_ROUTES", "KV_SWITCHYARD_KEYS", "KV_SWITCHYARD_LIMITS", "KV_SWITCHYARD_BUDGETS")


@pytest.fixture(scope="module")
def cluster_mesh() -> Iterator[Mesh]:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-c-"))
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=write_test_config(run_dir, "sy_" + "c" * 40),
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ(),
                            edge_replicas=2, router_replicas=2, provider_replicas=2, nats_nodes=3,
                            # A draining edge keeps serving until Envoy's health checks (1 s, two
                            # failures) have taken it out, as a preStop hook does in Kubernetes.
                            extra_env={"SWITCHYARD_EDGE_DRAIN_DELAY_S": "3", "SWITCHYARD_EDGE_GRACE_S": "20",
                                       "SWITCHYARD_ROUTER_GRACE_S": "20", "SWITCHYARD_PROVIDERS_GRACE_S": "20"})
    with running_mesh(settings) as mesh:
        yield mesh


@pytest.fixture
async def mesh(cluster_mesh: Mesh) -> AsyncIterator[Mesh]:
    """The cluster, whole and balanced again after what the previous test did."""
    await asyncio.to_thread(cluster_mesh.wait_ready, 90)
    yield cluster_mesh


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def test_nats_node_killed_under_load(mesh: Mesh, http: aiohttp.ClientSession) -> None:
    load = Load(mesh, http)
    load.start()
    await load.until(30)
    leaders = await stream_leaders(mesh, (STREAM, *BUCKETS))
    victim = leaders.most_common(1)[0][0]
    mesh.processes[victim].kill()  # kept down until the checks below have run
    try:
        before_outage = len(load.outcomes)
        # The streams it led elect new leaders among the two left (meanwhile
        # a write may time out: usage events are retried, limits fail open).
        async with asyncio.timeout(30):
            while victim in await stream_leaders(mesh, (STREAM, *BUCKETS), down=victim):
                await asyncio.sleep(0.2)
        await kv_keeps_working(mesh, http)
        await load.until(before_outage + 30)  # the load went on through the outage
    finally:
        mesh.processes[victim].start()
    results = await load.stop()
    assert results == {OK: len(load.outcomes)}, results

    # Every request's usage event is in the stream exactly once.
    ids = {o.request_id for o in load.outcomes}
    assert None not in ids and len(ids) == len(load.outcomes)
    counts = await usage_counts(mesh, ids)
    assert {i: counts[i] for i in ids} == dict.fromkeys(ids, 1)
    assert max(counts.values()) == 1
    await asyncio.to_thread(mesh.wait_ready, 60)  # the node rejoined and caught up
    assert all(http_ok(f"http://127.0.0.1:{n.monitor_port}/healthz") for n in mesh.nats_cluster.values())


async def kv_keeps_working(mesh: Mesh, http: aiohttp.ClientSession) -> None:
    """Routing configs, managed keys and rate-limit counters on two of three nodes."""
    async with AsyncOpenAI(base_url=mesh.base_url, api_key=mesh.api_key, max_retries=0, timeout=30) as client:
        # A routing-config edit goes through the bucket to both routers (they serve only what it holds).
        version, _ = await served(client)
        edit(mesh.settings.config_path,
             lambda data: data["routes"]["production"].update(targets=["claude-haiku-4-5", "fast"]))
        await all_serve(client, (version + 1, "claude-haiku-4-5"), timeout=30)

    # A managed key created now reaches both edges, and its limit's counters (compare-and-set) stay exact.
    key = await create_key(mesh, http, {"id": "during-outage", "limits": {"rpm": 5}})
    # Asked directly, each edge knows the key (Envoy's order over the edges is no proof that both were asked:
    # an edge briefly out of its pool is skipped).
    async with asyncio.timeout(20):
        while not all([await knows(mesh, edge, key) for edge in mesh.edges]):
            await asyncio.sleep(0.05)
    limited = await asyncio.gather(*(send(http, mesh, f"limited {i}", stream=False, key=key) for i in range(8)))
    assert sorted((o.result, o.status) for o in limited) == [(OK, 0)] * 5 + [("refused", 429)] * 3


async def knows(mesh: Mesh, edge: str, key: str) -> bool:
    """Whether ``edge`` accepts ``key`` (its own socket, not through Envoy)."""
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(mesh.sockets[edge]))) as direct, \
            direct.get("http://edge/v1/models", headers={"Authorization": f"Bearer {key}"}) as listed:
        return listed.status == 200


async def create_key(mesh: Mesh, http: aiohttp.ClientSession, body: dict) -> str:
    """Create a managed key, retrying as told while the key store's bucket elects a new leader."""
    async with asyncio.timeout(20):
        while True:
            async with http.post(f"{mesh.base_url}/admin/keys", json=body,
                                 headers={"Authorization": f"Bearer {mesh.api_key}"}) as created:
                if created.status != 503:
                    assert created.status == 201, await created.text()
                    return (await created.json())["key"]
                assert (await created.json())["error"]["code"] == "key_store_unavailable"
                await asyncio.sleep(float(created.headers["retry-after"]))


async def start_streams(mesh: Mesh, http: aiohttp.ClientSession, count: int) -> tuple[list[str], list[asyncio.Task]]:
    """``count`` streams, each past its first token when this returns."""
    tags = [marker() for _ in range(count)]
    first = [asyncio.Event() for _ in tags]
    tasks = [asyncio.create_task(send(http, mesh, f"{tag} [[sim tokens=100 chunk_delay_ms=30]]", stream=True,
                                      first_byte=event)) for tag, event in zip(tags, first, strict=True)]
    async with asyncio.timeout(30):
        await asyncio.gather(*(event.wait() for event in first))
    return tags, tasks


async def sigkill(mesh: Mesh, name: str) -> int:
    """SIGKILL ``name`` (the launcher restarts it); the restart count before."""
    process = mesh.processes[name]
    restarts, dead = mesh.restarts[name], process.popen
    assert dead is not None
    process.signal(signal.SIGKILL)
    await asyncio.to_thread(dead.wait, 10)
    return restarts


async def new_requests_succeed(mesh: Mesh, http: aiohttp.ClientSession) -> None:
    """Requests sent right after a kill, while the replica is still down, all succeed elsewhere."""
    outcomes = [await send(http, mesh, f"after {i}", stream=False) for i in range(10)]
    assert [o.result for o in outcomes] == [OK] * 10


async def restarted(mesh: Mesh, name: str, restarts: int) -> None:
    await asyncio.to_thread(mesh.wait_ready, 60)  # includes: Envoy routes to it again
    assert mesh.restarts[name] == restarts + 1


async def test_killed_provider_worker_cuts_only_its_streams(mesh: Mesh, http: aiohttp.ClientSession) -> None:
    tags, tasks = await start_streams(mesh, http, 12)
    pids = {name: mesh.processes[name].popen.pid for name in mesh.providers}
    owners = {}
    for tag in tags:
        [upstream] = await sim_requests(mesh, tag)
        owners[tag] = socket_owner(upstream["peer_port"], pids)
    victim = "providers-2"
    assert set(owners.values()) == set(mesh.providers), owners  # both workers carry streams
    restarts = await sigkill(mesh, victim)
    await new_requests_succeed(mesh, http)
    async with asyncio.timeout(60):  # none hangs
        outcomes = await asyncio.gather(*tasks)
    assert {tag: o.result for tag, o in zip(tags, outcomes, strict=True)} == {
        tag: ERROR_EVENT if owner == victim else OK for tag, owner in owners.items()}
    await restarted(mesh, victim, restarts)


async def test_killed_router_cuts_only_its_streams(mesh: Mesh, http: aiohttp.ClientSession) -> None:
    _, tasks = await start_streams(mesh, http, 12)
    victim = "router-2"
    restarts = await sigkill(mesh, victim)
    await new_requests_succeed(mesh, http)
    async with asyncio.timeout(60):
        outcomes = await asyncio.gather(*tasks)
    results = {o.request_id: o.result for o in outcomes}
    assert set(results.values()) == {OK, ERROR_EVENT}, results  # some on each router; nothing else
    # Every request keeps exactly one usage record: the surviving router
    # settled its own streams; the dead router's (a SIGKILLed router publishes
    # nothing) are written by the edge that relayed them, as errors metered
    # by estimate.
    survivors = {i for i, r in results.items() if r == OK}
    counts = await usage_counts(mesh, set(results))
    assert {i: counts[i] for i in results} == {i: 1 for i in results}
    events = {e.request_id: e for e in await stored_usage(mesh) if e.request_id in results}
    assert {i: e.status for i, e in events.items() if i in survivors} == {i: "ok" for i in survivors}
    failed = set(results) - survivors
    assert {(events[i].status, events[i].usage_estimated) for i in failed} == {("error", True)}
    await restarted(mesh, victim, restarts)


async def test_killed_edge_cuts_only_its_streams(mesh: Mesh, http: aiohttp.ClientSession) -> None:
    _, tasks = await start_streams(mesh, http, 12)
    victim = "edge-2"
    restarts = await sigkill(mesh, victim)
    await new_requests_succeed(mesh, http)
    async with asyncio.timeout(60):
        outcomes = await asyncio.gather(*tasks)
    results = {o.request_id: o.result for o in outcomes}
    # Nobody is left to write an error event for a dead edge's streams: their
    # connections close mid-answer, which clients see as an error (never a
    # clean end); the routers saw them cancelled, and finished the others.
    assert set(results.values()) == {OK, CUT}, results
    statuses = await usage_statuses(mesh, set(results))
    assert {i: statuses[i] for i in results} == {i: "ok" if r == OK else "cancelled" for i, r in results.items()}
    await restarted(mesh, victim, restarts)


async def test_rolling_restart_under_load_fails_no_request(mesh: Mesh, http: aiohttp.ClientSession) -> None:
    load = Load(mesh, http, tokens=20, chunk_delay_ms=25)
    load.start()
    await load.until(20)
    for name in (*mesh.edges, *mesh.routers, *mesh.providers):
        process = mesh.processes[name]
        restarts, draining = mesh.restarts[name], process.popen
        assert draining is not None
        process.signal(signal.SIGTERM)
        assert await asyncio.to_thread(draining.wait, 40) == 0  # drained and exited cleanly
        await restarted(mesh, name, restarts)
    results = await load.stop()
    assert not {r: n for r, n in results.items() if r in BEFORE_FIRST_BYTE}, results
    assert results == {OK: len(load.outcomes)}, results
