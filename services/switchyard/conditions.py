"""Declarative conditions for conditional routing configs: data, never code.

A condition is a mapping; its entries must all hold (AND). An entry is
either a logical operator (``and``/``or`` over a list, ``not`` over one
condition) or a request fact with a test::

    when:
      tags.tier: premium                 # shorthand for {eq: premium}
      prompt_tokens: {gte: 2000}
      or: [{stream: true}, {tools: true}]

Operators: eq, ne, in, nin, gt, gte, lt, lte, regex, exists. A fact that is
absent satisfies only ``ne``, ``nin`` and ``exists: false``. Conditions are
compiled once when the config loads (errors name the path); a compiled
condition is a plain function of ``RequestFacts``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from switchyard.v1 import chat_pb2 as pb

Predicate = Callable[["RequestFacts"], bool]

# fact name -> kind; ``tags.<name>`` and ``metadata.<name>`` are strings.
FACTS: dict[str, str] = {
    "end_user": "str", "key_id": "str", "tenant": "str", "session_id": "str", "model": "str",
    "template": "str", "response_format": "str", "reasoning_effort": "str",
    "stream": "bool", "tools": "bool", "images": "bool",
    "tool_count": "num", "messages": "num", "prompt_chars": "num", "prompt_tokens": "num",
    "max_tokens": "num", "temperature": "num", "n": "num",
}
_PREFIXED = ("tags.", "metadata.")
OPERATORS = frozenset({"eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "regex", "exists"})
_MAX_REGEX = 512


class ConditionError(ValueError):
    """An invalid condition; the message names the path inside it."""


class RequestFacts:
    """The facts of one request, computed on first use (most conditions read
    one or two of them)."""

    __slots__ = ("_cache", "_request")

    def __init__(self, request: pb.ChatRequest) -> None:
        self._request = request
        self._cache: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        """The fact's value, or None when the request does not carry it."""
        if name in self._cache:
            return self._cache[name]
        value = self._compute(name)
        self._cache[name] = value
        return value

    def _compute(self, name: str) -> Any:
        r = self._request
        if name.startswith("tags."):
            return r.routing.tags.get(name[5:])
        if name.startswith("metadata."):
            return r.metadata.get(name[9:])
        simple = {"end_user": r.routing.end_user or r.user, "key_id": r.identity.key_id,
                  "tenant": r.identity.tenant, "session_id": r.routing.session_id, "model": r.model,
                  "template": r.routing.template, "reasoning_effort": r.sampling.reasoning_effort}
        if name in simple:
            return simple[name] or None
        if name == "response_format":
            return r.response_format.type or "text"
        if name == "stream":
            return r.stream
        if name == "tools":
            return len(r.tools) > 0
        if name == "tool_count":
            return len(r.tools)
        if name == "messages":
            return len(r.messages)
        if name == "images":
            return any(p.WhichOneof("part") == "image_url" for m in r.messages
                       if m.WhichOneof("content") == "parts" for p in m.parts.parts)
        if name == "prompt_chars":
            return prompt_chars(r)
        if name == "prompt_tokens":
            return (prompt_chars(r) + 3) // 4  # rough: ~4 characters per token
        if name == "max_tokens":
            s = r.sampling
            if s.HasField("max_completion_tokens"):
                return s.max_completion_tokens
            return s.max_tokens if s.HasField("max_tokens") else None
        if name == "temperature":
            return r.sampling.temperature if r.sampling.HasField("temperature") else None
        if name == "n":
            return r.sampling.n or 1
        return None


def prompt_chars(request: pb.ChatRequest) -> int:
    """Characters of text in the prompt (messages and tool definitions)."""
    total = 0
    for m in request.messages:
        kind = m.WhichOneof("content")
        if kind == "text":
            total += len(m.text)
        elif kind == "parts":
            total += sum(len(p.text) for p in m.parts.parts if p.WhichOneof("part") == "text")
        for call in m.tool_calls:
            total += len(call.function.arguments)
    for tool in request.tools:
        total += len(tool.function.description) + len(tool.function.parameters_json)
    return total


def compile_condition(spec: Any, path: str = "when") -> Predicate:
    """A predicate for ``spec``; ConditionError names what is wrong and where."""
    if not isinstance(spec, Mapping) or not spec:
        raise ConditionError(f"{path}: a condition must be a non-empty mapping")
    parts = [_entry(key, value, f"{path}.{key}") for key, value in spec.items()]
    if len(parts) == 1:
        return parts[0]
    return lambda facts: all(part(facts) for part in parts)


