"""A replicated mesh is ready only once Envoy balances over every replica:
its workers learn health changes up to a second late, and sessions opened in
that window would all go to one replica (then a single kill takes them all)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.local.mesh import Mesh, load_envoy_renderer


def active_streams(mesh: Mesh, cluster: str) -> dict[str, int]:
    status, body = load_envoy_renderer().admin_request(mesh.admin, "/clusters")
    assert status == 200
    return {parts[1]: int(parts[3]) for parts in (line.split("::") for line in body.decode().splitlines())
            if parts[0] == cluster and len(parts) == 4 and parts[2] == "rq_active"}


async def test_streams_spread_over_replicas_as_soon_as_the_mesh_is_up(replicated_mesh: Mesh) -> None:
    mesh = replicated_mesh
    for egress, cluster in (("envoy-providers", "provider"), ("envoy-router", "router")):
        async with grpc.aio.insecure_channel(f"unix:{mesh.sockets[egress]}") as channel:
            watches = []
            for _ in range(4):  # long-lived streams on one connection, like a router's sessions
                watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
                watches.append(watch)
            assert sorted(active_streams(mesh, cluster).values()) == [2, 2]
            for watch in watches:
                watch.cancel()
