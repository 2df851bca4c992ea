from __future__ import annotations

import pytest

from switchyard.conditions import ConditionError, RequestFacts, compile_condition
from switchyard.v1 import chat_pb2 as pb


def facts(**kwargs: object) -> RequestFacts:
    request = pb.ChatRequest(model="m", messages=[pb.Message(role="user", text="x" * 400)])
    request.routing.tags.update(kwargs.pop("tags", {}))  # type: ignore[arg-type]
    for name, value in kwargs.items():
        setattr(request, name, value)
    return RequestFacts(request)


@pytest.mark.parametrize(("condition", "expected"), [
    ({"tags.tier": "premium"}, True),
    ({"tags.tier": {"ne": "premium"}}, False),
    ({"tags.tier": {"in": ["gold", "premium"]}}, True),
    ({"tags.tier": {"nin": ["gold", "premium"]}}, False),
    ({"tags.tier": {"regex": "^prem"}}, True),
    ({"tags.team": {"exists": False}}, True),
    ({"tags.team": "x"}, False),          # an absent fact satisfies only ne / nin / exists: false
    ({"tags.team": {"ne": "x"}}, True),
    ({"prompt_tokens": {"gte": 100, "lt": 101}}, True),  # 400 characters ~ 100 tokens
    ({"prompt_chars": {"gt": 400}}, False),
    ({"stream": True}, True),
    ({"tools": True}, False),
    ({"max_tokens": {"gt": 1}}, False),
    ({"and": [{"stream": True}, {"tags.tier": "premium"}]}, True),
    ({"or": [{"tools": True}, {"tags.tier": "gold"}]}, False),
    ({"not": {"tools": True}}, True),
    ({"tags.score": {"gt": 2.5}}, True),  # text facts compare as numbers when they are numbers
])
def test_operators(condition: dict, expected: bool) -> None:
    assert compile_condition(condition)(facts(stream=True, tags={"tier": "premium", "score": "3"})) is expected


@pytest.mark.parametrize(("condition", "where"), [
    ({}, "when"),
    ({"colour": "red"}, "when.colour"),
    ({"tags.x": {"like": "y"}}, "when.tags.x.like"),
    ({"stream": {"gt": 1}}, "when.stream.gt"),
    ({"prompt_tokens": {"gt": "many"}}, "when.prompt_tokens.gt"),
    ({"tags.x": {"regex": "("}}, "when.tags.x.regex"),
    ({"or": []}, "when.or"),
    ({"and": [{"tags.x": {"in": []}}]}, "when.and[0].tags.x.in"),
])
def test_errors_name_the_path(condition: dict, where: str) -> None:
    with pytest.raises(ConditionError) as info:
        compile_condition(condition)
    assert str(info.value).startswith(where + ":")
