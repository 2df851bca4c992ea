"""The usage store: one row per client request, behind one small interface.

``Store`` is what the consumer writes to and the query API reads from; the
engines (``duckdb_store``, ``clickhouse_store``) differ only in a ``Dialect``
(parameter syntax, conditional aggregates, exact quantiles, integer division)
and in how they execute, so every query is written once here.

Idempotency: ``insert`` stores each request id at most once, whatever is
replayed; it returns the number of rows it newly stored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from switchyard.config import AnalyticsSpec
from switchyard.v1 import usage_pb2 as upb

TABLE = "usage"

# (column, DuckDB type, ClickHouse type), in row order.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("request_id", "VARCHAR", "String"),
    ("ts_ms", "BIGINT", "Int64"),
    ("tenant", "VARCHAR", "LowCardinality(String)"),
    ("key_id", "VARCHAR", "LowCardinality(String)"),
    ("end_user", "VARCHAR", "String"),
    ("session_id", "VARCHAR", "String"),
    ("tags", "MAP(VARCHAR, VARCHAR)", "Map(String, String)"),
    ("model_requested", "VARCHAR", "LowCardinality(String)"),
    ("model", "VARCHAR", "LowCardinality(String)"),
    ("provider", "VARCHAR", "LowCardinality(String)"),
    ("route", "VARCHAR", "LowCardinality(String)"),
    ("route_version", "INTEGER", "Int32"),
    ("route_arm", "VARCHAR", "LowCardinality(String)"),
    ("cache_status", "VARCHAR", "LowCardinality(String)"),
    ("status", "VARCHAR", "LowCardinality(String)"),
    ("http_status", "INTEGER", "Int32"),
    ("error_type", "VARCHAR", "LowCardinality(String)"),
    ("stream", "BOOLEAN", "Bool"),
    ("prompt_tokens", "BIGINT", "Int64"),
    ("completion_tokens", "BIGINT", "Int64"),
    ("cached_tokens", "BIGINT", "Int64"),
    ("cache_write_tokens", "BIGINT", "Int64"),
    ("reasoning_tokens", "BIGINT", "Int64"),
    ("usage_estimated", "BOOLEAN", "Bool"),
    ("cost_usd", "DOUBLE", "Float64"),
    ("cost_saved_usd", "DOUBLE", "Float64"),
    ("latency_ms", "DOUBLE", "Float64"),
    ("ttft_ms", "DOUBLE", "Float64"),
    ("attempts", "INTEGER", "Int32"),
    # Added after the first release: ``ADDED`` brings older tables up to date.
    ("endpoint", "VARCHAR", "LowCardinality(String)"),
)
# Columns newer tables have: (column, default for the rows stored before it).
ADDED: tuple[tuple[str, str], ...] = (("endpoint", "chat"),)
COLUMN_NAMES = tuple(c[0] for c in COLUMNS)

# API dimension name -> column. Tags are ``tag.<name>``.
DIMENSIONS: dict[str, str] = {
    "model": "model", "model_requested": "model_requested", "provider": "provider", "route": "route",
    "version": "route_version", "arm": "route_arm", "key": "key_id", "tenant": "tenant", "end_user": "end_user",
    "session": "session_id", "status": "status", "cache_status": "cache_status", "error_type": "error_type",
    "endpoint": "endpoint",
}
TAG_PREFIX = "tag."
INT_DIMENSIONS = frozenset({"version"})

# What each group / bucket reports. Percentiles: latency over successful
# requests, time to first token over requests that produced output.
COUNTS = ("requests", "errors", "cancelled", "cache_hits", "estimated")
SUMS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens",
        "cost_usd", "cost_saved_usd")
QUANTILES = (0.5, 0.95, 0.99)
PERCENTILES = tuple(f"{m}_p{round(q * 100)}_ms" for m in ("latency", "ttft") for q in QUANTILES)
DERIVED = ("total_tokens", "error_rate", "cache_hit_rate")
METRICS = (*COUNTS, *SUMS, *DERIVED, *PERCENTILES)
ORDERABLE = ("requests", "errors", "cost_usd", "prompt_tokens", "completion_tokens", "cache_hits")


def row_from_event(event: upb.UsageEvent) -> tuple[Any, ...]:
    """The stored row of one usage event, in ``COLUMNS`` order."""
    usage = event.usage
    cache_status = event.cache_status or ("hit" if event.cache_hit else "")
    return (
        event.request_id, event.timestamp_ms, event.tenant, event.key_id, event.end_user, event.session_id,
        dict(event.tags), event.model_requested, event.model, event.provider, event.route, event.route_version,
        event.route_arm, cache_status, event.status, event.http_status, event.error_type, event.stream,
        usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_write_tokens,
        usage.reasoning_tokens, event.usage_estimated, usage.cost_usd, event.cost_saved_usd, event.latency_ms,
        event.ttft_ms, len(event.attempts), event.endpoint or "chat",
    )


@dataclass(frozen=True)
class Query:
    """A validated, scoped query. ``filters`` maps a dimension (or
    ``tag.<name>``) to the values it may take."""

    since_ms: int
    until_ms: int
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    group_by: tuple[str, ...] = ()
    order: str = "requests"
    limit: int = 20


@dataclass(frozen=True)
class Page:
    """Keyset paging of the request log: rows strictly older than (ts, id)."""

    limit: int
    before_ts_ms: int | None = None
    before_id: str = ""


class QueryTimeoutError(Exception):
    """The engine stopped a query at the store's time limit."""


