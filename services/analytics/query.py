"""Query parameters of the analytics API: parsed, bounded and scoped once.

Every parameter the API accepts is declared in ``PARAMETERS`` (the edge's
OpenAPI document is tested against it); anything else, or a value out of
range, is an ``InvalidRequestError`` naming the parameter. ``scope`` applies
the caller's identity: an admin sees every tenant, a client only its own.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from multidict import MultiMapping

from analytics.store import DIMENSIONS, INT_DIMENSIONS, ORDERABLE, TAG_PREFIX, Page, Query
from switchyard.errors import InvalidRequestError, PermissionDeniedError

BUCKETS = {"minute": 60_000, "hour": 3600_000, "day": 86400_000}
MAX_BUCKETS = 2000
MAX_VALUES = 100
MAX_VALUE_CHARS = 256
_RELATIVE = re.compile(r"^(\d{1,6})([smhdw])$")
_UNITS = {"s": 1000, "m": 60_000, "h": 3600_000, "d": 86400_000, "w": 7 * 86400_000}
_TAG = re.compile(r"^tag\.[A-Za-z0-9_.:-]{1,64}$")

# name -> (endpoints, description). Dimensions and tag.<name> filters come on top.
PARAMETERS: dict[str, tuple[tuple[str, ...], str]] = {
    "since": (("summary", "timeseries", "requests", "tags"),
              "Start (inclusive): a duration back from now (30m, 24h, 7d), ISO 8601, or epoch milliseconds. "
              "Default 24h."),
    "until": (("summary", "timeseries", "requests", "tags"), "End (exclusive), same forms as since. Default now."),
    "group_by": (("summary", "timeseries"),
                 "Comma-separated dimensions or tag.<name> (summary: up to 3; timeseries: 1)."),
    "order": (("summary", "timeseries"), f"Metric ranking the groups: {', '.join(ORDERABLE)}. Default requests."),
    "limit": (("summary", "timeseries", "requests", "tags"),
              "Groups (summary and tags 1-1000, default 20; timeseries 1-50, default 10) or rows (requests "
              "1-1000, default 50)."),
    "bucket": (("timeseries",), "minute, hour or day (UTC). Default hour; at most 2000 buckets per range."),
    "cursor": (("requests",), "next_cursor of the previous page."),
}
LIMITS = {"summary": (20, 1000), "timeseries": (10, 50), "requests": (50, 1000), "tags": (20, 1000)}
MAX_GROUP_BY = {"summary": 3, "timeseries": 1}


@dataclass(frozen=True)
class Identity:
    role: str
    tenant: str
    key_id: str


def _time(name: str, raw: str, now_ms: int) -> int:
    match = _RELATIVE.match(raw)
    if match:
        return now_ms - int(match.group(1)) * _UNITS[match.group(2)]
    if raw.isdigit():
        return int(raw)
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(f"{name} must be a duration like 24h, an ISO 8601 time or epoch milliseconds",
                                  param=name) from None
    if parsed.tzinfo is None:
        raise InvalidRequestError(f"{name} needs a time zone (e.g. Z)", param=name)
    return int(parsed.timestamp() * 1000)


def _dimension(name: str, param: str) -> str:
    if name in DIMENSIONS or _TAG.match(name):
        return name
    raise InvalidRequestError(f"unknown dimension {name!r}: use one of {', '.join(DIMENSIONS)} or tag.<name>",
                              param=param)


def _int(params: MultiMapping[str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidRequestError(f"{name} must be an integer from {low} to {high}", param=name)
    return int(raw)


def parse(endpoint: str, params: MultiMapping[str], now_ms: int | None = None) -> tuple[Query, dict[str, Any]]:
    """The ``Query`` for one endpoint plus its endpoint-specific options
    (``bucket_ms`` or ``page``)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    filters: dict[str, list[str]] = {}
    for name in params:
        if name in PARAMETERS:
            if endpoint not in PARAMETERS[name][0]:
                raise InvalidRequestError(f"{name} is not a parameter of {endpoint}", param=name)
            if len(params.getall(name)) > 1:
                raise InvalidRequestError(f"{name} may be given once", param=name)
        elif name in DIMENSIONS or name.startswith(TAG_PREFIX):
            filters.setdefault(_dimension(name, name), [])
        else:
            raise InvalidRequestError(f"unknown parameter {name!r}", param=name)
    for name in filters:
        values = params.getall(name)
        if len(values) > MAX_VALUES or any(len(v) > MAX_VALUE_CHARS for v in values):
            raise InvalidRequestError(f"{name}: at most {MAX_VALUES} values of {MAX_VALUE_CHARS} characters",
                                      param=name)
        if name in INT_DIMENSIONS and not all(v.isdigit() and len(v) < 10 for v in values):
            raise InvalidRequestError(f"{name} must be an integer", param=name)
        filters[name] = list(dict.fromkeys(values))

    since = _time("since", params.get("since", "24h"), now_ms)
    until = _time("until", params["until"], now_ms) if "until" in params else now_ms
    if since >= until:
        raise InvalidRequestError("since must be earlier than until", param="since")

    group_by: tuple[str, ...] = ()
    if "group_by" in params:
        group_by = tuple(_dimension(g.strip(), "group_by") for g in params["group_by"].split(",") if g.strip())
        if not group_by or len(group_by) > MAX_GROUP_BY[endpoint] or len(set(group_by)) != len(group_by):
            raise InvalidRequestError(f"group_by takes 1 to {MAX_GROUP_BY[endpoint]} distinct dimensions",
                                      param="group_by")
    order = params.get("order", "requests")
    if order not in ORDERABLE:
        raise InvalidRequestError(f"order must be one of {', '.join(ORDERABLE)}", param="order")
    default, high = LIMITS[endpoint]
    limit = _int(params, "limit", default, 1, high)
    query = Query(since_ms=since, until_ms=until, filters=tuple((k, tuple(v)) for k, v in filters.items()),
                  group_by=group_by, order=order, limit=limit)

    options: dict[str, Any] = {}
    if endpoint == "timeseries":
        bucket = params.get("bucket", "hour")
        if bucket not in BUCKETS:
            raise InvalidRequestError("bucket must be minute, hour or day", param="bucket")
        bucket_ms = BUCKETS[bucket]
        if (until - since) // bucket_ms > MAX_BUCKETS:
            raise InvalidRequestError(f"more than {MAX_BUCKETS} {bucket} buckets in this range: use a larger "
                                      "bucket or a shorter range", param="bucket")
        options.update(bucket=bucket, bucket_ms=bucket_ms)
    if endpoint == "requests":
        options["page"] = _page(params.get("cursor"), limit)
    return query, options


def _page(cursor: str | None, limit: int) -> Page:
    if cursor is None:
        return Page(limit=limit)
    try:
        ts, _, request_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        return Page(limit=limit, before_ts_ms=int(ts), before_id=request_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError("cursor is not a next_cursor value", param="cursor") from None


def cursor_after(row: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(f"{row['ts_ms']}:{row['request_id']}".encode()).decode()


def scope(query: Query, identity: Identity) -> Query:
    """Admins see everything; a client key only its own tenant (asking for
    another tenant is refused rather than silently emptied)."""
    if identity.role == "admin":
        return query
    filters = dict(query.filters)
    asked = filters.get("tenant")
    if asked is not None and set(asked) != {identity.tenant}:
        raise PermissionDeniedError("this key may only read its own tenant's usage", param="tenant",
                                    code="tenant_not_allowed")
    filters["tenant"] = (identity.tenant,)
    return replace(query, filters=tuple(filters.items()))
