"""JSON values valid against a JSON Schema: what a simulated model answers
for tool arguments and structured output, the same way for every API."""

from __future__ import annotations

import math
from typing import Any


def instance_for(schema: Any, variant: int = 0, *, root: Any = None, key: str = "value", depth: int = 0) -> Any:
    """A JSON value valid against ``schema``, for the schema features models
    are asked to follow: refs, combinators, enums, objects (required
    properties, or all when none are required), arrays, strings with formats
    and length bounds, numbers with bounds; also Gemini's OpenAPI-subset
    schemas. ``variant`` varies the values."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return key
    nested = {"variant": variant, "root": root, "depth": depth + 1}
    if "$ref" in schema and depth < 32:
        return instance_for(_resolve(root, schema["$ref"]), key=key, **nested)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][variant % len(schema["enum"])]
    for combinator in ("anyOf", "oneOf"):
        options = schema.get(combinator)
        if options:
            usable = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")] or options
            return instance_for(usable[0], key=key, **nested)
    if schema.get("allOf"):
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve(root, part["$ref"]) if isinstance(part, dict) and "$ref" in part else part
            for name, value in (part or {}).items():
                if name == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif name == "required":
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(name, value)
        return instance_for(merged, key=key, **nested)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    kind = str(kind).lower()  # Gemini's OpenAPI subset spells types in capitals
    if kind == "object":
        props = schema.get("properties") or {}
        names = schema.get("required") or ([] if depth > 8 else list(props))
        return {name: instance_for(props.get(name, {}), key=name, **nested) for name in names}
    if kind == "array":
        prefix = schema.get("prefixItems") or []
        count = max(schema.get("minItems", 0 if depth > 8 else 1), len(prefix))
        count = min(count, schema.get("maxItems", count))
        items = [prefix[i] if i < len(prefix) else schema.get("items", {}) for i in range(count)]
        return [instance_for(item, variant + i, root=root, key=key, depth=depth + 1) for i, item in enumerate(items)]
    if kind in ("integer", "number"):
        return _number_for(schema, variant, integer=kind == "integer")
    if kind == "boolean":
        return variant % 2 == 0
    if kind == "null":
        return None
    return _string_for(schema, key, variant)


def _resolve(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        return {}
    node = root
    for part in ref[1:].split("/"):
        if part:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part, {}) if isinstance(node, dict) else {}
    return node


def _number_for(schema: dict, variant: int, *, integer: bool) -> int | float:
    step = 1 if integer else 0.5
    low = schema.get("minimum", schema["exclusiveMinimum"] + step if "exclusiveMinimum" in schema else None)
    high = schema.get("maximum", schema["exclusiveMaximum"] - step if "exclusiveMaximum" in schema else None)
    value = (low if low is not None else (1 if integer else 1.5)) + variant
    if high is not None:
        value = min(value, high)
    multiple = schema.get("multipleOf")
    if multiple:
        value = multiple * math.ceil(value / multiple)
        if high is not None and value > high:
            value -= multiple
    return int(value) if integer else float(value)


_FORMATS = {"date": "2024-01-15", "date-time": "2024-01-15T09:30:00Z", "time": "09:30:00", "email": "sim@example.com",
            "uri": "https://example.com/sim", "url": "https://example.com/sim", "hostname": "example.com",
            "uuid": "6f1c2a9e-3b7d-4c11-9a0e-5d2f8b7c4e10", "ipv4": "192.0.2.1", "ipv6": "2001:db8::1"}


def _string_for(schema: dict, key: str, variant: int) -> str:
    if schema.get("format") in _FORMATS:
        return _FORMATS[schema["format"]]
    text = f"{key} {variant + 1}" if variant else key
    text = text.ljust(schema.get("minLength", 0), "x")
    return text[:schema["maxLength"]] if "maxLength" in schema else text
