"""POST /v1/embeddings through the real mesh with the official openai SDK,
against three upstream types: OpenAI, Gemini (embedContent and
batchEmbedContents) and an OpenAI-compatible server."""

from __future__ import annotations

import base64
import math
from array import array

import openai
import pytest
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh
from simulator.embeddings import COMPAT_DIMENSIONS, MODELS, vector_for
from simulator.gemini_embed import EMBEDDING_MODELS
from tests.e2e.conftest import marker
from tests.e2e.test_chat import sim_requests
from tests.e2e.test_usage import usage_events

# upstream type -> (model through Switchyard, provider name, full dimensions)
UPSTREAMS = {"openai": ("text-embedding-3-small", "openai", MODELS["text-embedding-3-small"][0]),
             "gemini": ("gemini-embedding-001", "gemini", EMBEDDING_MODELS["gemini-embedding-001"]),
             "openai_compat": ("sim-backup", "backup", COMPAT_DIMENSIONS)}
upstreams = pytest.mark.parametrize("upstream", list(UPSTREAMS))


def close(got: list[float], want: list[float]) -> bool:
    """Equal up to float32 rounding (vectors travel as float32)."""
    return len(got) == len(want) and all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7) for a, b in zip(got, want,
                                                                                                         strict=True))


@upstreams
@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_batch(client: AsyncOpenAI, mesh: Mesh, upstream: str, encoding: str) -> None:
    model, provider, full = UPSTREAMS[upstream]
    tag = marker()
    texts = [f"first {tag}", f"second {tag}", "third"]
    raw = await client.embeddings.with_raw_response.create(model=model, input=texts, encoding_format=encoding)
    result = raw.parse()
    assert raw.headers["x-switchyard-provider"] == provider
    assert [d.index for d in result.data] == [0, 1, 2]
    for text, item in zip(texts, result.data, strict=True):
        vector = item.embedding
        if encoding == "base64":  # asked for explicitly, the SDK hands it over undecoded
            vector = array("f", base64.b64decode(vector)).tolist()
        assert close(vector, vector_for(text, full, full))  # the simulator's exact vector
    assert result.usage.prompt_tokens == result.usage.total_tokens > 0
    [seen] = await sim_requests(mesh, tag)
    path = seen["path"]
    if upstream == "gemini":
        assert path.endswith("/models/gemini-embedding-001:batchEmbedContents")
        assert [r["content"]["parts"][0]["text"] for r in seen["body"]["requests"]] == texts
    else:
        assert path.endswith("/embeddings") and seen["body"]["input"] == texts


@upstreams
async def test_single_input_with_dimensions(client: AsyncOpenAI, mesh: Mesh, upstream: str) -> None:
    model, _, full = UPSTREAMS[upstream]
    tag = marker()
    result = await client.embeddings.create(model=model, input=f"one {tag}", dimensions=256)
    [item] = result.data
    assert close(item.embedding, vector_for(f"one {tag}", 256, full))
    [seen] = await sim_requests(mesh, tag)
    if upstream == "gemini":
        assert seen["path"].endswith(":embedContent") and seen["body"]["outputDimensionality"] == 256
    else:
        assert seen["body"]["dimensions"] == 256


async def test_metered_like_chat(client: AsyncOpenAI, mesh: Mesh) -> None:
    raw = await client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["meter", "me"])
    gemini = await client.embeddings.with_raw_response.create(model="gemini-embedding-001", input="estimate me")
    ids = {raw.headers["x-request-id"], gemini.headers["x-request-id"]}
    events = {e.request_id: e for e in await usage_events(mesh, ids)}
    event = events[raw.headers["x-request-id"]]
    tokens = raw.parse().usage.prompt_tokens
    assert (event.endpoint, event.status, event.provider, event.model) == ("embeddings", "ok", "openai",
                                                                           "text-embedding-3-small")
    assert event.usage.prompt_tokens == tokens and event.key_id == "dev" and not event.usage_estimated
    # text-embedding-3-small list price: $0.02 per million input tokens.
    assert event.usage.cost_usd == pytest.approx(tokens * 0.02 / 1e6)
    assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(event.usage.cost_usd, abs=1e-6)
    estimated = events[gemini.headers["x-request-id"]]
    assert estimated.usage_estimated and estimated.usage.prompt_tokens == gemini.parse().usage.prompt_tokens > 0


async def test_fallback_before_any_answer(client: AsyncOpenAI) -> None:
    raw = await client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="[[sim status=503 model=text-embedding-3-small]] fall back",
        extra_body={"fallbacks": ["sim-backup"]})
    assert raw.headers["x-switchyard-provider"] == "backup"
    assert len(raw.parse().data[0].embedding) == COMPAT_DIMENSIONS


async def test_token_input(client: AsyncOpenAI, mesh: Mesh) -> None:
    result = await client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]])
    assert len(result.data) == 2 and result.usage.prompt_tokens == 5
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model="gemini-embedding-001", input=[1, 2, 3])
    assert info.value.body["param"] == "input"


async def test_errors(client: AsyncOpenAI, mesh: Mesh) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model="text-embedding-3-small", input="")
    assert info.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model="text-embedding-3-small", input=["a"] * 2049)
    assert info.value.body["param"] == "input"
    with pytest.raises(openai.NotFoundError):
        await client.embeddings.create(model="no-such-model", input="x")
    # The upstream's own refusal comes through: the model has 1,536 dimensions.
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model="text-embedding-3-small", input="x", dimensions=2000)
    assert info.value.body["param"] == "dimensions"
    # A chat model is not an embeddings model: the upstream says so.
    with pytest.raises(openai.NotFoundError):
        await client.embeddings.create(model="gemini-2.5-flash", input="x")
    # Anthropic has no embeddings API.
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model="claude-haiku-4-5", input="x")
    assert info.value.code == "embeddings_not_supported"
    async with AsyncOpenAI(base_url=mesh.base_url, api_key=mesh.limited_key, max_retries=0) as limited:  # type: ignore[attr-defined]
        with pytest.raises(openai.PermissionDeniedError):
            await limited.embeddings.create(model="text-embedding-3-small", input="x")
