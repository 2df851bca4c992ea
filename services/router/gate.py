"""The cascade's quality gate: is a tier's complete, buffered answer good
enough to return, or should the next tier try?

Checked: the answer is complete (no error, usage closed it, every choice has
a finish reason) and no choice finished for a rejected reason (``length``,
``content_filter`` by default); JSON output parses when JSON was requested
and matches the schema for ``json_schema``; a tool call is present when
``tool_choice`` requires one (the named one when it names one); the text is
at least ``min_chars`` long when set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jsonschema
import orjson

from switchyard import event_tags
from switchyard.config import CascadeGate
from switchyard.v1 import chat_pb2 as pb


@dataclass(slots=True)
class _Choice:
    text: list[str] = field(default_factory=list)
    finish: str = ""
    tools: list[str] = field(default_factory=list)


def judge(events: list[bytes], request: pb.ChatRequest, gate: CascadeGate) -> str | None:
    """None when the answer passes, else why it does not (for the trace)."""
    choices: dict[int, _Choice] = {}
    complete = False
    for raw in events:
        tag = raw[0] if raw else 0
        if tag == event_tags.ERROR:
            return "failed after output"
        if tag == event_tags.USAGE:
            complete = True
        elif tag == event_tags.CHUNK:
            for delta in pb.ChatEvent.FromString(raw).chunk.choices:
                choice = choices.setdefault(delta.index, _Choice())
                if delta.content:
                    choice.text.append(delta.content)
                choice.tools.extend(call.name for call in delta.tool_calls if call.name)
                if delta.finish_reason:
                    choice.finish = delta.finish_reason
    if not complete or not choices:
        return "incomplete answer"
    validator = _schema_validator(request)
    for index, choice in sorted(choices.items()):
        if not choice.finish:
            return f"choice {index} has no finish reason"
        if choice.finish in gate.reject_finish_reasons:
            return f"finish_reason {choice.finish}"
        problem = _tool_problem(choice, request.tool_choice) or _format_problem(choice, request, validator)
        if problem:
            return f"choice {index}: {problem}"
        if gate.min_chars and not choice.tools and len("".join(choice.text)) < gate.min_chars:
            return f"choice {index}: shorter than {gate.min_chars} characters"
    return None


def _tool_problem(choice: _Choice, tool_choice: pb.ToolChoice) -> str | None:
    kind = tool_choice.WhichOneof("choice")
    if kind == "function_name" and tool_choice.function_name not in choice.tools:
        return f"no call to the required tool {tool_choice.function_name!r}"
    if kind == "mode" and tool_choice.mode == "required" and not choice.tools:
        return "no tool call although tool_choice is required"
    return None


def _schema_validator(request: pb.ChatRequest) -> jsonschema.protocols.Validator | None:
    fmt = request.response_format
    if fmt.type != "json_schema" or not fmt.schema_json:
        return None
    return jsonschema.Draft202012Validator(orjson.loads(fmt.schema_json))


def _format_problem(choice: _Choice, request: pb.ChatRequest,
                    validator: jsonschema.protocols.Validator | None) -> str | None:
    if request.response_format.type not in ("json_object", "json_schema") or choice.tools:
        return None
    try:
        value = orjson.loads("".join(choice.text))
    except orjson.JSONDecodeError:
        return "not valid JSON"
    if validator is not None:
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            return f"does not match the schema: {error.message}"
    return None
