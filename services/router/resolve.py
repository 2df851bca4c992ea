"""Model identifier → one upstream target.

Accepted forms, in order of precedence: a configured alias, a raw model name
served by a configured provider (the first provider in the file that lists it
wins), and ``provider/model``. Routing configs (``@slug``) are resolved by
``routes.py`` on top of this.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchyard.config import Config
from switchyard.errors import InvalidRequestError, NotFoundError


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model}"


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

    def models(self) -> list[tuple[str, str]]:
        """(model id, provider) for every listed model, then (alias, "switchyard")."""
        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        for name, spec in self._providers.items():
            for model in spec.models:
                if model.id not in seen:
                    seen.add(model.id)
                    out.append((model.id, name))
        out.extend((alias, "switchyard") for alias in self._aliases)
        return out
