"""The config's analytics section and the API key role."""

from __future__ import annotations

import pytest

from switchyard.config import ConfigError, parse_config

BASE = 'providers: {p: {type: openai, base_url: "http://127.0.0.1:1"}}\n'
KEY = "api_keys:\n  - {id: k, sha256: '" + "0" * 64 + "', prefix: sy_abcdefghi}\n"


def test_defaults_are_embedded_duckdb_and_client_keys() -> None:
    config = parse_config(BASE + KEY)
    assert (config.analytics.store, config.analytics.path) == ("duckdb", "var/analytics.duckdb")
    assert config.api_keys[0].role == "client"


def test_clickhouse_needs_a_url() -> None:
    with pytest.raises(ConfigError, match=r"analytics \(line 2\): .*clickhouse_url"):
        parse_config(BASE + "analytics:\n  store: clickhouse\n")
    config = parse_config(BASE + "analytics: {store: clickhouse, clickhouse_url: 'https://ch.internal:8443'}\n")
    assert config.analytics.clickhouse_database == "switchyard"


@pytest.mark.parametrize("text,path", [
    ("analytics: {store: sqlite}\n", "analytics.store"),
    ("analytics: {clickhouse_database: 'x; DROP'}\n", "analytics.clickhouse_database"),
    ("analytics: {retention_days: 0}\n", "analytics.retention_days"),
    ("api_keys:\n  - {id: k, key_env: K, role: root}\n", "api_keys.0.role"),
])
def test_invalid_values_name_their_path(text: str, path: str) -> None:
    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        parse_config(BASE + text)
