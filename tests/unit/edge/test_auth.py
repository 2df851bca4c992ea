from __future__ import annotations

import secrets

import pytest

from edge.auth import KeyStore
from switchyard.config import ApiKeySpec, hash_key, key_prefix
from switchyard.errors import AuthenticationError


def _store(monkeypatch: pytest.MonkeyPatch) -> tuple[KeyStore, str, str]:
    stored = "sy_" + secrets.token_hex(20)
    from_env = "sy_" + secrets.token_hex(20)
    monkeypatch.setenv("TEST_SY_KEY", from_env)
    specs = [ApiKeySpec(id="stored", sha256=hash_key(stored), prefix=key_prefix(stored)),
             ApiKeySpec(id="env", key_env="TEST_SY_KEY", tenant="t2"),
             ApiKeySpec(id="unset", key_env="TEST_SY_KEY_UNSET")]
    return KeyStore(specs), stored, from_env


def test_bearer_and_header_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    store, stored, from_env = _store(monkeypatch)
    assert len(store) == 2  # the unset env key is disabled, not accepted
    assert store.authenticate({"authorization": f"Bearer {stored}"}).id == "stored"
    assert store.authenticate({"api-key": from_env}).tenant == "t2"
    assert store.authenticate({"x-muxx-api-key": stored}).id == "stored"


@pytest.mark.parametrize("headers", [{}, {"authorization": "Basic abc"}, {"authorization": "Bearer "}])
def test_missing_key(monkeypatch: pytest.MonkeyPatch, headers: dict[str, str]) -> None:
    store, _, _ = _store(monkeypatch)
    with pytest.raises(AuthenticationError, match="didn't provide"):
        store.authenticate(headers)


def test_wrong_key_with_right_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    store, stored, _ = _store(monkeypatch)
    forged = stored[:12] + "0" * (len(stored) - 12)
    with pytest.raises(AuthenticationError, match="Incorrect") as info:
        store.authenticate({"authorization": f"Bearer {forged}"})
    assert forged not in str(info.value)
