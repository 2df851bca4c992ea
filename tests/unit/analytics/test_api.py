"""The analytics HTTP API on a DuckDB store holding generated events: the
numbers equal counts of what was stored, scoping by identity, 400s naming
the parameter, the dashboard's files."""

from __future__ import annotations

import asyncio
import collections
import itertools
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from analytics.api import Api, create_app
from analytics.duckdb_store import DuckDBStore
from analytics.store import QueryTimeoutError, row_from_event
from switchyard.errors import UnavailableError
from tests.unit.analytics.events import make_events

EVENTS = make_events(400)
SINCE = min(e.timestamp_ms for e in EVENTS)
UNTIL = max(e.timestamp_ms for e in EVENTS) + 1
RANGE = {"since": str(SINCE), "until": str(UNTIL)}
ADMIN = {"x-switchyard-role": "admin", "x-switchyard-tenant": "ops", "x-switchyard-key-id": "root"}
ACME = {"x-switchyard-role": "client", "x-switchyard-tenant": "acme", "x-switchyard-key-id": "k1"}


@pytest.fixture(scope="module")
async def api() -> AsyncIterator[TestClient]:
    folder = Path(tempfile.mkdtemp(prefix="sy-api-"))
    store = DuckDBStore(str(folder / "usage.duckdb"))
    store.insert([row_from_event(e) for e in EVENTS])
    client = TestClient(TestServer(create_app(Api(store)), host="127.0.0.1", port=0))
    await client.start_server()
    yield client
    await client.close()
    store.close()
    shutil.rmtree(folder, ignore_errors=True)


async def get(api: TestClient, path: str, headers: dict[str, str], **params: str) -> tuple[int, dict]:
    response = await api.get(f"/v1/analytics/{path}", headers=headers, params={**RANGE, **params})
    return response.status, await response.json()


async def test_summary_counts_what_was_stored(api: TestClient) -> None:
    status, body = await get(api, "summary", ADMIN, group_by="provider")
    assert status == 200
    assert body["totals"]["requests"] == len(EVENTS)
    assert {g["key"]["provider"]: g["requests"] for g in body["groups"]} == collections.Counter(
        e.provider for e in EVENTS)
    assert body["totals"]["cost_usd"] == pytest.approx(sum(e.usage.cost_usd for e in EVENTS))


async def test_filters_by_every_kind_of_dimension(api: TestClient) -> None:
    response = await api.get("/v1/analytics/summary", headers=ADMIN,
                             params=[*RANGE.items(), ("model", "gpt-4o"), ("model", "gpt-4o-mini"),
                                     ("tag.team", "o'brien"), ("version", "2"), ("end_user", "u1")])
    body = await response.json()
    assert body["totals"]["requests"] == sum(
        e.model in ("gpt-4o", "gpt-4o-mini") and e.tags["team"] == "o'brien" and e.route_version == 2
        and e.end_user == "u1" for e in EVENTS)
    assert body["filters"]["model"] == ["gpt-4o", "gpt-4o-mini"]


async def test_client_key_sees_only_its_tenant(api: TestClient) -> None:
    acme = [e for e in EVENTS if e.tenant == "acme"]
    status, body = await get(api, "summary", ACME, group_by="tenant")
    assert status == 200 and body["totals"]["requests"] == len(acme) < len(EVENTS)
    assert [g["key"]["tenant"] for g in body["groups"]] == ["acme"]
    status, body = await get(api, "requests", ACME, limit="1000")
    assert {r["tenant"] for r in body["data"]} == {"acme"} and len(body["data"]) == len(acme)
    status, body = await get(api, "timeseries", ACME, bucket="hour")
    assert sum(body["series"][0]["requests"]) == len(acme)
    status, body = await get(api, "summary", ACME, tenant="globex")
    assert status == 403 and body["error"]["param"] == "tenant"
    status, body = await get(api, "status", ACME)
    assert status == 403


async def test_identity_is_required(api: TestClient) -> None:
    status, body = await get(api, "summary", {})
    assert status == 401 and body["error"]["type"] == "authentication_error"
    status, _ = await get(api, "summary", {"x-switchyard-role": "root", "x-switchyard-tenant": "acme"})
    assert status == 401


