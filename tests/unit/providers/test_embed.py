"""Embeddings and token counting in each translator, fed recorded answers
(no socket): request bodies, vector decoding, usage, refusals."""

from __future__ import annotations

import base64
from array import array

import orjson
import pytest

from providers.anthropic import AnthropicTranslator
from providers.attempt import AttemptSpec
from providers.base import UpstreamProtocolError, UpstreamStreamError
from providers.gemini import GeminiTranslator
from providers.openai import OpenAITranslator
from providers.openai_compat import OpenAICompatTranslator
from providers.unary import count_tokens
from switchyard import tokens
from switchyard.config import ProviderSpec, Timeouts
from switchyard.errors import InvalidRequestError
from switchyard.v1 import chat_pb2 as pb
from switchyard.v1 import embed_pb2 as epb

VECTORS = [[0.5, -0.25, 1.0], [0.125, 0.0, -1.5]]


def floats(raw: bytes) -> list[float]:
    return array("f", raw).tolist()


def openai() -> OpenAITranslator:
    return OpenAITranslator("oa", ProviderSpec(type="openai", base_url="https://api.example/v1"), "sk-test")


def compat() -> OpenAICompatTranslator:
    return OpenAICompatTranslator("local", ProviderSpec(type="openai_compat", base_url="http://127.0.0.1:8/v1"), None)


def gemini() -> GeminiTranslator:
    return GeminiTranslator("g", ProviderSpec(type="gemini", base_url="https://gen.example"), "gk")


def request(*texts: str, dimensions: int | None = None, **extra: object) -> epb.EmbedRequest:
    out = epb.EmbedRequest(model="x", inputs=[epb.EmbedInput(text=t) for t in texts], user="u1")
    if dimensions is not None:
        out.dimensions = dimensions
    if extra:
        out.extra.update(extra)
    return out


def test_openai_asks_for_base64_and_decodes_it_without_floats() -> None:
    up = openai().build_embed_request(request("a", "b", dimensions=2), "text-embedding-3-small")
    assert up.url == "https://api.example/v1/embeddings" and up.headers["authorization"] == "Bearer sk-test"
    assert orjson.loads(up.body) == {"model": "text-embedding-3-small", "input": ["a", "b"],
                                     "encoding_format": "base64", "dimensions": 2, "user": "u1"}
    data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(array("f", v).tobytes()).decode()}
            for i, v in reversed(list(enumerate(VECTORS)))]  # out of order: placed by index
    body = orjson.dumps({"data": data, "model": "text-embedding-3-small", "usage": {"prompt_tokens": 4,
                                                                                     "total_tokens": 4}})
    answer = openai().parse_embed_response(body, request("a", "b"))
    assert [floats(v) for v in answer.vectors] == VECTORS
    assert answer.usage.prompt_tokens == 4 and not answer.estimated
    assert answer.model == "text-embedding-3-small"  # the attempt span's gen_ai.response.model


def test_compat_asks_for_floats_passes_extras_and_estimates_missing_usage() -> None:
    req = request("abcdefgh", "x", input_type="query")
    body = orjson.loads(compat().build_embed_request(req, "bge").body)
    assert body["encoding_format"] == "float" and body["input_type"] == "query"
    answer = compat().parse_embed_response(orjson.dumps({"data": [{"index": i, "embedding": v}
                                                                  for i, v in enumerate(VECTORS)]}), req)
    assert [floats(v) for v in answer.vectors] == VECTORS
    assert answer.estimated and answer.usage.prompt_tokens == 2 + 1  # 4 bytes of UTF-8 a token, at least 1
    assert answer.model == ""  # the server named no model
    accented = compat().parse_embed_response(orjson.dumps({"data": [{"index": 0, "embedding": VECTORS[0]}]}),
                                             request("éééé"))
    assert accented.usage.prompt_tokens == 2  # 8 bytes: counted as metering counts, never under the bytes


def test_token_inputs_and_refused_extras() -> None:
    req = epb.EmbedRequest(inputs=[epb.EmbedInput(tokens=[1, 2]), epb.EmbedInput(tokens=[3])])
    assert orjson.loads(openai().build_embed_request(req, "m").body)["input"] == [[1, 2], [3]]
    with pytest.raises(InvalidRequestError) as info:
        openai().build_embed_request(request("a", input_type="query"), "m")
    assert info.value.param == "input_type"


