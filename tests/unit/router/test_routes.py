from __future__ import annotations

import pytest

from router.resolve import Target
from router.routes import Branch, Leaf, RoutingTable, leaves
from router.versions import publish
from switchyard.config import parse_config
from switchyard.errors import NotFoundError
from tests.unit.router.scripted import BASE, table

ROUTES = """
routes:
  production:
    targets:
      - quick
      - {model: m2, params: {temperature: 0.3}, timeouts: {total_s: 9}}
  "@outer":
    targets:
      - model: "@production"
        params: {temperature: 0.9, top_p: 0.5}
"""


def test_plain_model_is_one_leaf() -> None:
    plan = table().plan("quick")
    assert isinstance(plan.root, Leaf)
    assert (plan.root.target, plan.resolved_by, plan.route) == (Target("a", "m1"), "alias", "")


def test_request_fallbacks_form_a_fallback_branch_without_duplicates() -> None:
    plan = table().plan("m1", ["quick", "m2", "local/x"])
    assert isinstance(plan.root, Branch) and plan.root.route == "" and plan.root.strategy == "fallback"
    assert [leaf.target for leaf, _ in leaves(plan.root)] == [Target("a", "m1"), Target("b", "m2"),
                                                               Target("local", "x")]
    assert plan.root.labels == ("m1", "m2", "local/x")


def test_bad_fallback_names_its_index() -> None:
    with pytest.raises(NotFoundError) as info:
        table().plan("m1", ["quick", "ghost"])
    assert info.value.param == "fallbacks[1]"


def test_slug_plans_a_branch_with_version_and_overrides() -> None:
    plan = table(ROUTES).plan("@production")
    assert (plan.resolved_by, plan.route, plan.route_version) == ("route", "production", 1)
    second = plan.root.children[1]
    assert second.params.temperature == 0.3 and second.timeouts.total_s == 9


def test_outer_overrides_pass_down_and_inner_settings_win() -> None:
    plan = table(ROUTES).plan("@outer")
    [(first, via1), (second, via2)] = leaves(plan.root)
    assert via1 == via2 == ("@outer", "@production")
    assert (first.params.temperature, first.params.top_p) == (0.9, 0.5)
    assert (second.params.temperature, second.params.top_p) == (0.3, 0.5)


@pytest.mark.parametrize(("model", "code"), [("@nope", "route_not_found"), ("@production@7", "route_version_not_found"),
                                             ("@production@x", "route_version_not_found")])
def test_unknown_config_or_version_is_404_naming_model(model: str, code: str) -> None:
    with pytest.raises(NotFoundError) as info:
        table(ROUTES).plan(model)
    assert (info.value.param, info.value.code) == ("model", code)


def test_pinned_version_is_served_from_the_published_history() -> None:
    old = parse_config(BASE + "routes:\n  p:\n    targets: [m1]\n")
    new = parse_config(BASE + "routes:\n  p:\n    targets: [m2, m3]\n")
    first = publish(None, "v1", old)
    second = publish(first, "v2", new)
    routing = RoutingTable(new, second)
    assert routing.plan("@p").route_version == 2
    assert [leaf.target.model for leaf, _ in leaves(routing.plan("@p").root)] == ["m2", "m3"]
    pinned = routing.plan("@p@1")
    assert pinned.route_version == 1
    assert [leaf.target.model for leaf, _ in leaves(pinned.root)] == ["m1"]


def test_listing_includes_routing_configs() -> None:
    listing = table(ROUTES).listing()
    assert ("@production", "switchyard", "route") in listing and ("quick", "switchyard", "alias") in listing
    assert ("m1", "a", "model") in listing
