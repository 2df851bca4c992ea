"""What a key may use: models, aliases, routing configs and templates, with
the key's scope applied the way a request is admitted (a listed ``@slug``
grants what it routes to; a restricted key sees a template only when the
template's model is in its scope or the template names none)."""

from __future__ import annotations

from router.admission import check_scope
from router.routes import RoutingTable
from switchyard.errors import NotFoundError, SwitchyardError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import router_pb2 as rpb


def _usable(table: RoutingTable, identity: pb.Identity, identifier: str) -> bool:
    if not identity.restricted:
        return True
    try:
        check_scope(identity, table.plan(identifier), [])
    except SwitchyardError:
        return False
    return True


def _route_info(table: RoutingTable, slug: str, out: rpb.ModelInfo) -> None:
    spec = table.config.routes[slug]
    out.version, out.strategy, out.description = table.versions[slug], spec.strategy, spec.description


def _template_info(table: RoutingTable, name: str, out: rpb.ModelInfo) -> None:
    spec = table.config.templates[name]
    out.id, out.owned_by, out.kind = name, "switchyard", "template"
    out.description, out.model = spec.description, spec.model or ""


def list_models(table: RoutingTable, identity: pb.Identity) -> rpb.ListModelsResponse:
    out = rpb.ListModelsResponse()
    for model_id, owner, kind in table.listing():
        if not _usable(table, identity, model_id):
            continue
        info = out.models.add(id=model_id, owned_by=owner, kind=kind)
        if kind == "route":
            _route_info(table, model_id[1:], info)
        elif kind == "alias":
            info.model = table.config.aliases[model_id]
    for name, spec in table.config.templates.items():
        if not spec.model or _usable(table, identity, spec.model):
            _template_info(table, name, out.models.add())
    return out


def get_model(table: RoutingTable, identity: pb.Identity, identifier: str) -> rpb.ListModelsResponse:
    """One identifier, resolved and admitted as a request naming it would be
    (``provider/model`` of a pass-through provider and ``@slug@version``
    included); a template by name when no model has that name."""
    out = rpb.ListModelsResponse()
    try:
        plan = table.plan(identifier)
    except NotFoundError as exc:
        template = table.templates.get(identifier)
        if template is None:
            return rpb.ListModelsResponse(error=exc.to_proto())
        if template.model and not _usable(table, identity, template.model):
            return rpb.ListModelsResponse(error=NotFoundError(
                f"template {identifier!r} does not exist or you do not have access to it").to_proto())
        _template_info(table, template.name, out.models.add())
        return out
    except SwitchyardError as exc:
        return rpb.ListModelsResponse(error=exc.to_proto())
    try:
        check_scope(identity, plan, [])
    except SwitchyardError as exc:
        return rpb.ListModelsResponse(error=exc.to_proto())
    info = out.models.add(id=identifier)
    if plan.route:
        info.kind, info.owned_by = "route", "switchyard"
        _route_info(table, plan.route, info)
        info.version = plan.route_version
    elif plan.resolved_by == "alias":
        info.kind, info.owned_by, info.model = "alias", "switchyard", table.config.aliases[identifier]
    else:
        info.kind, info.owned_by = "model", plan.root.target.provider  # type: ignore[union-attr]
    return out
