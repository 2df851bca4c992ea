"""Model identifier → the ordered upstream targets to try.

Accepted forms, in order of precedence: a configured alias, a raw model name
served by a configured provider (the first provider in the file that lists it
wins), and ``provider/model``. Request-level fallbacks (Bifrost
``fallbacks``, Mesh ``models``) resolve the same way and follow the primary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from switchyard.config import Config
from switchyard.errors import InvalidRequestError, NotFoundError
from switchyard.v1 import router_pb2 as rpb


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str


@dataclass(slots=True)
class Plan:
    targets: list[Target]
    resolved_by: str
    route: str = ""
    route_version: int = 0
    model_requested: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class Resolver:
    def __init__(self, config: Config) -> None:
        self._aliases = dict(config.aliases)
        self._providers = config.providers
        self._by_model: dict[str, Target] = {}
        for name, spec in config.providers.items():
            for model in spec.models:
                self._by_model.setdefault(model.id, Target(name, model.id))

    def resolve(self, model: str, param: str = "model") -> tuple[Target, str]:
        """One target and how it was resolved; NotFoundError if nothing serves it."""
        if not model:
            raise InvalidRequestError("you must provide a model parameter", param=param)
        if model.startswith("@"):
            raise NotFoundError(f"routing config {model!r} does not exist", param=param, code="route_not_found")
        alias = self._aliases.get(model)
        if alias is not None:
            provider, _, upstream_model = alias.partition("/")
            return Target(provider, upstream_model), "alias"
        target = self._by_model.get(model)
        if target is not None:
            return target, "raw"
        provider, sep, upstream_model = model.partition("/")
        spec = self._providers.get(provider) if sep else None
        if spec is not None and upstream_model:
            if spec.models and spec.model(upstream_model) is None:
                raise NotFoundError(f"the model {upstream_model!r} is not served by provider {provider!r}",
                                    param=param)
            return Target(provider, upstream_model), "provider_model"
        raise NotFoundError(f"the model {model!r} does not exist or you do not have access to it", param=param)

    def plan(self, model: str, fallbacks: list[str] | tuple[str, ...] = ()) -> Plan:
        target, how = self.resolve(model)
        targets = [target]
        for i, name in enumerate(fallbacks):
            extra, _ = self.resolve(name, param=f"fallbacks[{i}]")
            if extra not in targets:
                targets.append(extra)
        return Plan(targets, how, model_requested=model)

    def list_models(self) -> rpb.ListModelsResponse:
        out = rpb.ListModelsResponse()
        seen: set[str] = set()
        for name, spec in self._providers.items():
            for model in spec.models:
                if model.id not in seen:
                    seen.add(model.id)
                    out.models.add(id=model.id, owned_by=name, kind="model")
        for alias in self._aliases:
            out.models.add(id=alias, owned_by="switchyard", kind="alias")
        return out
