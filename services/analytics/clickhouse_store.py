"""ClickHouse, for deployments that outgrow one machine.

Production talks to a ClickHouse server through ``clickhouse-connect`` (the
maintained HTTP client); the test suite and the benchmarks run the very same
SQL on the embedded engine (``chdb``), so the schema and every query are
checked against real ClickHouse.

Idempotency: ClickHouse has no unique keys, so ``insert`` first looks up
which of the batch's request ids are already stored (a bloom-filter index on
the id, narrowed by the batch's time range) and writes only the new rows.
With one writer that is exact; the table is a ``ReplacingMergeTree`` keyed
by the request id and queries read it with ``FINAL``, so even two writers
racing on one id never count it twice.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from analytics import store
from analytics.store import COLUMN_NAMES, COLUMNS, TABLE, Dialect, Page, Query


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "Bool"
    if isinstance(value, int):
        return "Int64"
    if isinstance(value, float):
        return "Float64"
    if isinstance(value, list):
        return "Array(String)"
    return "String"


def dialect(database: str) -> Dialect:
    quantiles = ", ".join(str(q) for q in store.QUANTILES)
    return Dialect(
        placeholder=lambda name, value: f"{{{name}:{_type_of(value)}}}",
        count_if=lambda condition: f"countIf({condition})",
        quantiles=lambda column, condition: f"quantilesExactInclusiveIf({quantiles})({column}, {condition})",
        int_div=lambda column, divisor: f"intDiv({column}, {int(divisor)})",
        tag_keys="arrayJoin(mapKeys(tags))",
        table=f"{database}.{TABLE} FINAL",
    )


class Client(Protocol):
    """The three things the store needs from a ClickHouse connection."""

    def command(self, sql: str) -> None: ...
    def insert_json(self, table: str, data: bytes) -> None: ...
    def select(self, sql: str, params: dict[str, Any]) -> list[Sequence[Any]]: ...


class ClickHouseStore:
    def __init__(self, client: Client, database: str = "switchyard", query_timeout_s: float = 30.0) -> None:
        self._client = client
        # The engine stops a query at this limit (ClickHouse error TIMEOUT_EXCEEDED).
        self._limit = f" SETTINGS max_execution_time = {max(1, round(query_timeout_s))}"
        self._table = f"{database}.{TABLE}"
        self._dialect = dialect(database)
        client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        columns = ", ".join(f"{name} {kind}" for name, _, kind in COLUMNS)
        client.command(
            f"CREATE TABLE IF NOT EXISTS {self._table} ({columns}, "
            "INDEX request_id_bloom request_id TYPE bloom_filter GRANULARITY 4) "
            "ENGINE = ReplacingMergeTree "
            "PARTITION BY toYYYYMM(toDateTime(intDiv(ts_ms, 1000))) "
            "ORDER BY (tenant, ts_ms, request_id)")
        kinds = {name: kind for name, _, kind in COLUMNS}
        for name, default in store.ADDED:  # a table made by an older release
            client.command(f"ALTER TABLE {self._table} ADD COLUMN IF NOT EXISTS {name} {kinds[name]} "
                           f"DEFAULT '{default}'")
        self._write = threading.Lock()

    def insert(self, rows: Sequence[tuple[Any, ...]]) -> int:
        unique = list({row[0]: row for row in reversed(rows)}.values())
        if not unique:
            return 0
        with self._write:
            stored = {row[0] for row in self._client.select(
                f"SELECT request_id FROM {self._table} WHERE ts_ms >= {{lo:Int64}} AND ts_ms <= {{hi:Int64}} "
                "AND request_id IN {ids:Array(String)}",
                {"lo": min(r[1] for r in unique), "hi": max(r[1] for r in unique), "ids": [r[0] for r in unique]})}
            new = [row for row in unique if row[0] not in stored]
            if new:
                self._client.insert_json(self._table, b"\n".join(
                    orjson.dumps(dict(zip(COLUMN_NAMES, row, strict=True))) for row in new))
        return len(new)

    def summary(self, query: Query) -> list[dict[str, Any]]:
        sql, params, width = store.summary_sql(self._dialect, query)
        return store.group_rows(self._select(sql, params), query, width)

    def timeseries(self, query: Query, bucket_ms: int) -> list[dict[str, Any]]:
        sql, params, width = store.timeseries_sql(self._dialect, query, bucket_ms)
        return store.series_rows(self._select(sql, params), query, width)

    def requests(self, query: Query, page: Page) -> list[dict[str, Any]]:
        sql, params = store.requests_sql(self._dialect, query, page)
        return store.request_rows(self._select(sql, params))

    def tags(self, query: Query) -> list[dict[str, Any]]:
        sql, params = store.tags_sql(self._dialect, query)
        return store.tag_rows(self._select(sql, params))

    def count(self) -> int:
        return int(self._select(f"SELECT count() FROM {self._table} FINAL", {})[0][0])

    def delete_before(self, ts_ms: int) -> int:
        """Delete the requests that started before ``ts_ms`` (a lightweight
        delete: the rows vanish from queries at once, from disk at the next
        merge); how many."""
        with self._write:
            (found,) = self._select(f"SELECT count() FROM {self._table} FINAL WHERE ts_ms < {{cut:Int64}}",
                                    {"cut": ts_ms})[0]
            if found:
                self._client.command(f"DELETE FROM {self._table} WHERE ts_ms < {int(ts_ms)}")
        return int(found)

    def _select(self, sql: str, params: dict[str, Any]) -> list[Sequence[Any]]:
        try:
            return self._client.select(sql + self._limit, params)
        except Exception as exc:
            if "TIMEOUT_EXCEEDED" in str(exc):
                raise store.QueryTimeoutError(str(exc)) from None
            raise

    def close(self) -> None:
        pass


class HttpClient:
    """A ClickHouse server over HTTP(S): ``http://user:password@host:8123``."""

    def __init__(self, url: str) -> None:
        import clickhouse_connect

        self._client = clickhouse_connect.get_client(dsn=url, autogenerate_session_id=False)

    def command(self, sql: str) -> None:
        self._client.command(sql)

    def insert_json(self, table: str, data: bytes) -> None:
        self._client.raw_insert(table, insert_block=data, fmt="JSONEachRow")

    def select(self, sql: str, params: dict[str, Any]) -> list[Sequence[Any]]:
        return list(self._client.query(sql, parameters=params).result_rows)


