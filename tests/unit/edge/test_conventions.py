"""Each gateway's request conventions become routing context."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from edge import conventions
from edge.conventions import bifrost, http, mesh, modelux, muxx
from edge.openai_schema import ChatCompletionRequest
from edge.validation import parse_chat_request
from switchyard.config import Limits
from switchyard.errors import InvalidRequestError
from switchyard.v1 import chat_pb2 as pb

USER = [{"role": "user", "content": "hi"}]


def request(**fields: Any) -> ChatCompletionRequest:
    return parse_chat_request(orjson.dumps({"model": "gpt-4o", "messages": USER, **fields}), Limits())


def routed(headers: dict[str, str] | None = None, **fields: Any) -> pb.RoutingContext:
    routing = pb.RoutingContext()
    conventions.apply_all(headers or {}, request(**fields), routing)
    return routing


def test_api_key_headers() -> None:
    assert conventions.API_KEY_HEADERS == ("x-muxx-api-key", "api-key", "x-api-key")


# -------------------------------------------------------------------- muxx --


def test_muxx_headers() -> None:
    headers = {"X-Muxx-Metadata": '{"feature": "chat", "tier": 2, "beta": true, "ratio": 0.5, "gone": null}',
               "X-Muxx-Cache-Control": "no-cache", "X-Muxx-User-Id": " user-42 "}
    routing = routed(headers)
    assert dict(routing.tags) == {"feature": "chat", "tier": "2", "beta": "true", "ratio": "0.5"}
    assert routing.cache_skip is True
    assert routing.end_user == "user-42"


def test_muxx_headers_are_case_insensitive() -> None:
    raw = CIMultiDict({"x-muxx-user-id": "u1", "X-MUXX-CACHE-CONTROL": "max-age=0, No-Cache"})
    routing = pb.RoutingContext()
    muxx.apply(CIMultiDictProxy(raw), request(), routing)
    assert routing.end_user == "u1" and routing.cache_skip


def test_muxx_cache_control_other_values_do_not_skip() -> None:
    routing = routed({"x-muxx-cache-control": "max-age=60"})
    assert routing.cache_skip is False and routing.cache_no_store is False and routing.cache_ttl_s == 60


# -------------------------------------------------------------------- http --


def test_only_if_cached() -> None:
    assert routed({"Cache-Control": "only-if-cached"}).cache_only
    assert routed({"X-Muxx-Cache-Control": "max-age=5, Only-If-Cached"}).cache_only
    assert not routed({"Cache-Control": "no-cache"}).cache_only


@pytest.mark.parametrize(("value", "skip", "no_store", "ttl"), [
    ("no-cache", True, False, None),
    ("No-Store", False, True, None),
    ("no-cache, no-store", True, True, None),
    ("max-age=60", False, False, 60),
    ('max-age="30", max-age=90', False, False, 30),    # the stricter of two
    ("max-age=0", False, False, 0),
    ("private, must-revalidate", False, False, None),  # other directives are ignored
])
def test_cache_control(value: str, skip: bool, no_store: bool, ttl: int | None) -> None:
    for header in ("Cache-Control", "X-Muxx-Cache-Control"):
        routing = routed({header: value})
        assert (routing.cache_skip, routing.cache_no_store) == (skip, no_store)
        assert (routing.cache_ttl_s if routing.HasField("cache_ttl_s") else None) == ttl


@pytest.mark.parametrize("header", ["Cache-Control", "X-Muxx-Cache-Control"])
@pytest.mark.parametrize("value", ["max-age=soon", "max-age=-1", "max-age=", "max-age=1.5", "max-age=\u0663"])
def test_cache_control_bad_max_age(header: str, value: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        routed({header: value})
    assert (info.value.status, info.value.param) == (400, header)


def test_headers_take_the_lowest_max_age_and_the_body_wins() -> None:
    assert routed({"cache-control": "max-age=10", "x-muxx-cache-control": "max-age=99"}).cache_ttl_s == 10
    routing = routed({"cache-control": "max-age=10"}, **{"mlx:cache": {"ttl": 300, "no_store": True}})
    assert routing.cache_ttl_s == 300 and routing.cache_no_store and not routing.cache_skip


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"text"', "42", '{"nested": {"a": 1}}', '{"list": [1]}'])
def test_muxx_bad_metadata(raw: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        routed({"X-Muxx-Metadata": raw})
    assert info.value.param == "X-Muxx-Metadata"
    assert info.value.status == 400


@pytest.mark.parametrize(("headers", "param"), [
    ({"X-Muxx-User-Id": "u" * 257}, "X-Muxx-User-Id"),
    ({"X-Muxx-User-Id": "u\x01"}, "X-Muxx-User-Id"),
    ({"X-Muxx-Metadata": '{"team": "a\\r\\nb"}'}, "X-Muxx-Metadata"),  # JSON escapes smuggle a CR/LF
    ({"X-Muxx-Metadata": '{"te\\nam": "a"}'}, "X-Muxx-Metadata"),
    ({"X-Muxx-Metadata": orjson.dumps({"team": "v" * 257}).decode()}, "X-Muxx-Metadata"),
])
def test_muxx_identifiers_are_validated(headers: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        routed(headers)
    assert info.value.param == param
    assert info.value.status == 400


# ----------------------------------------------------------------- modelux --


def test_modelux_body_fields() -> None:
    routing = routed(**{"mlx:tags": {"tenant": "acme", "feature": "summarize"}, "mlx:end_user": "user_abc",
                        "mlx:cache": {"skip": True}, "mlx:trace": True})
    assert dict(routing.tags) == {"tenant": "acme", "feature": "summarize"}
    assert routing.end_user == "user_abc"
    assert routing.cache_skip and routing.trace


def test_modelux_false_flags_set_nothing() -> None:
    routing = routed(**{"mlx:cache": {"skip": False, "no_store": False}, "mlx:trace": False})
    assert routing == pb.RoutingContext()


@pytest.mark.parametrize("cache", [{"ttl": -1}, {"ttl": "60"}, {"skip": "yes"}, {"no_store": 1}])
def test_modelux_bad_cache_controls(cache: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as info:
        routed(**{"mlx:cache": cache})
    assert info.value.status == 400 and info.value.param.startswith("mlx:cache")


def test_body_wins_over_headers() -> None:
    routing = routed({"x-muxx-user-id": "from-header", "x-muxx-metadata": '{"team": "h", "only": "header"}'},
                     **{"mlx:end_user": "from-body", "mlx:tags": {"team": "b"}})
    assert routing.end_user == "from-body"
    assert dict(routing.tags) == {"team": "b", "only": "header"}


# ----------------------------------------------------------------- bifrost --


def test_bifrost_fallbacks_in_order_and_idempotent() -> None:
    req = request(fallbacks=["anthropic/claude-3-sonnet-20240229", "openai/gpt-4o", "openai/gpt-4o"])
    routing = pb.RoutingContext()
    bifrost.apply({}, req, routing)
    bifrost.apply({}, req, routing)
    assert list(routing.fallbacks) == ["anthropic/claude-3-sonnet-20240229", "openai/gpt-4o"]


# -------------------------------------------------------------------- mesh --


def test_mesh_fields() -> None:
    routing = routed(template="support-reply", variables={"name": "Ada", "product": "X"}, session_id="sess-1",
                     models=["gpt-4o", "anthropic/claude-3-5-haiku", "gemini-2.5-flash"])
    assert routing.template == "support-reply"
    assert dict(routing.variables) == {"name": "Ada", "product": "X"}
    assert routing.session_id == "sess-1"
    # gpt-4o is the requested model: the first attempt, not a fallback.
    assert list(routing.fallbacks) == ["anthropic/claude-3-5-haiku", "gemini-2.5-flash"]


def test_mesh_models_without_model_are_all_fallbacks() -> None:
    req = parse_chat_request(orjson.dumps({"messages": USER, "models": ["a", "b"], "fallbacks": ["b", "c"]}),
                             Limits())
    routing = pb.RoutingContext()
    conventions.apply_all({}, req, routing)
    conventions.apply_all({}, req, routing)
    assert list(routing.fallbacks) == ["b", "c", "a"]


def test_nothing_set_means_empty_routing() -> None:
    assert routed({"content-type": "application/json"}) == pb.RoutingContext()


def test_every_convention_module_is_applied() -> None:
    assert conventions.CONVENTIONS == (http, muxx, modelux, bifrost, mesh)