def _entry(key: Any, value: Any, path: str) -> Predicate:
    if key in ("and", "or"):
        if not isinstance(value, list) or not value:
            raise ConditionError(f"{path}: expected a non-empty list of conditions")
        subs = [compile_condition(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if key == "and":
            return lambda facts: all(s(facts) for s in subs)
        return lambda facts: any(s(facts) for s in subs)
    if key == "not":
        sub = compile_condition(value, path)
        return lambda facts: not sub(facts)
    if not isinstance(key, str) or not _known_fact(key):
        known = ", ".join(sorted(FACTS)) + ", tags.<name>, metadata.<name>"
        raise ConditionError(f"{path}: unknown request fact {key!r} (known: {known}, and, or, not)")
    tests = value if isinstance(value, Mapping) else {"eq": value}
    if not tests:
        raise ConditionError(f"{path}: expected at least one operator")
    checks = [_test(key, op, operand, f"{path}.{op}") for op, operand in tests.items()]
    if len(checks) == 1:
        return checks[0]
    return lambda facts: all(c(facts) for c in checks)


def _known_fact(name: str) -> bool:
    if name in FACTS:
        return True
    return any(name.startswith(p) and len(name) > len(p) for p in _PREFIXED)


def _kind(name: str) -> str:
    return FACTS.get(name, "str")


def _test(fact: str, op: Any, operand: Any, path: str) -> Predicate:
    if op not in OPERATORS:
        raise ConditionError(f"{path}: unknown operator {op!r} (known: {', '.join(sorted(OPERATORS))})")
    kind = _kind(fact)
    if op == "exists":
        if not isinstance(operand, bool):
            raise ConditionError(f"{path}: expected true or false")
        return lambda facts: (facts.get(fact) is not None) == operand
    if op in ("in", "nin"):
        if not isinstance(operand, list) or not operand:
            raise ConditionError(f"{path}: expected a non-empty list")
        values = frozenset(_operand(kind, v, path) for v in operand)
        if op == "in":
            return lambda facts: _present(facts.get(fact)) and _norm(kind, facts.get(fact)) in values
        return lambda facts: not (_present(facts.get(fact)) and _norm(kind, facts.get(fact)) in values)
    if op == "regex":
        if kind != "str" or not isinstance(operand, str) or len(operand) > _MAX_REGEX:
            raise ConditionError(f"{path}: regex needs a text fact and a pattern of at most {_MAX_REGEX} characters")
        try:
            pattern = re.compile(operand)
        except re.error as exc:
            raise ConditionError(f"{path}: invalid regular expression: {exc}") from None
        return lambda facts: isinstance(facts.get(fact), str) and pattern.search(facts.get(fact)) is not None
    if op in ("eq", "ne"):
        want = _operand(kind, operand, path)
        if op == "eq":
            return lambda facts: _present(facts.get(fact)) and _norm(kind, facts.get(fact)) == want
        return lambda facts: not (_present(facts.get(fact)) and _norm(kind, facts.get(fact)) == want)
    # gt / gte / lt / lte: numbers (text facts compare when both parse as numbers)
    if isinstance(operand, bool) or not isinstance(operand, int | float):
        raise ConditionError(f"{path}: expected a number")
    if kind == "bool":
        raise ConditionError(f"{path}: {fact} is true or false; use eq")
    compare = {"gt": float.__gt__, "gte": float.__ge__, "lt": float.__lt__, "lte": float.__le__}[op]
    bound = float(operand)

    def ordered(facts: RequestFacts) -> bool:
        number = _number(facts.get(fact))
        return number is not None and compare(number, bound)

    return ordered


def _present(value: Any) -> bool:
    return value is not None


def _operand(kind: str, value: Any, path: str) -> Any:
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConditionError(f"{path}: expected true or false")
        return value
    if kind == "num":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConditionError(f"{path}: expected a number")
        return float(value)
    if isinstance(value, bool | dict | list) or value is None:
        raise ConditionError(f"{path}: expected a string or number")
    return str(value)


def _norm(kind: str, value: Any) -> Any:
    if kind == "num":
        return float(value)
    if kind == "bool":
        return bool(value)
    return str(value)


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except ValueError:
        return None
