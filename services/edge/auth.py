"""API-key authentication: digests looked up by public prefix, compared in
constant time. The plain key is never stored or logged."""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from edge.conventions import API_KEY_HEADERS
from switchyard.config import ApiKeySpec, hash_key, key_prefix
from switchyard.errors import AuthenticationError

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    spec: ApiKeySpec


class KeyStore:
    """Keys from the config file, plus the managed keys (``managed_keys.py``)
    replaced as a whole whenever they change. A managed key never shadows a
    config key of the same id."""

    def __init__(self, specs: list[ApiKeySpec]) -> None:
        self._by_prefix: dict[str, list[_Entry]] = {}
        self._managed: dict[str, list[_Entry]] = {}
        self.config_ids = frozenset(spec.id for spec in specs)
        for spec in specs:
            if spec.key_env:
                plain = os.environ.get(spec.key_env)
                if not plain:
                    log.warning("api key %s: $%s is not set; the key is disabled", spec.id, spec.key_env)
                    continue
                digest, prefix = hash_key(plain), key_prefix(plain)
            else:
                digest, prefix = spec.sha256 or "", spec.prefix or ""
            self._by_prefix.setdefault(prefix, []).append(_Entry(bytes.fromhex(digest), spec))

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_prefix.values()) + sum(len(v) for v in self._managed.values())

    def set_managed(self, specs: dict[str, ApiKeySpec]) -> None:
        by_prefix: dict[str, list[_Entry]] = {}
        for spec in specs.values():
            if spec.sha256 and spec.prefix and spec.id not in self.config_ids:
                by_prefix.setdefault(spec.prefix, []).append(_Entry(bytes.fromhex(spec.sha256), spec))
        self._managed = by_prefix

    def authenticate(self, headers: Mapping[str, str]) -> ApiKeySpec:
        key = presented_key(headers)
        if not key:
            raise AuthenticationError("You didn't provide an API key. Send it as 'Authorization: Bearer <key>' "
                                      "or in an 'api-key' header.")
        digest = bytes.fromhex(hash_key(key))
        found: ApiKeySpec | None = None
        prefix = key_prefix(key)
        for entry in (*self._by_prefix.get(prefix, ()), *self._managed.get(prefix, ())):
            if hmac.compare_digest(entry.digest, digest):
                found = entry.spec
        if found is None:
            raise AuthenticationError("Incorrect API key provided.")
        if found.expires_at is not None and found.expires_at <= datetime.now(UTC):
            raise AuthenticationError("This API key has expired.", code="expired_api_key")
        return found


def presented_key(headers: Mapping[str, str]) -> str:
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
    for name in API_KEY_HEADERS:
        value = headers.get(name)
        if value:
            return value.strip()
    return ""
