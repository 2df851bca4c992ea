"""GET /v1/models and /v1/models/{id} with the openai SDK: models, aliases,
routing configs (with versions) and templates, with the key's scope."""

from __future__ import annotations

import openai
import pytest
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh


async def test_listing_holds_every_kind(client: AsyncOpenAI) -> None:
    models = {m.id: m for m in (await client.models.list()).data}
    assert models["gpt-4o-mini"].owned_by == "openai" and models["gpt-4o-mini"].kind == "model"
    assert (models["fast"].kind, models["fast"].model) == ("alias", "openai/gpt-4o-mini")
    route = models["@production"]
    assert (route.kind, route.strategy, route.version) == ("route", "fallback", 1)
    assert route.description == "Main traffic, with a second provider behind it."
    assert (models["summarize"].kind, models["summarize"].model) == ("template", "fast")


async def test_retrieve(client: AsyncOpenAI) -> None:
    model = await client.models.retrieve("claude-haiku-4-5")
    assert (model.id, model.object, model.owned_by) == ("claude-haiku-4-5", "model", "anthropic")
    # A pass-through provider serves any name: retrievable as a request would resolve it.
    assert (await client.models.retrieve("local/meta-llama/Llama-3-8B")).owned_by == "local"
    pinned = await client.models.retrieve("@production@1")
    assert (pinned.kind, pinned.version) == ("route", 1)
    with pytest.raises(openai.NotFoundError) as info:
        await client.models.retrieve("no-such-model")
    assert info.value.response.headers["x-request-id"]


async def test_scope(mesh: Mesh) -> None:
    async with AsyncOpenAI(base_url=mesh.base_url, api_key=mesh.limited_key, max_retries=0) as limited:  # type: ignore[attr-defined]
        ids = {m.id for m in (await limited.models.list()).data}
        # allowed_models: [gpt-4o-mini, "@scoped"]: what those reach, nothing else.
        assert {"gpt-4o-mini", "fast", "@scoped"} <= ids
        assert not ids & {"claude-sonnet-4-5", "sim-backup", "@production", "gemini-2.5-flash"}
        assert "summarize" in ids  # its model (fast) is in scope
        with pytest.raises(openai.PermissionDeniedError):
            await limited.models.retrieve("claude-sonnet-4-5")
        assert (await limited.models.retrieve("@scoped")).kind == "route"