def _literal(value: Any) -> str:
    """A ClickHouse literal (array elements)."""
    if isinstance(value, list):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value).lower() if isinstance(value, bool) else str(value)


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def text_parameter(value: Any) -> str:
    """A query parameter as ClickHouse parses it from text (the HTTP
    interface's ``param_*``): escaped like TSV; arrays as literals."""
    text = _literal(value) if isinstance(value, list | bool) else str(value)
    return text.translate(_ESCAPES)


class ChdbClient:
    """The same engine in-process (``chdb``): tests and benchmarks."""

    def __init__(self, path: str) -> None:
        from chdb import session

        self._session = session.Session(path)
        self._lock = threading.Lock()  # one query at a time per embedded session

    def command(self, sql: str) -> None:
        with self._lock:
            self._session.query(sql)

    def insert_json(self, table: str, data: bytes) -> None:
        with self._lock:
            self._session.query(f"INSERT INTO {table} FORMAT JSONEachRow\n" + data.decode())

    def select(self, sql: str, params: dict[str, Any]) -> list[Sequence[Any]]:
        text = {name: text_parameter(value) for name, value in params.items()}
        with self._lock:
            try:
                result = self._session.query(sql, "JSONCompact", params=text)
            except Exception:
                # chdb leaves a failed query's partial output in front of the next result: drain it.
                with contextlib.suppress(Exception):
                    self._session.query("SELECT 1", "JSONCompact")
                raise
        return orjson.loads(result.bytes())["data"] if result.bytes() else []

    def close(self) -> None:
        self._session.close()
