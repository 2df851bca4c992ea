"""The expand stage: a request naming a stored template (Mesh ``template`` +
``variables``) gets the template's rendered messages placed before its own,
the template's model when it names none, and the template's parameters where
it sets none."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from jinja2 import Template

from switchyard.config import ParamOverrides, TemplateSpec
from switchyard.errors import InvalidRequestError, NotFoundError
from switchyard.templating import ENVIRONMENT, variables_of
from switchyard.v1 import chat_pb2 as pb

# Template ids derived from names when the config gives none stay stable.
_NAMESPACE = uuid.UUID("5b0c4e1e-6f0a-4d38-9a61-7c3e0f1a2b44")


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    name: str
    id: str
    messages: tuple[tuple[str, Template], ...]
    variables: frozenset[str]
    model: str | None
    params: ParamOverrides | None


class TemplateStore:
    def __init__(self, specs: Mapping[str, TemplateSpec]) -> None:
        self._by_key: dict[str, CompiledTemplate] = {}
        for name, spec in specs.items():
            template_id = spec.id or str(uuid.uuid5(_NAMESPACE, name))
            variables: set[str] = set()
            for message in spec.messages:
                variables |= variables_of(message.content)
            compiled = CompiledTemplate(
                name, template_id,
                tuple((m.role, ENVIRONMENT.from_string(m.content)) for m in spec.messages),
                frozenset(variables), spec.model, spec.params)
            self._by_key[name] = compiled
            self._by_key[template_id] = compiled

    def listing(self) -> list[CompiledTemplate]:
        seen: dict[str, CompiledTemplate] = {t.name: t for t in self._by_key.values()}
        return list(seen.values())

    def get(self, key: str) -> CompiledTemplate | None:
        return self._by_key.get(key) or self._by_key.get(key.lower())

    def expand(self, request: pb.ChatRequest) -> CompiledTemplate | None:
        """Apply the request's template in place; None when it names none."""
        key = request.routing.template
        if not key:
            return None
        template = self.get(key)
        if template is None:
            raise NotFoundError(f"template {key!r} does not exist", param="template", code="template_not_found")
        provided = request.routing.variables
        missing = sorted(template.variables - provided.keys())
        if missing:
            raise InvalidRequestError(f"template {template.name!r} needs the variable {missing[0]!r}",
                                      param=f"variables.{missing[0]}", code="missing_template_variable")
        values = dict(provided)
        rendered = [pb.Message(role=role, text=text.render(values)) for role, text in template.messages]
        own = list(request.messages)
        del request.messages[:]
        request.messages.extend(rendered)
        request.messages.extend(own)
        request.routing.ClearField("variables")  # prompt content: not carried further
        if not request.model and template.model:
            request.model = template.model
        if template.params is not None:
            apply_defaults(request.sampling, template.params)
        return template


def apply_defaults(sampling: pb.Sampling, params: ParamOverrides) -> None:
    """Set each parameter ``params`` names that the request left unset."""
    for name, value in params.model_dump(exclude_none=True).items():
        if name == "reasoning_effort":
            if not sampling.reasoning_effort:
                sampling.reasoning_effort = value
        elif not sampling.HasField(name):
            setattr(sampling, name, value)
