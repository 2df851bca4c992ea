"""Prompt template text: Jinja in a sandbox, so ``{{slot}}`` placeholders
(Mesh's syntax) render, a variable's value is inserted as plain text and
never parsed again (a value holding ``{{x}}`` stays literally that), and a
template cannot reach Python objects. Undefined variables are errors, never
empty strings."""

from __future__ import annotations

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

ENVIRONMENT = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


class TemplateTextError(ValueError):
    """The template text does not parse."""


def variables_of(text: str) -> frozenset[str]:
    """The variables ``text`` uses; TemplateTextError if it does not parse."""
    try:
        return frozenset(meta.find_undeclared_variables(ENVIRONMENT.parse(text)))
    except TemplateSyntaxError as exc:
        raise TemplateTextError(f"template syntax error on its line {exc.lineno}: {exc.message}") from None
