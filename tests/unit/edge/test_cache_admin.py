"""POST /admin/cache/purge: admin keys only, exactly one of tenant and all,
errors naming the field, nothing asked of the router on a bad request, and
a router that cannot purge is a 503."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from edge.admin import CacheAdmin
from edge.auth import KeyStore
from switchyard.v1 import router_pb2 as rpb
from tests.unit.edge.test_managed_keys import ADMIN, CLIENT, bearer, config_keys


class Router:
    def __init__(self, down: bool = False) -> None:
        self.asked: list[rpb.PurgeCacheRequest] = []
        self.down = down

    async def purge(self, request: rpb.PurgeCacheRequest) -> rpb.PurgeCacheResponse:
        if self.down:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       details="the cache store (NATS) is not reachable")
        self.asked.append(request)
        return rpb.PurgeCacheResponse(purged=3)


async def post(router: Router, body: Any, key: str = ADMIN) -> tuple[int, dict[str, Any]]:
    app = web.Application()
    CacheAdmin(KeyStore(config_keys()), router.purge).register(app)
    async with TestClient(TestServer(app)) as client:
        reply = await client.post("/v1/admin/cache/purge", headers=bearer(key), json=body)
        return reply.status, await reply.json()


async def test_a_tenant_and_everything_are_purged() -> None:
    router = Router()
    assert await post(router, {"tenant": "acme"}) == (
        200, {"object": "cache.purge", "tenant": "acme", "all": False, "purged": 3})
    assert await post(router, {"all": True}) == (
        200, {"object": "cache.purge", "tenant": None, "all": True, "purged": 3})
    assert router.asked == [rpb.PurgeCacheRequest(tenant="acme"), rpb.PurgeCacheRequest(all=True)]


@pytest.mark.parametrize(("body", "param"), [
    ({}, "tenant"),
    ({"tenant": "acme", "all": True}, "tenant"),
    ({"tenant": ""}, "tenant"),
    ({"tenant": 7}, "tenant"),
    ({"tenant": "x" * 257}, "tenant"),
    ({"all": "yes"}, "all"),
    ({"all": False}, "tenant"),
    ({"tenant": "acme", "keys": ["k"]}, "keys"),
])
async def test_bad_bodies_name_the_field_and_purge_nothing(body: dict[str, Any], param: str) -> None:
    router = Router()
    status, answer = await post(router, body)
    assert (status, answer["error"]["type"], answer["error"]["param"]) == (400, "invalid_request_error", param)
    assert router.asked == []


async def test_only_admin_keys_purge() -> None:
    router = Router()
    status, answer = await post(router, {"all": True}, key=CLIENT)
    assert (status, answer["error"]["code"]) == (403, "admin_key_required") and router.asked == []


async def test_a_router_that_cannot_purge_is_a_503() -> None:
    status, answer = await post(Router(down=True), {"tenant": "acme"})
    assert (status, answer["error"]["code"]) == (503, "cache_store_unavailable")
    assert "NATS" in answer["error"]["message"]
