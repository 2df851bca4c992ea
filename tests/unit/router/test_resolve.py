from __future__ import annotations

import pytest

from router.resolve import Resolver, Target
from switchyard.config import parse_config
from switchyard.errors import InvalidRequestError, NotFoundError

CONFIG = parse_config("""
providers:
  oa:
    type: openai
    base_url: http://127.0.0.1:1/v1
    models: [gpt-4o-mini, shared]
  second:
    type: openai
    base_url: http://127.0.0.1:2/v1
    models: [shared, other]
  local:
    type: openai_compat
    base_url: http://127.0.0.1:3/v1
aliases:
  fast: second/other
  gpt-4o-mini: second/other
""")


@pytest.fixture
def resolver() -> Resolver:
    return Resolver(CONFIG)


def test_alias_wins_over_raw_name(resolver: Resolver) -> None:
    assert resolver.resolve("gpt-4o-mini") == (Target("second", "other"), "alias")


def test_raw_name_first_provider_in_file_order(resolver: Resolver) -> None:
    assert resolver.resolve("shared") == (Target("oa", "shared"), "raw")


def test_provider_slash_model(resolver: Resolver) -> None:
    assert resolver.resolve("second/shared") == (Target("second", "shared"), "provider_model")
    # A provider with no model list passes any model name, slashes included.
    assert resolver.resolve("local/meta-llama/Llama-3-8B") == (Target("local", "meta-llama/Llama-3-8B"),
                                                                 "provider_model")


@pytest.mark.parametrize("model", ["nope", "oa/not-listed", "ghost/x", "@production"])
def test_unknown_is_404_naming_model(resolver: Resolver, model: str) -> None:
    with pytest.raises(NotFoundError) as info:
        resolver.resolve(model)
    assert info.value.param == "model"


def test_empty_model_is_400(resolver: Resolver) -> None:
    with pytest.raises(InvalidRequestError):
        resolver.resolve("")


def test_models_lists_each_model_once_then_aliases(resolver: Resolver) -> None:
    listed = resolver.models()
    assert ("gpt-4o-mini", "oa") in listed and ("fast", "switchyard") in listed
    assert [m for m, owner in listed if owner != "switchyard"] == ["gpt-4o-mini", "shared", "other"]
