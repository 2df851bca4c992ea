"""The edge's /v1/analytics proxy: the key is authenticated at the edge and
only its identity crosses the hop; the OpenAPI document describes exactly
the parameters the analytics service accepts."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from analytics import query
from analytics.store import DIMENSIONS
from edge import analytics_proxy
from edge.analytics_proxy import AnalyticsProxy
from switchyard.config import parse_config

CLIENT_KEY = "sy_" + secrets.token_hex(20)
ADMIN_KEY = "sy_" + secrets.token_hex(20)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[TestServer, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append({"path": request.path_qs, **request.headers})
        return web.json_response({"ok": True}, headers={"x-internal": "no", "cache-control": "no-store"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", record)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield server, seen
    await server.close()


@pytest.fixture
async def edge(upstream: tuple[TestServer, list], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient]:
    monkeypatch.setenv("SY_TEST_CLIENT_KEY", CLIENT_KEY)
    monkeypatch.setenv("SY_TEST_ADMIN_KEY", ADMIN_KEY)
    config = parse_config("""
providers: {p: {type: openai, base_url: "http://127.0.0.1:1"}}
api_keys:
  - {id: c1, key_env: SY_TEST_CLIENT_KEY, tenant: acme}
  - {id: a1, key_env: SY_TEST_ADMIN_KEY, tenant: ops, role: admin}
""")
    proxy = AnalyticsProxy(config, f"127.0.0.1:{upstream[0].port}")
    app = web.Application()
    app.router.add_route("*", "/v1/analytics/{tail:.*}", proxy.handle)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    yield client
    await client.close()
    await proxy.close()


async def test_identity_comes_from_the_key_only(edge: TestClient, upstream: tuple[TestServer, list]) -> None:
    _, seen = upstream
    forged = {"authorization": f"Bearer {CLIENT_KEY}", "x-switchyard-role": "admin",
              "x-switchyard-tenant": "globex", "cookie": "a=b"}
    response = await edge.get("/v1/analytics/summary?group_by=model&tag.team=x", headers=forged)
    assert response.status == 200 and "x-internal" not in response.headers
    (sent,) = seen
    assert sent["path"] == "/v1/analytics/summary?group_by=model&tag.team=x"
    assert (sent["x-switchyard-role"], sent["x-switchyard-tenant"], sent["x-switchyard-key-id"]) == (
        "client", "acme", "c1")
    assert "Authorization" not in sent and "Cookie" not in sent
    await edge.get("/v1/analytics/summary", headers={"x-api-key": ADMIN_KEY})
    assert (seen[1]["x-switchyard-role"], seen[1]["x-switchyard-tenant"]) == ("admin", "ops")


async def test_no_key_no_data_but_the_page_is_public(edge: TestClient, upstream: tuple[TestServer, list]) -> None:
    _, seen = upstream
    for headers in ({}, {"authorization": "Bearer sy_wrong_key_0123456789"}):
        response = await edge.get("/v1/analytics/requests", headers=headers)
        assert response.status == 401 and (await response.json())["error"]["type"] == "authentication_error"
    assert seen == []
    assert (await edge.get("/v1/analytics/dashboard")).status == 200
    assert "x-switchyard-role" not in seen[0]
    response = await edge.post("/v1/analytics/summary", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status == 400 and len(seen) == 1


async def test_unreachable_analytics_is_a_503() -> None:
    config = parse_config("providers: {p: {type: openai, base_url: 'http://127.0.0.1:1'}}")
    proxy = AnalyticsProxy(config, "unix:/nonexistent/analytics.sock")
    app = web.Application()
    app.router.add_route("*", "/v1/analytics/{tail:.*}", proxy.handle)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        response = await client.get("/v1/analytics/dashboard")
        assert response.status == 503 and (await response.json())["error"]["code"] == "service_unavailable"
    await proxy.close()


def test_openapi_documents_what_the_service_accepts() -> None:
    paths = analytics_proxy.openapi_paths()
    for endpoint in ("summary", "timeseries", "requests", "tags"):
        documented = {p["name"] for p in paths[f"/v1/analytics/{endpoint}"]["get"]["parameters"]}
        accepted = {name for name, (endpoints, _) in query.PARAMETERS.items() if endpoint in endpoints}
        assert documented == accepted | set(DIMENSIONS) | {"tag.<name>"}, endpoint
