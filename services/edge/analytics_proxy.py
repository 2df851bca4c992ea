"""The analytics routes, proxied to the internal analytics service.

The edge authenticates the API key and forwards the request with only the
key's identity (role, tenant, key id): no client header crosses the hop, so
a client cannot claim another identity. The dashboard page and its static
files need no key (they hold no data; the page asks for one). Responses are
bounded in size and time; an unreachable analytics service is a 503.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from aiohttp import web

from edge.auth import KeyStore
from switchyard.config import Config
from switchyard.errors import InvalidRequestError, SwitchyardError, UnavailableError

log = logging.getLogger(__name__)

PREFIX = "/v1/analytics"
PUBLIC = ("/v1/analytics/dashboard", "/v1/analytics/healthz")
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
PASSED_HEADERS = ("content-type", "cache-control", "retry-after", "content-security-policy",
                  "x-content-type-options", "referrer-policy")
PROXY = web.AppKey("analytics_proxy", object)


def _error(exc: SwitchyardError) -> web.Response:
    response = web.json_response(exc.envelope(), status=exc.status)
    if exc.retry_after_ms:
        response.headers["retry-after"] = str(max(1, exc.retry_after_ms // 1000))
    return response


class AnalyticsProxy:
    def __init__(self, config: Config, target: str, timeout_s: float = 60.0, keys: KeyStore | None = None) -> None:
        self.keys = keys if keys is not None else KeyStore(config.api_keys)
        self.target = target
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, connect=5)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            if self.target.startswith("unix:"):
                connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=self.target[5:], limit=64)
                self._base = "http://analytics"
            else:
                connector = aiohttp.TCPConnector(limit=64)
                self._base = f"http://{self.target}"
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout, auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            if request.method not in ("GET", "HEAD"):
                raise InvalidRequestError(f"{request.method} is not allowed here; use GET", code="method_not_allowed")
            headers = {"x-request-id": request.headers.get("x-request-id", "")[:128]}
            if not request.path.startswith(PUBLIC):
                spec = self.keys.authenticate(request.headers)
                headers.update({"x-switchyard-role": spec.role, "x-switchyard-tenant": spec.tenant,
                                "x-switchyard-key-id": spec.id})
            return await self._forward(request, headers)
        except SwitchyardError as exc:
            return _error(exc)

    async def _forward(self, request: web.Request, headers: dict[str, str]) -> web.Response:
        session = self._client()
        try:
            async with session.get(self._base + request.rel_url.raw_path_qs, headers=headers,
                                   allow_redirects=False) as upstream:
                body = await upstream.content.read(MAX_RESPONSE_BYTES + 1)
                if len(body) > MAX_RESPONSE_BYTES:
                    raise UnavailableError("the analytics answer is too large; narrow the query",
                                           code="response_too_large")
                passed: dict[str, Any] = {k: upstream.headers[k] for k in PASSED_HEADERS if k in upstream.headers}
                return web.Response(status=upstream.status, body=body, headers=passed)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("analytics unreachable: %s", type(exc).__name__)
            raise UnavailableError("the analytics service is not available", retry_after_ms=1000) from None


def register(app: web.Application, config: Config, target: str, keys: KeyStore | None = None) -> None:
    """Add the /v1/analytics routes (before any catch-all route) proxied to
    the analytics service at ``target``; ``keys``: the edge's key store
    (managed keys included)."""
    proxy = AnalyticsProxy(config, target, keys=keys)
    app[PROXY] = proxy
    app.router.add_route("*", PREFIX + "/{tail:.*}", proxy.handle)

    async def _close(_: web.Application) -> None:
        await proxy.close()

    app.on_cleanup.append(_close)


# ------------------------------------------------------- OpenAPI document --
# The analytics service validates these parameters (analytics/query.py); a
# unit test keeps this description equal to what it accepts.

_COMMON = {
    "since": "Start (inclusive): a duration back from now (30m, 24h, 7d), ISO 8601, or epoch milliseconds. "
             "Default 24h.",
    "until": "End (exclusive), same forms as since. Default now.",
}
_ENDPOINT_PARAMETERS = {
    "summary": {**_COMMON, "group_by": "Comma-separated dimensions or tag.<name>, up to 3.",
                "order": "requests, errors, cost_usd, prompt_tokens, completion_tokens or cache_hits.",
                "limit": "Groups, 1-1000 (default 20)."},
    "timeseries": {**_COMMON, "bucket": "minute, hour or day (UTC); at most 2000 buckets. Default hour.",
                   "group_by": "One dimension or tag.<name>: one series per top group.",
                   "order": "Metric ranking the groups (as in summary).", "limit": "Series, 1-50 (default 10)."},
    "requests": {**_COMMON, "limit": "Rows, 1-1000 (default 50), newest first.",
                 "cursor": "next_cursor of the previous page."},
    "tags": {**_COMMON, "limit": "Tag names, 1-1000 (default 20)."},
}
FILTERS = ("model", "model_requested", "provider", "route", "version", "arm", "key", "tenant", "end_user",
           "session", "status", "cache_status", "error_type", "endpoint")
_METRICS = {
    "requests": "integer", "errors": "integer", "cancelled": "integer", "cache_hits": "integer",
    "estimated": "integer", "prompt_tokens": "integer", "completion_tokens": "integer", "cached_tokens": "integer",
    "cache_write_tokens": "integer", "reasoning_tokens": "integer", "cost_usd": "number",
    "cost_saved_usd": "number", "total_tokens": "integer", "error_rate": "number", "cache_hit_rate": "number",
    "latency_p50_ms": "number", "latency_p95_ms": "number", "latency_p99_ms": "number", "ttft_p50_ms": "number",
    "ttft_p95_ms": "number", "ttft_p99_ms": "number",
}
_DESCRIPTIONS = {
    "summary": "Totals, and per group when group_by is given.",
    "timeseries": "Metrics per time bucket (empty buckets included), per top group when group_by is given.",
    "requests": "The per-request log, newest first, paged with next_cursor.",
    "tags": "Tag names in use, by requests.",
}


def _metrics_schema(array: bool) -> dict[str, Any]:
    def kind(t: str) -> dict[str, Any]:
        one = {"type": [t, "null"]}
        return {"type": "array", "items": one} if array else one

    return {"type": "object", "properties": {name: kind(t) for name, t in _METRICS.items()}}


def openapi_paths() -> dict[str, Any]:
    """The analytics paths of the edge's OpenAPI document."""
    error = {"description": "OpenAI error envelope",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    key = {"type": "object", "additionalProperties": True, "description": "the group's dimension values"}
    bodies = {
        "summary": {"type": "object", "properties": {
            "totals": _metrics_schema(False),
            "groups": {"type": "array", "items": {"allOf": [{"type": "object", "properties": {"key": key}},
                                                            _metrics_schema(False)]}}}},
        "timeseries": {"type": "object", "properties": {
            "bucket_ms": {"type": "integer"}, "buckets": {"type": "array", "items": {"type": "integer"}},
            "series": {"type": "array", "items": {"allOf": [{"type": "object", "properties": {"key": key}},
                                                            _metrics_schema(True)]}}}},
        "requests": {"type": "object", "properties": {
            "data": {"type": "array", "items": {"type": "object"}}, "next_cursor": {"type": ["string", "null"]}}},
        "tags": {"type": "object", "properties": {"data": {"type": "array", "items": {"type": "object"}}}},
    }
    paths: dict[str, Any] = {}
    for endpoint, params in _ENDPOINT_PARAMETERS.items():
        parameters = [{"name": name, "in": "query", "required": False, "description": text,
                       "schema": {"type": "string"}} for name, text in params.items()]
        parameters += [{"name": name, "in": "query", "required": False, "explode": True,
                        "description": f"Only these {name} values (repeat the parameter for several).",
                        "schema": {"type": "array", "items": {"type": "string"}}} for name in FILTERS]
        parameters.append({"name": "tag.<name>", "in": "query", "required": False,
                           "description": "Only requests whose tag <name> has this value (e.g. tag.feature=chat).",
                           "schema": {"type": "string"}})
        paths[f"{PREFIX}/{endpoint}"] = {"get": {
            "operationId": f"analytics{endpoint.capitalize()}", "tags": ["analytics"],
            "description": _DESCRIPTIONS[endpoint] + " Admin keys see every tenant; other keys their own tenant.",
            "parameters": parameters,
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": bodies[endpoint]}}},
                          **{str(code): error for code in (400, 401, 403, 503)}}}}
    paths[f"{PREFIX}/dashboard"] = {"get": {
        "operationId": "analyticsDashboard", "tags": ["analytics"], "security": [],
        "description": "The usage dashboard (HTML). Open it with #key=<api key> or paste a key.",
        "responses": {"200": {"description": "HTML page", "content": {"text/html": {}}}}}}
    return paths


def with_paths(document: dict[str, Any]) -> dict[str, Any]:
    document["paths"].update(openapi_paths())
    return document
