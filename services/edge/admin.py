"""The admin API, for admin keys only: ``/admin/keys`` (managed API keys,
``managed_keys.py``) and ``/admin/cache/purge``.

- ``POST /admin/keys`` creates a key: the body is the key's settings (id,
  tenant, allowed_models, default_model, expires_at, metadata, limits,
  end_user_limits, budgets, max_concurrent; as in the config file's
  ``api_keys``). The answer holds the plain key, the only time it is shown.
- ``GET /admin/keys`` lists managed and config keys (never a digest or key);
  ``GET /admin/keys/{id}`` shows one, with what each of its budgets (and its
  tenant's) has spent and holds reserved in the current period (``spend``);
  ``?end_user=`` adds that end user's budgets under the key.
- ``POST /admin/keys/{id}/rotate`` gives the key a new secret (the old one
  stops working); ``DELETE /admin/keys/{id}`` revokes it.

Managed keys are client keys; admin keys come only from the config file,
which also holds the keys this API cannot change.

``POST /admin/cache/purge`` with ``{"tenant": "..."}`` removes that tenant's
cached answers, with ``{"all": true}`` every tenant's, from the shared cache
and every router replica's memory (``router/cache_store.py``); the answer
says how many stored values went."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import orjson
from aiohttp import web
from nats.js.errors import KeyWrongLastSequenceError
from pydantic import ValidationError

from edge.auth import KeyStore
from edge.managed_keys import KeyExistsError, ManagedKeys
from switchyard.config import ApiKeySpec, hash_key, key_prefix
from switchyard.errors import (
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    SwitchyardError,
    UnavailableError,
)
from switchyard.v1 import router_pb2 as rpb

MAX_BODY_BYTES = 64 * 1024
SETTABLE = frozenset({"id", "tenant", "allowed_models", "default_model", "expires_at", "metadata", "limits",
                      "end_user_limits", "budgets", "max_concurrent"})


def new_secret() -> str:
    return "sy_" + secrets.token_urlsafe(32)


def public_view(spec: ApiKeySpec, source: str) -> dict[str, Any]:
    """What an admin may see of a key: never its digest."""
    out = spec.model_dump(mode="json", exclude_none=True, exclude={"sha256", "key_env"})
    out["source"] = source
    if spec.expires_at is not None:
        out["expired"] = spec.expires_at <= datetime.now(UTC)
    return out


BudgetStatus = Callable[[ApiKeySpec, str], Awaitable[rpb.BudgetStatusResponse]]
PurgeCache = Callable[[rpb.PurgeCacheRequest], Awaitable[rpb.PurgeCacheResponse]]
MAX_END_USER_CHARS = 256
MAX_TENANT_CHARS = 256


def require_admin(keys: KeyStore, request: web.Request, what: str) -> None:
    if keys.authenticate(request.headers).role != "admin":
        raise PermissionDeniedError(f"{what} needs an admin key", code="admin_key_required")


class KeysAdmin:
    def __init__(self, keys: KeyStore, managed: ManagedKeys | None, config_keys: list[ApiKeySpec],
                 budget_status: BudgetStatus | None = None) -> None:
        self.keys = keys
        self.managed = managed
        self.config_keys = {spec.id: spec for spec in config_keys}
        self.budget_status = budget_status

    def register(self, app: web.Application) -> None:
        for base in ("/admin/keys", "/v1/admin/keys"):
            app.router.add_post(base, self.create)
            app.router.add_get(base, self.list)
            app.router.add_get(base + "/{key_id}", self.show)
            app.router.add_delete(base + "/{key_id}", self.revoke)
            app.router.add_post(base + "/{key_id}/rotate", self.rotate)

    def _admin(self, request: web.Request) -> None:
        require_admin(self.keys, request, "managing keys")

    def _store(self) -> ManagedKeys:
        if self.managed is None or not self.managed.ready:
            raise UnavailableError("the key store (NATS) is not reachable; keys cannot be changed now",
                                   code="key_store_unavailable", retry_after_ms=1000)
        return self.managed

    async def create(self, request: web.Request) -> web.Response:
        try:
            self._admin(request)
            body = await _json_body(request)
            unknown = sorted(set(body) - SETTABLE)
            if unknown:
                raise InvalidRequestError(f"unknown field {unknown[0]!r}", param=unknown[0])
            key_id = body.get("id") or "key-" + secrets.token_hex(6)
            if key_id in self.config_keys:
                raise InvalidRequestError(f"a key {key_id!r} exists in the config file", param="id",
                                          code="key_exists")
            secret = new_secret()
            spec = _validated({**body, "id": key_id, "sha256": hash_key(secret), "prefix": key_prefix(secret)})
            try:
                await self._store().create(spec)
            except KeyExistsError:
                raise InvalidRequestError(f"a key {key_id!r} already exists", param="id", code="key_exists") \
                    from None
        except SwitchyardError as exc:
            return _error(exc)
        return _json({**public_view(spec, "managed"), "key": secret}, status=201)

    async def list(self, request: web.Request) -> web.Response:
        try:
            self._admin(request)
        except SwitchyardError as exc:
            return _error(exc)
        managed = self.managed.keys if self.managed is not None else {}
        data = [public_view(spec, "config") for spec in self.config_keys.values()]
        data += [public_view(spec, "managed") for key_id, spec in sorted(managed.items())
                 if key_id not in self.config_keys]
        return _json({"object": "list", "data": data})

    async def show(self, request: web.Request) -> web.Response:
        try:
            self._admin(request)
            key_id = request.match_info["key_id"]
            end_user = request.query.get("end_user", "")
            if len(end_user) > MAX_END_USER_CHARS:
                raise InvalidRequestError(f"end_user is longer than {MAX_END_USER_CHARS} characters",
                                          param="end_user")
            if key_id in self.config_keys:
                spec, source = self.config_keys[key_id], "config"
            else:
                spec, _ = await self._managed(key_id)
                source = "managed"
        except SwitchyardError as exc:
            return _error(exc)
        return _json({**public_view(spec, source), **await self._spend(spec, end_user)})

    async def _spend(self, spec: ApiKeySpec, end_user: str) -> dict[str, Any]:
        """``spend``: each budget of the key and of its tenant (and of
        ``end_user`` under the key, when given) with what it has spent and
        holds reserved now; ``spend_error`` instead when the ledgers cannot be
        read (the key itself is still shown)."""
        if self.budget_status is None:
            return {}
        try:
            status = await self.budget_status(spec, end_user)
        except grpc.aio.AioRpcError as exc:
            return {"spend_error": f"budgets could not be read: {exc.code().name}"}
        return {"spend": [{"scope": b.scope, **({"end_user": b.end_user} if b.end_user else {}), "period": b.period,
                           **({"window_s": b.window_s} if b.window_s else {}),
                           "usd": b.usd, "spent_usd": round(b.spent_usd, 9), "reserved_usd": round(b.reserved_usd, 9),
                           "remaining_usd": round(max(b.usd - b.spent_usd - b.reserved_usd, 0.0), 9),
                           "hard": b.hard} for b in status.budgets]}

    async def rotate(self, request: web.Request) -> web.Response:
        try:
            self._admin(request)
            spec, revision = await self._managed(request.match_info["key_id"])
            secret = new_secret()
            rotated = spec.model_copy(update={"sha256": hash_key(secret), "prefix": key_prefix(secret)})
            try:
                await self._store().replace(rotated, revision)
            except KeyWrongLastSequenceError:
                raise UnavailableError("the key changed while it was rotated; try again", code="conflict") \
                    from None
        except SwitchyardError as exc:
            return _error(exc)
        return _json({**public_view(rotated, "managed"), "key": secret})

    async def revoke(self, request: web.Request) -> web.Response:
        try:
            self._admin(request)
            key_id = request.match_info["key_id"]
            _, revision = await self._managed(key_id)
            try:
                await self._store().revoke(key_id, revision)
            except KeyWrongLastSequenceError:
                raise UnavailableError("the key changed while it was revoked; try again", code="conflict") \
                    from None
        except SwitchyardError as exc:
            return _error(exc)
        return _json({"id": key_id, "revoked": True})

    async def _managed(self, key_id: str) -> tuple[ApiKeySpec, int]:
        if key_id in self.config_keys:
            raise InvalidRequestError(f"key {key_id!r} is in the config file; change it there", param="id",
                                      code="config_key")
        found = await self._store().get(key_id)
        if found is None:
            raise NotFoundError(f"no key {key_id!r}", code="key_not_found")
        return found


class CacheAdmin:
    def __init__(self, keys: KeyStore, purge: PurgeCache) -> None:
        self.keys = keys
        self._purge = purge

    def register(self, app: web.Application) -> None:
        for base in ("/admin/cache", "/v1/admin/cache"):
            app.router.add_post(base + "/purge", self.purge)

    async def purge(self, request: web.Request) -> web.Response:
        try:
            require_admin(self.keys, request, "purging the cache")
            body = await _json_body(request)
            message = purge_request(body)
            try:
                done = await self._purge(message)
            except grpc.aio.AioRpcError as exc:
                raise UnavailableError(f"the cache could not be purged: {exc.details() or exc.code().name}",
                                       code="cache_store_unavailable", retry_after_ms=1000) from None
        except SwitchyardError as exc:
            return _error(exc)
        return _json({"object": "cache.purge", "tenant": message.tenant if not message.all else None,
                      "all": message.all, "purged": done.purged})


def purge_request(body: dict[str, Any]) -> rpb.PurgeCacheRequest:
    """The purge body, checked: exactly one of ``tenant`` (a name) and ``all`` (true)."""
    unknown = sorted(set(body) - {"tenant", "all"})
    if unknown:
        raise InvalidRequestError(f"unknown field {unknown[0]!r}", param=unknown[0])
    tenant, everything = body.get("tenant"), body.get("all", False)
    if not isinstance(everything, bool):
        raise InvalidRequestError("all must be a boolean", param="all")
    if everything:
        if tenant is not None:
            raise InvalidRequestError("give either tenant or all, not both", param="tenant")
        return rpb.PurgeCacheRequest(all=True)
    if tenant is None:
        raise InvalidRequestError("give the tenant whose entries to purge, or all: true", param="tenant")
    if not isinstance(tenant, str) or not tenant or len(tenant) > MAX_TENANT_CHARS:
        raise InvalidRequestError(f"tenant must be a name of 1 to {MAX_TENANT_CHARS} characters", param="tenant")
    return rpb.PurgeCacheRequest(tenant=tenant)


def _validated(data: dict[str, Any]) -> ApiKeySpec:
    try:
        return ApiKeySpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequestError(f"{param}: {first['msg']}" if param else first["msg"], param=param) from None


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise InvalidRequestError(f"the body exceeds {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequestError(f"the body exceeds {MAX_BODY_BYTES} bytes")
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise InvalidRequestError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    return body


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _error(exc: SwitchyardError) -> web.Response:
    response = _json(exc.envelope(), exc.status)
    if exc.retry_after_ms:
        response.headers["retry-after"] = str(max(1, exc.retry_after_ms // 1000))
    return response