@pytest.mark.parametrize("path,params,param", [
    ("summary", {"group_by": "colour"}, "group_by"),
    ("summary", {"group_by": "model,provider,key,tenant"}, "group_by"),
    ("summary", {"order": "vibes"}, "order"),
    ("summary", {"limit": "0"}, "limit"),
    ("summary", {"limit": "1001"}, "limit"),
    ("summary", {"since": "yesterday"}, "since"),
    ("summary", {"since": "2026-01-01T00:00:00"}, "since"),
    ("summary", {"until": str(SINCE - 1)}, "since"),
    ("summary", {"version": "two"}, "version"),
    ("summary", {"tag.": "x"}, "tag."),
    ("summary", {"bucket": "hour"}, "bucket"),
    ("summary", {"colour": "red"}, "colour"),
    ("timeseries", {"bucket": "week"}, "bucket"),
    ("timeseries", {"bucket": "minute", "since": "30d", "until": "0d"}, "bucket"),
    ("timeseries", {"group_by": "model,provider"}, "group_by"),
    ("requests", {"cursor": "%%%"}, "cursor"),
    ("requests", {"group_by": "model"}, "group_by"),
])
async def test_bad_parameters_are_400_naming_them(api: TestClient, path: str, params: dict, param: str) -> None:
    status, body = await get(api, path, ADMIN, **params)
    assert status == 400, body
    assert body["error"]["param"] == param and body["error"]["type"] == "invalid_request_error"


async def test_timeseries_fills_every_bucket(api: TestClient) -> None:
    status, body = await get(api, "timeseries", ADMIN, bucket="minute", group_by="model", limit="2",
                             order="cost_usd")
    assert status == 200
    buckets = body["buckets"]
    assert buckets[0] <= SINCE < buckets[0] + 60_000 and buckets[-1] < UNTIL
    assert all(b - a == 60_000 for a, b in itertools.pairwise(buckets))
    cost = collections.defaultdict(float)
    for event in EVENTS:
        cost[event.model] += event.usage.cost_usd
    top = sorted(cost, key=cost.get, reverse=True)[:2]
    assert [s["key"]["model"] for s in body["series"]] == top
    for series in body["series"]:
        assert len(series["requests"]) == len(buckets)
        assert sum(series["requests"]) == sum(e.model == series["key"]["model"] for e in EVENTS)
        assert all(v is None or v >= 0 for v in series["latency_p95_ms"])
    assert body["filters"] == {}


async def test_request_log_paging(api: TestClient) -> None:
    ids, cursor = [], None
    while True:
        params = {"limit": "150", **({"cursor": cursor} if cursor else {})}
        _status, body = await get(api, "requests", ADMIN, **params)
        ids += [r["request_id"] for r in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(ids) == sorted(e.request_id for e in EVENTS) and len(ids) == len(set(ids))


async def test_tags_and_status(api: TestClient) -> None:
    status, body = await get(api, "tags", ADMIN)
    assert [t["tag"] for t in body["data"]] == ["team", "feature"]
    status, body = await get(api, "status", ADMIN)
    assert status == 200 and body["stored_rows"] == len(EVENTS)


async def test_dashboard_is_served_with_a_strict_policy(api: TestClient) -> None:
    response = await api.get("/v1/analytics/dashboard")
    assert response.status == 200 and "<svg" not in (page := await response.text())
    assert "script-src 'self'" in response.headers["content-security-policy"]
    for asset in ("app.js", "charts.js", "style.css"):
        assert f"/v1/analytics/dashboard/{asset}" in page
        assert (await api.get(f"/v1/analytics/dashboard/{asset}")).status == 200
    missing = await api.get("/v1/analytics/dashboard/../../etc/passwd")
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "unknown_url"


async def test_a_slot_is_held_until_its_query_has_stopped_and_a_stopped_query_is_a_503() -> None:
    api = Api(DuckDBStore(":memory:"), max_queries=1, max_waiting=0)
    release = threading.Event()

    def slow() -> str:
        release.wait(30)
        return "done"

    task = asyncio.create_task(api._run(slow))
    for _ in range(100):  # scheduling yields until the task is inside _run
        if api.pending:
            break
        await asyncio.sleep(0)
    task.cancel()  # the client went away; its query still runs on its thread
    with pytest.raises(asyncio.CancelledError):
        await task
    assert api.slots.locked()  # ...so its slot is still taken: queries never pile up behind clients that left
    release.set()
    async with asyncio.timeout(10):
        await api.slots.acquire()  # freed once the query really ended
    api.slots.release()

    def stopped() -> None:
        raise QueryTimeoutError("stopped after 30 s")

    with pytest.raises(UnavailableError) as refused:
        await api._run(stopped)
    assert refused.value.code == "query_timeout"
