"""The admit stage: what the key may do with this request, decided before
any upstream is called. Today: the key's model scope, applied to every
target the plan can reach (the requested model, request-level fallbacks,
every target of a routing config, nested configs and the model a template
brings), so a restricted key reaches no other model by any path.

A target is within scope when the key lists its identifier, its upstream
model name, its ``provider/model`` or a routing config it is reached
through (listing ``@slug`` grants what that config routes to)."""

from __future__ import annotations

from router.routes import Branch, Leaf, Node, Plan, leaves
from switchyard.errors import PermissionDeniedError
from switchyard.v1 import chat_pb2 as pb


def check_scope(identity: pb.Identity, plan: Plan, fallbacks: list[str]) -> None:
    """PermissionDeniedError naming the request field that leads out of scope."""
    if not identity.restricted:
        return
    allowed = frozenset(identity.allowed_models)
    root = plan.root
    parts: list[tuple[Node, str, str]]
    if isinstance(root, Branch) and not root.route:  # the request's own fallback list
        parts = [(root.children[0], "model", root.labels[0])]
        for child, label in zip(root.children[1:], root.labels[1:], strict=True):
            index = fallbacks.index(label) if label in fallbacks else 0
            parts.append((child, f"fallbacks[{index}]", label))
    else:
        parts = [(root, "model", plan.model_requested)]
    for node, param, named in parts:
        for leaf, via in leaves(node):
            if not _allowed(leaf, via, allowed):
                through = f" (reached through {named!r})" if named != leaf.identifier else ""
                raise PermissionDeniedError(f"this API key may not use model {leaf.identifier!r}{through}",
                                            param=param, code="model_not_allowed")


def _allowed(leaf: Leaf, via: tuple[str, ...], allowed: frozenset[str]) -> bool:
    target = leaf.target
    if leaf.identifier in allowed or target.model in allowed or target.name in allowed:
        return True
    return any(route in allowed for route in via)