@pytest.mark.parametrize("answer", [
    {"data": [{"index": 0, "embedding": [1.0]}]},                                # one vector for two inputs
    {"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]},  # an index twice
    {"data": [{"index": 0, "embedding": "not base64!"}, {"index": 1, "embedding": [1.0]}]},
    {"data": [{"index": 0, "embedding": ["x"]}, {"index": 1, "embedding": [1.0]}]},
])
def test_malformed_answers(answer: dict) -> None:
    with pytest.raises(UpstreamProtocolError):
        openai().parse_embed_response(orjson.dumps(answer), request("a", "b"))


def test_error_envelope_in_a_200() -> None:
    body = orjson.dumps({"error": {"message": "slow down", "type": "rate_limit_error", "code": 429}})
    with pytest.raises(UpstreamStreamError) as info:
        compat().parse_embed_response(body, request("a"))
    assert info.value.error.status == 429


def test_gemini_single_and_batch() -> None:
    single = gemini().build_embed_request(request("a", dimensions=8, task_type="RETRIEVAL_QUERY"),
                                          "gemini-embedding-001")
    assert single.url == "https://gen.example/v1beta/models/gemini-embedding-001:embedContent"
    assert single.headers["x-goog-api-key"] == "gk"
    assert orjson.loads(single.body) == {"content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8,
                                         "taskType": "RETRIEVAL_QUERY"}
    batch = gemini().build_embed_request(request("a", "b"), "gemini-embedding-001")
    assert batch.url.endswith(":batchEmbedContents")
    assert orjson.loads(batch.body) == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": t}]}} for t in ("a", "b")]}
    answer = gemini().parse_embed_response(orjson.dumps({"embeddings": [{"values": v} for v in VECTORS]}),
                                           request("a", "b"))
    assert [floats(v) for v in answer.vectors] == VECTORS and answer.estimated
    one = gemini().parse_embed_response(orjson.dumps({"embedding": {"values": VECTORS[0]}}), request("a"))
    assert floats(one.vectors[0]) == VECTORS[0]


@pytest.mark.parametrize(("req", "param"), [
    (epb.EmbedRequest(inputs=[epb.EmbedInput(tokens=[1])]), "input"),
    (request(*(["a"] * 101)), "input"),
    (request("a", input_type="query"), "input_type"),
])
def test_gemini_refusals(req: epb.EmbedRequest, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        gemini().build_embed_request(req, "gemini-embedding-001")
    assert info.value.param == param


def test_anthropic_has_no_embeddings() -> None:
    translator = AnthropicTranslator("an", ProviderSpec(type="anthropic", base_url="https://x"), "k")
    with pytest.raises(InvalidRequestError) as info:
        translator.build_embed_request(request("a"), "claude")
    assert info.value.code == "embeddings_not_supported"


def test_native_token_counting_requests() -> None:
    chat = pb.ChatRequest(model="m", messages=[pb.Message(role="system", text="be brief"),
                                               pb.Message(role="user", text="hi")])
    chat.sampling.max_tokens = 100
    chat.sampling.temperature = 0.5
    anthropic = AnthropicTranslator("an", ProviderSpec(type="anthropic", base_url="https://x"), "k")
    up = anthropic.build_count_request(chat, "claude-sonnet-4-5")
    assert up.url == "https://x/v1/messages/count_tokens"
    assert set(orjson.loads(up.body)) == {"model", "messages", "system"}  # nothing that only shapes the answer
    assert anthropic.parse_count_response(b'{"input_tokens": 12}') == 12
    up = gemini().build_count_request(chat, "gemini-2.5-flash")
    assert up.url == "https://gen.example/v1beta/models/gemini-2.5-flash:countTokens"
    generate = orjson.loads(up.body)["generateContentRequest"]
    assert generate["model"] == "models/gemini-2.5-flash" and generate["systemInstruction"]
    assert gemini().parse_count_response(b'{"totalTokens": 9}') == 9
    assert openai().build_count_request(chat, "gpt-4o") is None  # no counting API: estimated


async def test_a_count_without_a_counting_api_is_the_metering_estimate() -> None:
    chat = pb.ChatRequest(model="gpt-4o", messages=[pb.Message(role="system", text="Answer in French."),
                                                    pb.Message(role="user", text="héllo " * 50)])
    spec = AttemptSpec(translator=openai(), session=None, model="gpt-4o", timeouts=Timeouts(),  # type: ignore[arg-type]
                       pricing=None)
    counted = await count_tokens(spec, chat, None)
    # What an upstream that reports no usage would be billed for this prompt.
    assert counted.estimated and counted.input_tokens == tokens.prompt_tokens(chat)
