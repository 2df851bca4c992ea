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
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + "  bad: nowhere/m1\n", "a.yaml")
    assert "a.yaml" in str(info.value)
    assert f"aliases.bad (line {MINIMAL.count(chr(10)) + 1}): target 'nowhere/m1'" in str(info.value)


def test_yaml_syntax_errors_name_the_file_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("providers:\n  up:\n    type: openai\n  base_url: x: y\n", "deploy/s.yaml")
    assert str(info.value) == ("invalid config deploy/s.yaml (line 4, column 14): YAML syntax: mapping values are "
                               "not allowed here")
    assert "<unicode string>" not in str(info.value)


def test_unset_environment_variable_names_path_and_line() -> None:
    text = MINIMAL.replace("http://127.0.0.1:1/v1", "${SWITCHYARD_TEST_UNSET_URL}")
    assert text != MINIMAL
    with pytest.raises(ConfigError) as info:
        parse_config(text, "e.yaml")
    assert "providers.up.base_url (line" in str(info.value) and "SWITCHYARD_TEST_UNSET_URL" in str(info.value)


def test_duplicate_key_ids_name_the_line() -> None:
    keys = "api_keys:\n  - {id: a, key_env: K1}\n  - {id: a, key_env: K2}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + keys, "k.yaml")
    assert f"api_keys.1.id (line {MINIMAL.count(chr(10)) + 3})" in str(info.value)


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


@pytest.mark.parametrize(("routes", "message"), [
    ("routes:\n  r:\n    targets: [nope]\n", "routes.r.targets.0.model (line 11): model 'nope' is not served"),
    ("routes:\n  r:\n    targets: ['@ghost']\n", "routes.r.targets.0.model (line 11): routing config '@ghost'"),
    ("routes:\n  a:\n    targets: ['@b']\n  b:\n    targets: ['@a']\n",
     "routes.a (line 10): routing configs form a cycle"),
    ("routes:\n  r:\n    strategy: weighted\n    targets: [m1]\n", "routes.r (line 10): weighted: every target needs"),
    ("routes:\n  r:\n    strategy: conditional\n    targets: [m1, {model: m1, when: {stream: true}}]\n",
     "only the last target may omit `when`"),
    ("routes:\n  r:\n    strategy: conditional\n    targets: [{model: m1, when: {stream: {gt: 1}}}]\n",
     "routes.r.targets.0.when (line 12): when.stream.gt"),
    ("routes:\n  r:\n    strategy: cascade\n    targets: [m1]\n", "cascade: needs at least two targets"),
    ("routes:\n  'bad slug':\n    targets: [m1]\n", "routes.bad slug"),
    ("templates:\n  t:\n    messages: [{role: system, content: 'Hi {{name'}]\n", "templates.t.messages.0.content"),
    ("templates:\n  t:\n    model: ghost\n    messages: [{role: system, content: x}]\n",
     "templates.t.model (line 11): model 'ghost'"),
])
def test_routing_errors_name_path_and_line(routes: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + routes, "r.yaml")
    assert message in str(info.value)


def test_routes_accept_at_slugs_and_bare_target_strings() -> None:
    config = parse_config(MINIMAL + "routes:\n  '@prod':\n    targets: [quick, {model: up/m2, weight: 1}]\n"
                          .replace(", weight: 1", ""))
    assert list(config.routes) == ["prod"]
    assert [t.model for t in config.routes["prod"].targets] == ["quick", "up/m2"]
