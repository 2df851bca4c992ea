from __future__ import annotations

import pytest

from deploy.local.mesh import DEFAULT_CONFIG
from switchyard.config import ConfigError, expand_env, hash_key, key_prefix, load_config, parse_config

MINIMAL = """
providers:
  up:
    type: openai_compat
    base_url: http://127.0.0.1:1/v1
    models: [m1, {id: m2, max_output_tokens: 100}]
aliases:
  quick: up/m1
"""


def test_minimal_config_parses_bare_and_full_model_entries() -> None:
    config = parse_config(MINIMAL)
    models = config.providers["up"].models
    assert [m.id for m in models] == ["m1", "m2"]
    assert models[1].max_output_tokens == 100
    assert config.limits.max_body_bytes == 8 * 1024 * 1024


def test_shipped_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(DEFAULT_CONFIG)
    assert {"openai", "anthropic", "gemini", "local"} <= set(config.providers)
    assert config.aliases["fast"] == "openai/gpt-4o-mini"


@pytest.mark.parametrize(("text", "path", "line"), [
    ("providers:\n  up:\n    type: nope\n    base_url: http://x\n", "providers.up.type", 3),
    ("providers:\n  up:\n    type: openai\n    base_url: ftp://x\n", "providers.up.base_url", 4),
    ("providers:\n  up:\n    type: openai\n    base_url: http://x\n    timeouts: {total_s: -1}\n",
     "providers.up.timeouts.total_s", 5),
    ("providers:\n  up:\n    type: openai\n    base_url: http://x\napi_keys:\n  - id: k\n", "api_keys.0", 6),
    ("providers:\n  up:\n    type: openai\n    base_url: http://x\n    bogus: 1\n", "providers.up.bogus", 5),
])
def test_errors_name_path_and_line(text: str, path: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.yaml")
    message = str(info.value)
    assert f"{path} (line {line})" in message
    assert "test.yaml" in message


def test_alias_must_point_at_a_configured_provider() -> None:
    with pytest.raises(ConfigError, match=r"aliases\.bad"):
        parse_config(MINIMAL + "  bad: nowhere/m1\n")


def test_empty_providers_rejected() -> None:
    with pytest.raises(ConfigError, match="at least one provider"):
        parse_config("providers: {}\n")


def test_yaml_syntax_error_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid config"):
        parse_config("providers: [unclosed\n")


def test_env_expansion() -> None:
    assert expand_env("a ${X} b ${Y:-dflt}", {"X": "1"}) == "a 1 b dflt"
    with pytest.raises(ConfigError, match="MISSING"):
        expand_env("${MISSING}", {})


def test_key_digest_and_prefix() -> None:
    key = "sy_" + "a" * 40
    assert len(hash_key(key)) == 64
    assert key_prefix(key) == key[:12]
