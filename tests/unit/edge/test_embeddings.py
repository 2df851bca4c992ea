"""POST /v1/embeddings at the edge without sockets: every input shape OpenAI
accepts becomes canonical inputs, bad ones are a 400 naming ``input``, and
the answer renders as floats or base64 of the same float32 bytes."""

from __future__ import annotations

import base64
from array import array
from typing import Any

import orjson
import pytest

from edge.embeddings import parse_embedding_request, render, to_embed_request
from switchyard.config import Limits
from switchyard.errors import InvalidRequestError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb


def canonical(**body: Any) -> epb.EmbedRequest:
    req = parse_embedding_request(orjson.dumps({"model": "m", **body}), Limits())
    return to_embed_request(req, request_id="r", identity=pb.Identity(key_id="k"), routing=pb.RoutingContext())


@pytest.mark.parametrize(("value", "texts", "tokens"), [
    ("one", ["one"], [[]]),
    (["a", "b"], ["a", "b"], [[], []]),
    ([1, 2, 3], [""], [[1, 2, 3]]),
    ([[1], [2, 3]], ["", ""], [[1], [2, 3]]),
])
def test_input_shapes(value: Any, texts: list[str], tokens: list[list[int]]) -> None:
    out = canonical(input=value)
    assert [i.text for i in out.inputs] == texts and [list(i.tokens) for i in out.inputs] == tokens


def test_options_extensions_and_extras() -> None:
    out = canonical(input="x", dimensions=8, user="u", fallbacks=["b"], input_type="query", **{"mlx:tags": {"t": "1"}})
    assert out.dimensions == 8 and out.user == "u"
    assert list(out.routing.fallbacks) == ["b"] and dict(out.routing.tags) == {"t": "1"}
    assert out.extra.fields["input_type"].string_value == "query"


@pytest.mark.parametrize("body", [
    {"input": ""}, {"input": []}, {"input": ["a", ""]}, {"input": ["a"] * 2049}, {"input": [-1]},
    {"input": [["a"]]}, {"input": {"a": 1}}, {},
])
def test_bad_input_names_it(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as info:
        canonical(**body)
    assert info.value.param is not None and info.value.param.startswith("input")


def test_bad_options() -> None:
    with pytest.raises(InvalidRequestError) as info:
        canonical(input="x", encoding_format="hex")
    assert info.value.param == "encoding_format"
    with pytest.raises(InvalidRequestError) as info:
        canonical(input="x", dimensions=0)
    assert info.value.param == "dimensions"


def test_render_floats_and_base64() -> None:
    raw = array("f", [0.5, -0.25]).tobytes()
    reply = epb.EmbedResponse(vectors=[raw, raw], usage=pb.Usage(prompt_tokens=3), started=pb.Started(model="e3"))
    floats = orjson.loads(render(reply, as_base64=False))
    assert floats == {"object": "list", "model": "e3", "usage": {"prompt_tokens": 3, "total_tokens": 3},
                      "data": [{"object": "embedding", "index": i, "embedding": [0.5, -0.25]} for i in (0, 1)]}
    packed = orjson.loads(render(reply, as_base64=True))
    assert base64.b64decode(packed["data"][1]["embedding"]) == raw
