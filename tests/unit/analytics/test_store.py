"""Both store engines — DuckDB and real ClickHouse (embedded via chdb) — hold
each request once and answer every query with the figures computed here
from the events themselves."""

from __future__ import annotations

import collections
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from analytics.clickhouse_store import ChdbClient, ClickHouseStore
from analytics.duckdb_store import DuckDBStore
from analytics.store import ADDED, COLUMNS, TABLE, Page, Query, QueryTimeoutError, Store, row_from_event
from tests.unit.analytics.events import TEAMS, expected, make_events

EVENTS = make_events(600)
START = min(e.timestamp_ms for e in EVENTS)
ALL = Query(since_ms=START, until_ms=START + 10 * 3600_000)


@pytest.fixture(scope="module")
def chdb_client() -> Iterator[ChdbClient]:
    """The module's embedded ClickHouse (one per process, at one path): tests use databases of their own."""
    folder = Path(tempfile.mkdtemp(prefix="sy-chdb-"))
    client = ChdbClient(str(folder / "ch"))
    yield client
    client.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module", params=["duckdb", "clickhouse"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    folder = Path(tempfile.mkdtemp(prefix="sy-store-"))
    engine: Store
    if request.param == "duckdb":
        engine = DuckDBStore(str(folder / "usage.duckdb"))
    else:
        engine = ClickHouseStore(request.getfixturevalue("chdb_client"), "switchyard_test")
    rows = [row_from_event(e) for e in EVENTS]
    # Batches that overlap each other and repeat ids inside themselves.
    assert engine.insert(rows[:250] + rows[:10]) == 250
    assert engine.insert(rows[200:]) == len(rows) - 250
    yield engine
    engine.close()
    shutil.rmtree(folder, ignore_errors=True)


def assert_metrics(actual: dict, events: list) -> None:
    want = expected(events)
    for name, value in want.items():
        if value is None or isinstance(value, float):
            assert actual[name] == pytest.approx(value, rel=1e-6, abs=1e-3), name
        else:
            assert actual[name] == value, name
    assert actual["total_tokens"] == want["prompt_tokens"] + want["completion_tokens"]
    assert actual["error_rate"] == pytest.approx(want["errors"] / want["requests"])


def test_each_request_once_whatever_is_replayed(store: Store) -> None:
    assert store.count() == len(EVENTS)
    assert store.insert([row_from_event(e) for e in EVENTS[::3]]) == 0
    assert store.count() == len(EVENTS)


def test_totals(store: Store) -> None:
    (totals,) = store.summary(ALL)
    assert totals["key"] == {}
    assert_metrics(totals, EVENTS)


@pytest.mark.parametrize("dimension,attribute", [("model", "model"), ("tenant", "tenant"), ("key", "key_id"),
                                                  ("end_user", "end_user"), ("arm", "route_arm"),
                                                  ("version", "route_version")])
def test_group_by(store: Store, dimension: str, attribute: str) -> None:
    groups = store.summary(Query(ALL.since_ms, ALL.until_ms, group_by=(dimension,), limit=100))
    by_value = collections.defaultdict(list)
    for event in EVENTS:
        by_value[getattr(event, attribute)].append(event)
    assert {g["key"][dimension]: g["requests"] for g in groups} == {k: len(v) for k, v in by_value.items()}
    for group in groups:
        assert_metrics(group, by_value[group["key"][dimension]])
    assert [g["requests"] for g in groups] == sorted((g["requests"] for g in groups), reverse=True)


def test_filters_and_tags(store: Store) -> None:
    for team in TEAMS:
        query = Query(ALL.since_ms, ALL.until_ms, filters=(("tag.team", (team,)), ("provider", ("openai",))))
        (totals,) = store.summary(query)
        assert_metrics(totals, [e for e in EVENTS if e.tags["team"] == team and e.provider == "openai"])
    groups = store.summary(Query(ALL.since_ms, ALL.until_ms, group_by=("tag.team", "model"), limit=1000))
    counted = collections.Counter((e.tags["team"], e.model) for e in EVENTS)
    assert {(g["key"]["tag.team"], g["key"]["model"]): g["requests"] for g in groups} == counted
    (none,) = store.summary(Query(ALL.since_ms, ALL.until_ms, filters=(("model", ("no-such-model",)),)))
    assert none["requests"] == 0 and none["latency_p50_ms"] is None


def test_time_range_is_half_open(store: Store) -> None:
    middle = sorted(e.timestamp_ms for e in EVENTS)[300]
    (before,) = store.summary(Query(START, middle))
    (after,) = store.summary(Query(middle, ALL.until_ms))
    assert before["requests"] == sum(e.timestamp_ms < middle for e in EVENTS)
    assert before["requests"] + after["requests"] == len(EVENTS)


