"""Parse and validate a chat-completions body once, at the edge.

``parse_chat_request`` checks size, depth and encoding limits without
recursion, then validates against ``ChatCompletionRequest`` and turns the
first error into an ``InvalidRequestError`` whose ``param`` and message use
OpenAI's wording (``messages[0].role``, "Invalid 'temperature': decimal above
maximum value. ..."). JSON objects with duplicate keys are accepted; the last
value wins (orjson).
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

import orjson
from pydantic import ValidationError

from edge.openai_schema import UNION_TAG, ChatCompletionRequest, identifier_problem
from switchyard.config import Limits
from switchyard.errors import InvalidRequestError

_STRING_LITERAL = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS_ONLY = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def parse_chat_request(body: bytes, limits: Limits) -> ChatCompletionRequest:
    """Parse and validate a request body, or raise ``InvalidRequestError``."""
    data = load_json_object(body, limits)
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise request_error(exc.errors(include_url=False)[0], data) from None


def load_json_object(body: bytes, limits: Limits) -> dict[str, Any]:
    """The body as a JSON object within the size, depth, string and message
    count limits (every front door's first step), or ``InvalidRequestError``."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _unparsable(body, exc, limits) from None
    # Upper bound first: counting brackets (inside strings too) is C-speed.
    if body.count(b"[") + body.count(b"{") > limits.max_json_depth and _depth(body) > limits.max_json_depth:
        raise _too_deep(limits)
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    if len(body) > limits.max_string_chars:
        _check_strings(data, limits.max_string_chars)
    messages = data.get("messages")
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise InvalidRequestError(
            f"Invalid 'messages': array too long. Expected an array with maximum length {limits.max_messages}, "
            f"but got an array with length {len(messages)} instead.", param="messages", code="array_above_max_length")
    return data


def _depth(body: bytes) -> int:
    """Deepest [/{ nesting outside string literals, without recursion."""
    brackets = _STRING_LITERAL.sub(b"", body).translate(_BRACKET_STEP, _BRACKETS_ONLY)
    return max(accumulate(memoryview(brackets).cast("b")), default=0)


def _too_deep(limits: Limits) -> InvalidRequestError:
    return InvalidRequestError(f"the JSON body is nested deeper than {limits.max_json_depth} levels",
                               code="json_too_deep")


def _unparsable(body: bytes, exc: orjson.JSONDecodeError, limits: Limits) -> InvalidRequestError:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidRequestError("body is not valid UTF-8")
    # No _depth() scan here: on an unterminated string its regex goes quadratic.
    if "depth limit" in str(exc):
        return _too_deep(limits)
    return InvalidRequestError(f"We could not parse the JSON body of your request: {exc}.", code="invalid_json")


def _check_strings(data: Any, limit: int) -> None:
    """Reject any string (or key) longer than ``limit`` characters; iterative."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                sub = f"{path}.{key}" if path else key
                if len(key) > limit:
                    raise _string_too_long(path or None, len(key), limit)
                stack.append((value, sub))
        elif isinstance(node, list):
            stack.extend((value, f"{path}[{i}]") for i, value in enumerate(node))
        elif isinstance(node, str) and len(node) > limit:
            raise _string_too_long(path, len(node), limit)


def _string_too_long(param: str | None, length: int, limit: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid '{param}': string too long. Expected a string with maximum length {limit}, but got a string "
        f"with length {length} instead.", param=param, code="string_above_max_length")


def _param_of(loc: tuple[int | str, ...], data: Any) -> str:
    """OpenAI's name for an error location: ``messages[0].content[1].type``.
    Union member tags (``#...``) are dropped unless they are real keys; a key
    that is no fit identifier itself (a CR or LF in it) is named by its object."""
    if len(loc) >= 2 and loc[-1] == "[key]" and isinstance(loc[-2], str) and identifier_problem(loc[-2]):
        loc = loc[:-2]
    out: list[str] = []
    node = data
    for part in loc:
        if isinstance(part, int):
            out.append(f"[{part}]")
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
        elif (part.startswith(UNION_TAG) or part == "[key]") and not (isinstance(node, dict) and part in node):
            continue
        else:
            out.append(f".{part}" if out else part)
            node = node.get(part) if isinstance(node, dict) else None
    return "".join(out)


_EXPECTED = {
    "string_type": "a string", "int_type": "an integer", "int_from_float": "an integer", "int_parsing": "an integer",
    "float_type": "a decimal", "float_parsing": "a decimal", "bool_type": "a boolean", "bool_parsing": "a boolean",
    "list_type": "an array", "dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object",
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a decimal"), (str, "a string"),
                       (list, "an array"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return "an unknown type"


def _number(value: Any) -> str:
    return f"{value:.15g}" if isinstance(value, float) else str(value)


def request_error(err: Any, data: Any) -> InvalidRequestError:
    """The OpenAI-worded error for one pydantic error dict (the first of many)."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    param = _param_of(err["loc"], data)
    name = param or "body"
    expected = _EXPECTED.get(kind)
    if kind in ("union_tag_invalid", "union_tag_not_found") and ctx.get("discriminator", "").startswith("field:"):
        if not isinstance(value, dict):
            kind, expected = "invalid_type", "an object"
        else:
            field = ctx["discriminator"][len("field:"):-2]
            param = f"{param}.{field}" if param else field
            if kind == "union_tag_not_found":
                return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param,
                                           code="missing_required_parameter")
            supported = ctx["expected_tags"].replace(UNION_TAG, "")
            return InvalidRequestError(f"Invalid value: '{ctx['tag']}'. Supported values are: {supported}.",
                                       param=param, code="invalid_value")
    param = param or None
    if kind == "invalid_param":
        return InvalidRequestError(ctx["message"], param=ctx["param"], code="invalid_value")
    if kind == "missing":
        return InvalidRequestError(f"Missing required parameter: '{name}'.", param=param,
                                   code="missing_required_parameter")
    if kind == "invalid_type" or expected:
        return InvalidRequestError(f"Invalid type for '{name}': expected {expected or err['msg']}, but got "
                                   f"{_json_type(value)} instead.", param=param, code="invalid_type")
    if kind in _BOUNDS:
        key, side, word, op = _BOUNDS[kind]
        number = "decimal" if isinstance(ctx[key], float) else "integer"
        return InvalidRequestError(
            f"Invalid '{name}': {number} {side} {word}imum value. Expected a value {op} {_number(ctx[key])}, but got "
            f"{_number(value)} instead.", param=param, code=f"{number}_{side}_{word}_value")
    if kind in ("too_short", "too_long", "string_too_short", "string_too_long"):
        return _length_error(kind, name, param, ctx, value)
    if kind == "string_pattern_mismatch":
        return InvalidRequestError(
            f"Invalid '{name}': string does not match pattern. Expected a string that matches the pattern "
            f"'{ctx['pattern']}'.", param=param, code="invalid_value")
    if kind == "literal_error":
        shown = f"'{value}'" if isinstance(value, str) else orjson.dumps(value).decode()
        return InvalidRequestError(f"Invalid value: {shown}. Supported values are: {ctx['expected']}.",
                                   param=param, code="invalid_value")
    return InvalidRequestError(f"Invalid '{name}': {err['msg']}.", param=param, code="invalid_value")


_BOUNDS = {  # pydantic error type -> (ctx key, side, "min"/"max", operator)
    "greater_than_equal": ("ge", "below", "min", ">="), "greater_than": ("gt", "below", "min", ">"),
    "less_than_equal": ("le", "above", "max", "<="), "less_than": ("lt", "above", "max", "<"),
}


def _length_error(kind: str, name: str, param: str | None, ctx: dict[str, Any], value: Any) -> InvalidRequestError:
    short = kind.endswith("too_short")
    bound = ctx["min_length"] if short else ctx["max_length"]
    side, word = ("below", "min") if short else ("above", "max")
    if kind.startswith("string"):
        return InvalidRequestError(
            f"Invalid '{name}': string too {'short' if short else 'long'}. Expected a string with {word}imum length "
            f"{bound}, but got a string with length {len(value)} instead.", param=param,
            code=f"string_{side}_{word}_length")
    if isinstance(value, dict):
        few, most = ("few", "least") if short else ("many", "most")
        return InvalidRequestError(
            f"Invalid '{name}': too {few} properties. Expected an object with at {most} {bound} properties, but got "
            f"{len(value)} instead.", param=param, code=f"object_{side}_{word}_properties")
    if not value:
        return InvalidRequestError(
            f"Invalid '{name}': empty array. Expected an array with minimum length {bound}, but got an empty array "
            "instead.", param=param, code="empty_array")
    return InvalidRequestError(
        f"Invalid '{name}': array too {'short' if short else 'long'}. Expected an array with {word}imum length "
        f"{bound}, but got an array with length {len(value)} instead.", param=param, code=f"array_{side}_{word}_length")


