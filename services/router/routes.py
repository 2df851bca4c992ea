"""The plan stage: a model identifier (raw name, ``provider/model``, alias,
``@slug`` or ``@slug@version``) plus request-level fallbacks → a plan, a tree
whose leaves are upstream targets and whose branches are routing configs
with a strategy.

A ``RoutingTable`` is an immutable snapshot of one config file and the
published versions of its routing configs; a request keeps the snapshot it
started with, so a config change never affects a request in flight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from router.resolve import Resolver, Target
from router.templates import TemplateStore
from router.versions import RoutingDocument
from switchyard.conditions import Predicate, compile_condition
from switchyard.config import Config, ParamOverrides, RetryPolicy, RouteSpec, TimeoutOverrides
from switchyard.errors import NotFoundError

DEFAULT_FALLBACK_ON = ("retryable", "timeout", "5xx", "429")
MAX_CACHED_PLANS = 10_000


@dataclass(frozen=True, slots=True)
class Leaf:
    """One upstream target and how to attempt it."""

    target: Target
    identifier: str        # as the request or config named it
    resolved_by: str       # raw | alias | provider_model
    retry: RetryPolicy
    params: ParamOverrides | None = None
    timeouts: TimeoutOverrides | None = None


@dataclass(frozen=True, slots=True)
class Branch:
    """A routing config (or the request's own fallback list, route "")."""

    route: str
    version: int
    strategy: str          # fallback | weighted | conditional | cascade
    children: tuple[Node, ...]
    labels: tuple[str, ...]
    fallback_on: tuple[str, ...] = DEFAULT_FALLBACK_ON
    weights: tuple[float, ...] = ()
    conditions: tuple[Predicate | None, ...] = ()
    spec: RouteSpec | None = None


Node = Leaf | Branch


@dataclass(frozen=True, slots=True)
class Plan:
    root: Node
    resolved_by: str       # raw | alias | provider_model | route | fallbacks
    route: str = ""        # the routing config the request named, "" if none
    route_version: int = 0
    model_requested: str = ""


@dataclass(frozen=True, slots=True)
class _Inherited:
    """Overrides a config target naming another config passes down."""

    params: ParamOverrides | None = None
    timeouts: TimeoutOverrides | None = None
    retry: RetryPolicy | None = None


_NOTHING = _Inherited()


class RoutingTable:
    def __init__(self, config: Config, document: RoutingDocument | None = None) -> None:
        self.config = config
        self.document = document
        self.resolver = Resolver(config)
        self.templates = TemplateStore(config.templates)
        self.provider_types = {name: spec.type for name, spec in config.providers.items()}
        self.versions = {slug: (document.version_of(slug) if document else 0) or 1 for slug in config.routes}
        # Whether any model has a limit of its own: without one, no plan needs the governor's per-attempt check.
        self.model_limits = any(m.limits is not None for spec in config.providers.values() for m in spec.models)
        self._compiled: dict[tuple[object, ...], Branch] = {}
        self._plans: dict[str, Plan] = {}  # plans of requests without fallbacks, by model identifier

    # ------------------------------------------------------------ planning --

    def plan(self, model: str, fallbacks: Sequence[str] = ()) -> Plan:
        if not fallbacks:
            cached = self._plans.get(model)
            if cached is not None:
                return cached
        root, how, route, version = self._primary(model)
        if fallbacks:
            children, labels = [root], [model]
            seen = {_identity(root)}
            for i, name in enumerate(fallbacks):
                node = self.node(name, f"fallbacks[{i}]")
                if _identity(node) not in seen:  # the same upstream twice is not a fallback
                    seen.add(_identity(node))
                    children.append(node)
                    labels.append(name)
            if len(children) > 1:
                root = Branch("", 0, "fallback", tuple(children), tuple(labels))
            return Plan(root, how, route, version, model)
        plan = Plan(root, how, route, version, model)
        if len(self._plans) < MAX_CACHED_PLANS:  # identifiers come from clients: bounded
            self._plans[model] = plan
        return plan

    def _primary(self, model: str) -> tuple[Node, str, str, int]:
        node = self.node(model, "model")
        if isinstance(node, Branch):
            return node, "route", node.route, node.version
        return node, node.resolved_by, "", 0

    def node(self, identifier: str, param: str, inherited: _Inherited = _NOTHING) -> Node:
        if identifier.startswith("@"):
            slug, _, pinned = identifier[1:].partition("@")
            return self._branch(slug, pinned, param, inherited)
        target, how = self.resolver.resolve(identifier, param)
        return Leaf(target, identifier, how, inherited.retry or self.config.retry, inherited.params,
                    inherited.timeouts)

    def _branch(self, slug: str, pinned: str, param: str, inherited: _Inherited) -> Branch:
        current = self.versions.get(slug)
        if current is None:
            raise NotFoundError(f"routing config '@{slug}' does not exist", param=param, code="route_not_found")
        version = current
        if pinned:
            if not pinned.isdigit() or int(pinned) < 1:
                raise NotFoundError(f"routing config version '@{slug}@{pinned}' is not a version number",
                                    param=param, code="route_version_not_found")
            version = int(pinned)
        key = (slug, version, inherited)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compile(slug, version, self._spec(slug, version, param), inherited)
            self._compiled[key] = compiled
        return compiled

    def _spec(self, slug: str, version: int, param: str) -> RouteSpec:
        if version == self.versions[slug]:
            return self.config.routes[slug]
        entry = self.document.routes.get(slug) if self.document else None
        content = entry.history.get(version) if entry else None
        if content is None:
            raise NotFoundError(f"version {version} of routing config '@{slug}' is not available "
                                f"(current: {self.versions[slug]})", param=param, code="route_version_not_found")
        return RouteSpec.model_validate(content)

    def _compile(self, slug: str, version: int, spec: RouteSpec, inherited: _Inherited) -> Branch:
        children = []
        for i, target in enumerate(spec.targets):
            below = _Inherited(_merge(inherited.params, target.params),
                               _merge(inherited.timeouts, target.timeouts),
                               target.retry or inherited.retry or spec.retry)
            children.append(self.node(target.model, f"routes.{slug}.targets[{i}]", below))
        conditions = tuple(compile_condition(t.when) if t.when is not None else None for t in spec.targets)
        return Branch(slug, version, spec.strategy, tuple(children), tuple(t.label for t in spec.targets),
                      tuple(spec.fallback_on), tuple(t.weight or 0.0 for t in spec.targets), conditions, spec)

    # -------------------------------------------------------------- listing --

    def listing(self) -> list[tuple[str, str, str]]:
        """(id, owned_by, kind) for models, aliases and routing configs."""
        out = [(model, owner, "alias" if owner == "switchyard" else "model")
               for model, owner in self.resolver.models()]
        out.extend((f"@{slug}", "switchyard", "route") for slug in self.config.routes)
        return out


def _identity(node: Node) -> object:
    return node.target if isinstance(node, Leaf) else (node.route, node.version)


def leaves(node: Node) -> list[tuple[Leaf, tuple[str, ...]]]:
    """Every leaf the node can reach, with the routing configs on the way."""
    out: list[tuple[Leaf, tuple[str, ...]]] = []

    def walk(n: Node, via: tuple[str, ...]) -> None:
        if isinstance(n, Leaf):
            out.append((n, via))
            return
        below = (*via, "@" + n.route) if n.route else via
        for child in n.children:
            walk(child, below)

    walk(node, ())
    return out


_Overrides = TypeVar("_Overrides", ParamOverrides, TimeoutOverrides)


def _merge(outer: _Overrides | None, inner: _Overrides | None) -> _Overrides | None:
    """Inner settings win field by field; either may be absent."""
    if outer is None or inner is None:
        return inner or outer
    data = outer.model_dump(exclude_none=True)
    data.update(inner.model_dump(exclude_none=True))
    return type(inner).model_validate(data)
