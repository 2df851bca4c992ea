"""Checks that an answer is the JSON a request's ``response_format`` asked
for, where the upstream cannot guarantee it (emulated ``json_object``,
``json_schema`` with bounds the upstream does not enforce, or a server that
refused ``json_schema`` and was asked for ``json_object`` instead)."""

from __future__ import annotations

from collections.abc import Iterable

import jsonschema
import orjson

from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb

ANY_OBJECT = {"type": "object"}


class OutputCheck:
    """The validator for one request's ``response_format``."""

    def __init__(self, response_format: pb.ResponseFormat) -> None:
        self.kind = response_format.type
        schema = orjson.loads(response_format.schema_json or "{}") if self.kind == "json_schema" else ANY_OBJECT
        self._validator = jsonschema.Draft202012Validator(schema)

    def problem(self, events: Iterable[ppb.GenerateEvent]) -> str:
        """Why the answer is not what was asked for; empty when it is. A
        choice that called tools instead of answering is not checked."""
        texts: dict[int, list[str]] = {}
        called: set[int] = set()
        for event in events:
            for delta in event.chunk.choices:
                texts.setdefault(delta.index, []).append(delta.content)
                if delta.tool_calls:
                    called.add(delta.index)
        for index, parts in sorted(texts.items()):
            if index in called:
                continue
            try:
                self._validator.validate(orjson.loads("".join(parts)))
            except orjson.JSONDecodeError:
                return f"choice {index} is not valid JSON"
            except jsonschema.ValidationError as exc:
                if self.kind != "json_schema":
                    return f"choice {index} is not a JSON object"
                return f"choice {index} does not match the schema: {exc.message}"
        return ""
