"""The check of JSON output an upstream cannot guarantee."""

from __future__ import annotations

import pytest

from providers.structured import OutputCheck
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import provider_pb2 as ppb


def answer(*texts: str, calls: bool = False) -> list[ppb.GenerateEvent]:
    deltas = [pb.ChoiceDelta(index=i, content=t) for i, t in enumerate(texts)]
    if calls:
        deltas[0].tool_calls.add(index=0, id="c", name="f", arguments="{}")
    return [ppb.GenerateEvent(chunk=pb.Chunk(choices=deltas))]


@pytest.mark.parametrize(("deltas", "problem"), [
    ([(0, '{"a": 1}')], ""),
    ([(0, '{"a"'), (0, ": 1}")], ""),  # fragments of one choice are joined
    ([(0, "[1, 2]")], "choice 0 is not a JSON object"),
    ([(0, '"text"')], "choice 0 is not a JSON object"),
    ([(0, "Sure! {}")], "choice 0 is not valid JSON"),
    ([(0, '{"a": 1}'), (1, "nope")], "choice 1 is not valid JSON"),
])
def test_json_object(deltas: list[tuple[int, str]], problem: str) -> None:
    events = [ppb.GenerateEvent(chunk=pb.Chunk(choices=[pb.ChoiceDelta(index=i, content=t)])) for i, t in deltas]
    assert OutputCheck(pb.ResponseFormat(type="json_object")).problem(events) == problem


def test_json_schema_and_tool_calls() -> None:
    check = OutputCheck(pb.ResponseFormat(type="json_schema", schema_json='{"type": "object", "required": ["x"]}'))
    assert check.problem(answer('{"x": 1}')) == ""
    assert check.problem(answer('{"y": 1}')).startswith("choice 0 does not match the schema: 'x' is a required")
    assert check.problem(answer("", calls=True)) == ""  # a tool call is not an answer to check
