"""The simulated embeddings and token-counting APIs as the official SDKs
see them (openai, google-genai, anthropic), and what they reject."""

from __future__ import annotations

import base64
import secrets
from array import array
from collections.abc import AsyncIterator

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors, types

from simulator.embeddings import COMPAT_DIMENSIONS, vector_for
from tests.conftest import SimServer

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")


@pytest.fixture
async def oa(simulator: SimServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=simulator.url + "/v1", api_key="sk-" + secrets.token_hex(8),
                                  max_retries=0) as client:
        yield client


@pytest.fixture
async def google(simulator: SimServer) -> AsyncIterator[genai.Client]:
    client = genai.Client(api_key=secrets.token_hex(16),
                          http_options=types.HttpOptions(base_url=simulator.url, api_version="v1beta"))
    try:
        yield client
    finally:
        await client.aio.aclose()


async def test_openai_float_base64_and_dimensions(oa: openai.AsyncOpenAI) -> None:
    floats = await oa.embeddings.create(model="text-embedding-3-small", input=["a b", "c"], encoding_format="float")
    assert [len(d.embedding) for d in floats.data] == [1536, 1536]
    assert floats.usage.prompt_tokens == 3
    packed = await oa.embeddings.create(model="text-embedding-3-small", input="a b", encoding_format="base64")
    assert array("f", base64.b64decode(packed.data[0].embedding)).tolist() == \
        array("f", floats.data[0].embedding).tolist()
    short = await oa.embeddings.create(model="text-embedding-3-large", input="a b", dimensions=64)
    assert short.data[0].embedding == pytest.approx(vector_for("a b", 64, 3072), rel=1e-6)


@pytest.mark.parametrize(("kwargs", "status"), [
    ({"model": "text-embedding-3-small", "input": ""}, 400),
    ({"model": "text-embedding-3-small", "input": ["x"] * 2049}, 400),
    ({"model": "text-embedding-3-small", "input": "word " * 8193}, 400),
    ({"model": "text-embedding-3-small", "input": [[100258]]}, 400),
    ({"model": "text-embedding-ada-002", "input": "x", "dimensions": 8}, 400),
    ({"model": "text-embedding-3-small", "input": "x", "dimensions": 1537}, 400),
    ({"model": "text-embedding-3-small", "input": "x", "extra_body": {"task_type": "x"}}, 400),
    ({"model": "gpt-4o-mini", "input": "x"}, 404),
])
async def test_openai_rejects(oa: openai.AsyncOpenAI, kwargs: dict, status: int) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        await oa.embeddings.create(**kwargs)
    assert info.value.status_code == status


async def test_compat_flavour(simulator: SimServer) -> None:
    async with openai.AsyncOpenAI(base_url=simulator.url + "/compat/v1", api_key="none", max_retries=0) as compat:
        result = await compat.embeddings.create(model="any-local-model", input=["x"],
                                                extra_body={"input_type": "query"})  # unknown fields are ignored
    assert len(result.data[0].embedding) == COMPAT_DIMENSIONS


async def test_gemini_single_batch_and_rejections(google: genai.Client) -> None:
    one = await google.aio.models.embed_content(model="gemini-embedding-001", contents="hello there",
                                                config=types.EmbedContentConfig(output_dimensionality=32))
    assert one.embeddings[0].values == pytest.approx(vector_for("hello there", 32, 3072), rel=1e-6)
    many = await google.aio.models.embed_content(model="gemini-embedding-001", contents=["a", "b", "c"],
                                                 config=types.EmbedContentConfig(task_type="RETRIEVAL_DOCUMENT"))
    assert [len(e.values) for e in many.embeddings] == [3072] * 3
    with pytest.raises(errors.ClientError) as info:
        await google.aio.models.embed_content(model="gemini-2.5-flash", contents="x")
    assert info.value.code == 404
    with pytest.raises(errors.ClientError) as info:
        await google.aio.models.embed_content(model="gemini-embedding-001", contents=["x"] * 101)
    assert info.value.code == 400
    with pytest.raises(errors.ClientError):
        await google.aio.models.embed_content(model="gemini-embedding-001", contents="x",
                                              config=types.EmbedContentConfig(output_dimensionality=4000))


async def test_token_counting(google: genai.Client, simulator: SimServer) -> None:
    counted = await google.aio.models.count_tokens(model="gemini-2.5-flash", contents="one two three")
    assert counted.total_tokens == 3
    async with anthropic.AsyncAnthropic(base_url=simulator.url, api_key="k", max_retries=0) as claude:
        result = await claude.messages.count_tokens(model="claude-haiku-4-5",
                                                    messages=[{"role": "user", "content": "one two"}])
        assert result.input_tokens == 2
        with pytest.raises(anthropic.BadRequestError) as info:
            await claude.messages.count_tokens(model="claude-haiku-4-5", extra_body={"max_tokens": 5},
                                               messages=[{"role": "user", "content": "x"}])
        assert "max_tokens: Extra inputs are not permitted" in info.value.message