@pytest.mark.parametrize("bucket_ms", [60_000, 3600_000, 86400_000])
def test_timeseries(store: Store, bucket_ms: int) -> None:
    points = store.timeseries(Query(ALL.since_ms, ALL.until_ms, group_by=("model",)), bucket_ms)
    counted = collections.Counter((e.timestamp_ms // bucket_ms * bucket_ms, e.model) for e in EVENTS)
    assert {(p["bucket"], p["key"]["model"]): p["requests"] for p in points} == counted
    first = min(counted)
    assert_metrics(next(p for p in points if (p["bucket"], p["key"]["model"]) == first),
                   [e for e in EVENTS if (e.timestamp_ms // bucket_ms * bucket_ms, e.model) == first])


def test_request_log_pages_through_everything_once(store: Store) -> None:
    query = Query(ALL.since_ms, ALL.until_ms, filters=(("tenant", ("acme",)),))
    seen, page = [], Page(limit=37)
    while True:
        rows = store.requests(query, page)
        seen.extend(rows)
        if len(rows) < page.limit:
            break
        page = Page(limit=37, before_ts_ms=rows[-1]["ts_ms"], before_id=rows[-1]["request_id"])
    acme = sorted((e for e in EVENTS if e.tenant == "acme"), key=lambda e: (e.timestamp_ms, e.request_id),
                  reverse=True)
    assert [r["request_id"] for r in seen] == [e.request_id for e in acme]
    first, event = seen[0], acme[0]
    assert first["tags"] == dict(event.tags) and first["prompt_tokens"] == event.usage.prompt_tokens
    assert first["attempts"] == 1 and first["stream"] is event.stream
    assert first["cost_usd"] == pytest.approx(event.usage.cost_usd)


def test_tag_names(store: Store) -> None:
    tags = store.tags(Query(ALL.since_ms, ALL.until_ms, filters=(("tenant", ("globex",)),)))
    globex = [e for e in EVENTS if e.tenant == "globex"]
    assert [(t["tag"], t["requests"]) for t in tags] == [
        ("team", len(globex)), ("feature", sum("feature" in e.tags for e in globex))]
    assert tags[0]["cost_usd"] == pytest.approx(sum(e.usage.cost_usd for e in globex))


def test_a_query_past_the_time_limit_is_stopped_by_the_engine(store: Store) -> None:
    # A query that would run for minutes; the engine must stop it at the limit (so the API's slot frees).
    started = time.monotonic()
    with pytest.raises(QueryTimeoutError):
        if isinstance(store, DuckDBStore):
            store.query_timeout_s, saved = 0.2, store.query_timeout_s
            try:
                store._fetch("SELECT sum(range) FROM range(100000000000)", {})
            finally:
                store.query_timeout_s = saved
        else:
            assert isinstance(store, ClickHouseStore)
            strict = ClickHouseStore(store._client, "switchyard_test", query_timeout_s=1)
            strict._select("SELECT sum(number) FROM numbers(100000000000)", {})
    assert time.monotonic() - started < 20
    assert store.count() == len(EVENTS)  # the store still answers


def test_group_by_endpoint_counts_chat_and_embeddings(store: Store) -> None:
    groups = store.summary(Query(ALL.since_ms, ALL.until_ms, group_by=("endpoint",), limit=10))
    counted = collections.Counter(e.endpoint or "chat" for e in EVENTS)
    assert {g["key"]["endpoint"]: g["requests"] for g in groups} == counted and len(counted) == 2
    (embeddings,) = store.summary(Query(ALL.since_ms, ALL.until_ms, filters=(("endpoint", ("embeddings",)),)))
    assert_metrics(embeddings, [e for e in EVENTS if e.endpoint == "embeddings"])


def test_a_table_from_an_older_release_gains_the_new_columns(tmp_path: Path) -> None:
    path = str(tmp_path / "old.duckdb")
    old = [(name, kind) for name, kind, _ in COLUMNS if name not in dict(ADDED)]
    with duckdb.connect(path) as con:
        con.execute(f"CREATE TABLE {TABLE} ({', '.join(f'{n} {k}' for n, k in old)})")
        row = row_from_event(EVENTS[0])[:len(old)]
        con.execute(f"INSERT INTO {TABLE} VALUES ({', '.join('?' * len(old))})", list(row))
    engine = DuckDBStore(path)
    try:
        engine.insert([row_from_event(e) for e in EVENTS[1:3]])  # new rows go in column by column
        (page,) = [engine.requests(ALL, Page(limit=10))]
        by_id = {r["request_id"]: r["endpoint"] for r in page}
        assert by_id[EVENTS[0].request_id] == "chat"  # the default for rows stored before the column
        assert by_id[EVENTS[1].request_id] == (EVENTS[1].endpoint or "chat") and len(by_id) == 3
    finally:
        engine.close()


@pytest.mark.parametrize("engine", ["duckdb", "clickhouse"])
def test_delete_before_removes_only_older_requests(engine: str, tmp_path: Path,
                                                  request: pytest.FixtureRequest) -> None:
    events = make_events(200, seed=3)
    cut = sorted(e.timestamp_ms for e in events)[80]  # 80 requests started before it
    target: Store
    if engine == "duckdb":
        target = DuckDBStore(str(tmp_path / "usage.duckdb"))
    else:
        target = ClickHouseStore(request.getfixturevalue("chdb_client"), "switchyard_retention")
    try:
        assert target.insert([row_from_event(e) for e in events]) == 200
        assert target.delete_before(cut) == 80
        assert target.count() == 120 and target.delete_before(cut) == 0
        kept = [e for e in events if e.timestamp_ms >= cut]
        assert_metrics(target.summary(Query(since_ms=0, until_ms=cut * 2))[0], kept)
    finally:
        target.close()