class Store(Protocol):
    def insert(self, rows: Sequence[tuple[Any, ...]]) -> int: ...
    def summary(self, query: Query) -> list[dict[str, Any]]: ...
    def timeseries(self, query: Query, bucket_ms: int) -> list[dict[str, Any]]: ...
    def requests(self, query: Query, page: Page) -> list[dict[str, Any]]: ...
    def tags(self, query: Query) -> list[dict[str, Any]]: ...
    def count(self) -> int: ...
    def delete_before(self, ts_ms: int) -> int: ...
    def close(self) -> None: ...


# ----------------------------------------------------------------- SQL --


@dataclass
class Params:
    """Collects bound parameters; the dialect names their placeholders."""

    placeholder: Callable[[str, Any], str]
    values: dict[str, Any] = field(default_factory=dict)

    def __call__(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return self.placeholder(name, value)


@dataclass(frozen=True)
class Dialect:
    placeholder: Callable[[str, Any], str]
    count_if: Callable[[str], str]
    quantiles: Callable[[str, str], str]  # (column, condition) -> array of QUANTILES
    int_div: Callable[[str, int], str]
    tag_keys: str  # one row per tag name of a row
    table: str  # FROM clause for queries (ClickHouse adds FINAL)


def _column(dimension: str, params: Params) -> str:
    if dimension.startswith(TAG_PREFIX):
        # A missing tag reads as '' on both engines (DuckDB would say NULL).
        return f"coalesce(tags[{params(dimension[len(TAG_PREFIX):])}], '')"
    return DIMENSIONS[dimension]


def _where(query: Query, params: Params, extra: Sequence[str] = ()) -> str:
    clauses = [f"ts_ms >= {params(query.since_ms)}", f"ts_ms < {params(query.until_ms)}"]
    for dimension, values in query.filters:
        column = _column(dimension, params)
        typed = [int(v) for v in values] if dimension in INT_DIMENSIONS else list(values)
        clauses.append(f"{column} IN ({', '.join(params(v) for v in typed)})")
    clauses.extend(extra)
    return " AND ".join(clauses)


def _aggregates(d: Dialect) -> str:
    parts = [
        "count(*) AS requests",
        d.count_if("status = 'error'") + " AS errors",
        d.count_if("status = 'cancelled'") + " AS cancelled",
        d.count_if("cache_status = 'hit'") + " AS cache_hits",
        d.count_if("usage_estimated") + " AS estimated",
        *(f"sum({name}) AS {name}" for name in SUMS),
        d.quantiles("latency_ms", "status = 'ok'") + " AS latency_q",
        d.quantiles("ttft_ms", "ttft_ms > 0") + " AS ttft_q",
    ]
    return ", ".join(parts)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else round(value, 3)


def metrics_from(values: Sequence[Any]) -> dict[str, Any]:
    """Metrics of one aggregate row (``_aggregates`` order) as JSON-ready values."""
    out: dict[str, Any] = {}
    for name, value in zip((*COUNTS, *SUMS), values, strict=False):
        out[name] = float(value or 0) if name.startswith("cost") else int(value or 0)
    for prefix, array in (("latency", values[-2]), ("ttft", values[-1])):
        array = list(array) if array is not None else [None] * len(QUANTILES)
        for q, value in zip(QUANTILES, array, strict=True):
            out[f"{prefix}_p{round(q * 100)}_ms"] = _number(value)
    requests = out["requests"]
    out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
    out["error_rate"] = out["errors"] / requests if requests else None
    out["cache_hit_rate"] = out["cache_hits"] / requests if requests else None
    out["cost_usd"] = round(out["cost_usd"], 9)
    out["cost_saved_usd"] = round(out["cost_saved_usd"], 9)
    return out


def empty_metrics() -> dict[str, Any]:
    return metrics_from([0] * (len(COUNTS) + len(SUMS)) + [None, None])


def summary_sql(d: Dialect, query: Query) -> tuple[str, dict[str, Any], int]:
    """Aggregates per group (or one row of totals); returns the SQL, its
    parameters and how many leading group columns each row has."""
    params = Params(d.placeholder)
    groups = [_column(g, params) for g in query.group_by]
    select = ", ".join([*(f"{c} AS g{i}" for i, c in enumerate(groups)), _aggregates(d)])
    sql = f"SELECT {select} FROM {d.table} WHERE {_where(query, params)}"
    if groups:
        aliases = ", ".join(f"g{i}" for i in range(len(groups)))
        sql += f" GROUP BY {aliases} ORDER BY {query.order} DESC, {aliases} LIMIT {int(query.limit)}"
    return sql, params.values, len(groups)


def timeseries_sql(d: Dialect, query: Query, bucket_ms: int) -> tuple[str, dict[str, Any], int]:
    """Aggregates per (bucket, group); a group's values are limited by the
    caller (a filter on the top groups)."""
    params = Params(d.placeholder)
    groups = [_column(g, params) for g in query.group_by]
    bucket = f"{d.int_div('ts_ms', bucket_ms)} * {int(bucket_ms)}"
    select = ", ".join([f"{bucket} AS bucket", *(f"{c} AS g{i}" for i, c in enumerate(groups)), _aggregates(d)])
    keys = ", ".join(["bucket", *(f"g{i}" for i in range(len(groups)))])
    sql = f"SELECT {select} FROM {d.table} WHERE {_where(query, params)} GROUP BY {keys} ORDER BY {keys}"
    return sql, params.values, len(groups)


def requests_sql(d: Dialect, query: Query, page: Page) -> tuple[str, dict[str, Any]]:
    params = Params(d.placeholder)
    extra = []
    if page.before_ts_ms is not None:
        ts, rid = params(page.before_ts_ms), params(page.before_id)
        extra.append(f"(ts_ms < {ts} OR (ts_ms = {ts} AND request_id < {rid}))")
    sql = (f"SELECT {', '.join(COLUMN_NAMES)} FROM {d.table} WHERE {_where(query, params, extra)} "
           f"ORDER BY ts_ms DESC, request_id DESC LIMIT {int(page.limit)}")
    return sql, params.values


def tags_sql(d: Dialect, query: Query) -> tuple[str, dict[str, Any]]:
    """The tag names in use, by requests."""
    params = Params(d.placeholder)
    sql = (f"SELECT tag, count(*) AS requests, sum(cost_usd) AS cost_usd FROM "
           f"(SELECT {d.tag_keys} AS tag, cost_usd FROM {d.table} WHERE {_where(query, params)}) AS t "
           f"GROUP BY tag ORDER BY requests DESC, tag LIMIT {int(query.limit)}")
    return sql, params.values


def tag_rows(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return [{"tag": row[0], "requests": int(row[1]), "cost_usd": round(float(row[2] or 0), 9)} for row in rows]


def group_rows(rows: Sequence[Sequence[Any]], query: Query, width: int) -> list[dict[str, Any]]:
    return [{"key": {g: _key_value(v) for g, v in zip(query.group_by, row[:width], strict=True)},
             **metrics_from(row[width:])} for row in rows]


def series_rows(rows: Sequence[Sequence[Any]], query: Query, width: int) -> list[dict[str, Any]]:
    return [{"bucket": int(row[0]),
             "key": {g: _key_value(v) for g, v in zip(query.group_by, row[1:1 + width], strict=True)},
             **metrics_from(row[1 + width:])} for row in rows]


def request_rows(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        record = dict(zip(COLUMN_NAMES, row, strict=True))
        record["tags"] = dict(record["tags"] or {})
        record["stream"], record["usage_estimated"] = bool(record["stream"]), bool(record["usage_estimated"])
        out.append(record)
    return out


def _key_value(value: Any) -> Any:
    return value if value is not None else ""


def open_store(spec: AnalyticsSpec) -> Store:
    """The configured engine (imported only when chosen)."""
    if spec.store == "clickhouse":
        from analytics.clickhouse_store import ClickHouseStore, HttpClient

        assert spec.clickhouse_url
        return ClickHouseStore(HttpClient(spec.clickhouse_url), spec.clickhouse_database, spec.query_timeout_s)
    from analytics.duckdb_store import DuckDBStore

    return DuckDBStore(spec.path, spec.query_timeout_s)
