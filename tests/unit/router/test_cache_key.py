"""The cache key: what changes the answer changes the key, nothing else does."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from router.cache_key import NotCacheableError, cache_key, canonical_json, unreproducible
from router.routes import RoutingTable
from switchyard.v1 import chat_pb2 as pb
from tests.unit.router.scripted import REQUEST, copy, table

ROUTES = """
routes:
  pair:
    targets: [m1, m2]
  greedy:
    targets: [{model: m1, params: {temperature: 0}}, {model: m2, params: {seed: 7}}]
  half:
    targets: [{model: m1, params: {temperature: 0}}, m2]
  hot:
    targets: [{model: m1, params: {temperature: 0.9}}]
  rules:
    strategy: conditional
    targets:
      - {model: m2, when: {tags.tier: premium}}
      - {model: m1}
  strict:
    strategy: conditional
    targets:
      - {model: m2, when: {tags.tier: premium}}
  sticky:
    strategy: weighted
    sticky: end_user
    targets: [{model: m1, weight: 1}, {model: m2, weight: 1}]
  coin:
    strategy: weighted
    targets: [{model: m1, weight: 1}, {model: m2, weight: 1}]
  outer:
    targets: ["@pair", m3]
"""
ROUTING = table(ROUTES)


def base() -> pb.ChatRequest:
    request = copy(REQUEST)
    request.sampling.temperature = 0
    request.identity.tenant = "acme"
    return request


def key(request: pb.ChatRequest, routing: RoutingTable = ROUTING, tenant: str | None = None, scope: str = "") -> str:
    plan = routing.plan(request.model, request.routing.fallbacks)
    return cache_key(request, plan, request.identity.tenant if tenant is None else tenant, scope)


def changed(edit: Callable[[pb.ChatRequest], object]) -> pb.ChatRequest:
    request = base()
    edit(request)
    return request


def with_tool(parameters: str, **fields: object) -> Callable[[pb.ChatRequest], object]:
    def edit(request: pb.ChatRequest) -> None:
        request.tools.add(type="function", function=pb.FunctionDefinition(name="f", parameters_json=parameters,
                                                                          **fields))
    return edit


SAME = {
    "request id": lambda r: setattr(r, "request_id", "other"),
    "stream": lambda r: setattr(r, "stream", True),
    "include usage": lambda r: setattr(r, "include_usage", True),
    "user": lambda r: setattr(r, "user", "u9"),
    "metadata": lambda r: r.metadata.update({"app": "x"}),
    "store": lambda r: setattr(r, "store", True),
    "prompt cache key": lambda r: setattr(r, "prompt_cache_key", "pck"),
    "safety identifier": lambda r: setattr(r, "safety_identifier", "sid"),
    "trace context": lambda r: r.trace_context.update({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}),
    "tags": lambda r: r.routing.tags.update({"team": "a"}),
    "end user": lambda r: setattr(r.routing, "end_user", "u1"),
    "session": lambda r: setattr(r.routing, "session_id", "s1"),
    "trace flag": lambda r: setattr(r.routing, "trace", True),
    "cache controls": lambda r: (setattr(r.routing, "cache_skip", True), setattr(r.routing, "cache_ttl_s", 5)),
    "key id": lambda r: setattr(r.identity, "key_id", "other-key"),
    "alias for the same model": lambda r: setattr(r, "model", "quick"),
    "provider/model for the same model": lambda r: setattr(r, "model", "a/m1"),
    "n 1": lambda r: setattr(r.sampling, "n", 1),
    "zero penalties": lambda r: (setattr(r.sampling, "presence_penalty", 0),
                                 setattr(r.sampling, "frequency_penalty", 0)),
    "top_logprobs without logprobs": lambda r: setattr(r.sampling, "top_logprobs", 0),
    "stop as a string": lambda r: (r.sampling.stop.append("END"), setattr(r.sampling, "stop_is_string", True)),
    "response format text": lambda r: setattr(r.response_format, "type", "text"),
    "tool choice none without tools": lambda r: setattr(r.tool_choice, "mode", "none"),
}


@pytest.mark.parametrize("name", list(SAME))
def test_what_cannot_change_the_answer_does_not_change_the_key(name: str) -> None:
    # A single stop string is compared with the same stop as a one-element list.
    reference = changed(lambda r: r.sampling.stop.append("END")) if name == "stop as a string" else base()
    assert key(changed(SAME[name])) == key(reference)


def test_json_key_order_and_defaults_of_tools_and_schemas_do_not_change_the_key() -> None:
    a = changed(with_tool('{"type": "object", "properties": {"x": {"type": "string"}, "y": {"type": "number"}}}'))
    b = changed(with_tool('{"properties":{"y":{"type":"number"},"x":{"type":"string"}},"type":"object"}',
                          strict=False))
    b.sampling.parallel_tool_calls = True
    b.tool_choice.mode = "auto"
    assert key(a) == key(b)
    c = changed(lambda r: r.response_format.MergeFrom(pb.ResponseFormat(
        type="json_schema", schema_name="s", schema_json='{"a": 1, "b": [{"d": 2, "c": 3}]}')))
    d = changed(lambda r: r.response_format.MergeFrom(pb.ResponseFormat(
        type="json_schema", schema_name="s", schema_json='{"b":[{"c":3,"d":2}],"a":1}', strict=False)))
    assert key(c) == key(d)
    # Extra pass-through fields are a map: any order.
    e, f = base(), base()
    e.extra.update({"min_p": 0.1, "thinking": {"type": "enabled", "budget": 10}})
    f.extra.update({"thinking": {"budget": 10, "type": "enabled"}, "min_p": 0.1})
    assert key(e) == key(f)


DIFFERENT = {
    "message text": lambda r: setattr(r.messages[0], "text", "hello"),
    "another message": lambda r: r.messages.add(role="assistant", text="hi"),
    "role": lambda r: setattr(r.messages[0], "role", "system"),
    "content parts": lambda r: r.messages[0].parts.parts.add(text="hi"),
    "temperature": lambda r: setattr(r.sampling, "temperature", 0.5),
    "temperature unset": lambda r: r.sampling.ClearField("temperature"),
    "top_p": lambda r: setattr(r.sampling, "top_p", 1.0),
    "max_tokens": lambda r: setattr(r.sampling, "max_tokens", 5),
    "max_completion_tokens": lambda r: setattr(r.sampling, "max_completion_tokens", 5),
    "seed": lambda r: setattr(r.sampling, "seed", 1),
    "n": lambda r: setattr(r.sampling, "n", 2),
    "stop": lambda r: r.sampling.stop.append("END"),
    "logit bias": lambda r: r.sampling.logit_bias.update({"50256": -100}),
    "logprobs": lambda r: setattr(r.sampling, "logprobs", True),
    "top_k": lambda r: setattr(r.sampling, "top_k", 5),
    "reasoning effort": lambda r: setattr(r.sampling, "reasoning_effort", "low"),
    "penalty": lambda r: setattr(r.sampling, "presence_penalty", 0.5),
    "parallel tool calls off": lambda r: (with_tool("{}")(r), setattr(r.sampling, "parallel_tool_calls", False)),
    "a tool": with_tool("{}"),
    "tool schema": with_tool('{"type": "object"}'),
    "tool choice": lambda r: (with_tool("{}")(r), setattr(r.tool_choice, "mode", "required")),
    "named tool choice": lambda r: (with_tool("{}")(r), setattr(r.tool_choice, "function_name", "f")),
    "json mode": lambda r: setattr(r.response_format, "type", "json_object"),
    "extra field": lambda r: r.extra.update({"min_p": 0.1}),
    "another model": lambda r: setattr(r, "model", "m3"),
    "another provider": lambda r: setattr(r, "model", "m2"),
    "fallbacks": lambda r: r.routing.fallbacks.append("m2"),
    "tenant": lambda r: setattr(r.identity, "tenant", "globex"),
}


@pytest.mark.parametrize("name", list(DIFFERENT))
def test_what_can_change_the_answer_changes_the_key(name: str) -> None:
    assert key(changed(DIFFERENT[name])) != key(base())


def test_scope_value_separates_entries_and_parts_cannot_run_together() -> None:
    request = base()
    assert key(request, scope="k1") != key(request, scope="k2") != key(request)
    # Length-prefixed parts: tenant "ab" + scope "c" is not tenant "a" + scope "bc".
    assert key(request, tenant="ab", scope="c") != key(request, tenant="a", scope="bc")


def test_routing_configs_key_on_their_versions_and_decisions() -> None:
    pair = changed(lambda r: setattr(r, "model", "@pair"))
    assert key(pair) != key(base())
    newer = RoutingTable(ROUTING.config, None)
    newer.versions["pair"] = 2  # what a published edit does
    assert key(pair, newer) != key(pair)
    outer = changed(lambda r: setattr(r, "model", "@outer"))
    assert key(outer, newer) != key(outer)  # a nested config's new version reaches the outer one's entries
    premium = changed(lambda r: (setattr(r, "model", "@rules"), r.routing.tags.update({"tier": "premium"})))
    basic = changed(lambda r: (setattr(r, "model", "@rules"), r.routing.tags.update({"tier": "basic"})))
    other = changed(lambda r: (setattr(r, "model", "@rules"), r.routing.tags.update({"tier": "free"})))
    assert key(premium) != key(basic) == key(other)  # tags matter only through the rule they pick
    arms = {key(changed(lambda r, u=user: (setattr(r, "model", "@sticky"), setattr(r.routing, "end_user", u))))
            for user in (f"user{i}" for i in range(40))}
    assert len(arms) == 2  # one entry per arm, shared by the users on it


@pytest.mark.parametrize(("model", "tags", "message"), [
    ("@coin", {}, "picks a random arm"),
    ("@strict", {"tier": "basic"}, "no rule"),
])
def test_routes_decided_only_at_run_time_are_not_cacheable(model: str, tags: dict[str, str], message: str) -> None:
    request = changed(lambda r: (setattr(r, "model", model), r.routing.tags.update(tags)))
    with pytest.raises(NotCacheableError, match=message):
        key(request)


@pytest.mark.parametrize(("model", "edit", "reproducible"), [
    ("m1", lambda s: None, True),                                    # temperature 0 (base)
    ("m1", lambda s: s.ClearField("temperature"), False),            # the upstream's default temperature
    ("m1", lambda s: setattr(s, "temperature", 0.7), False),
    ("m1", lambda s: (setattr(s, "temperature", 0.7), setattr(s, "seed", 3)), True),
    ("m1", lambda s: (s.ClearField("temperature"), setattr(s, "seed", 0)), True),   # seed 0 is a seed
    ("@greedy", lambda s: s.ClearField("temperature"), True),       # every target pins it
    ("@half", lambda s: s.ClearField("temperature"), False),         # m2 samples
    ("@hot", lambda s: None, False),                                 # the target's temperature wins
])
def test_reproducibility(model: str, edit: Callable[[pb.Sampling], object], reproducible: bool) -> None:
    request = changed(lambda r: setattr(r, "model", model))
    edit(request.sampling)
    reason = unreproducible(request, ROUTING.plan(model))
    assert (reason == "") is reproducible
    if not reproducible:
        assert "temperature" in reason


def test_web_search_is_not_reproducible() -> None:
    request = changed(lambda r: r.extra.update({"web_search_options": {}}))
    assert unreproducible(request, ROUTING.plan("m1")) == "web search results change"


def test_canonical_json() -> None:
    assert canonical_json('{"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": 2.5}}') == \
        '{"a":{"c":2.5,"d":[1,{"y":1,"z":0}]},"b":1}'
    assert canonical_json("not json") == "not json"
    big = '{"b": "' + "x" * 20000 + '", "a": 1}'
    assert canonical_json(big).startswith('{"a":1,"b":"xx')
