"""Every error class through the real mesh: the right status, an OpenAI
error envelope naming the field, and no upstream call for bad input."""

from __future__ import annotations

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh
from tests.e2e.conftest import marker
from tests.e2e.test_chat import sim_requests


async def post_raw(mesh: Mesh, body: bytes, *, key: str | None = None,
                   content_type: str = "application/json") -> tuple[int, dict]:
    headers = {"content-type": content_type}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    async with aiohttp.ClientSession() as http, http.post(f"{mesh.base_url}/chat/completions", data=body,
                                                          headers=headers) as response:
        return response.status, await response.json(content_type=None)


def assert_envelope(body: dict, param: str | None = None) -> None:
    """``body`` is a whole HTTP error body; SDK errors carry only its inner
    ``error`` object, so pass ``{"error": exc.body}`` for those."""
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize(("field", "value"), [
    ("temperature", 2.5), ("top_p", 1.5), ("presence_penalty", -3), ("frequency_penalty", 2.1),
    ("top_logprobs", 21), ("max_tokens", 0), ("n", 0), ("user", "u" * 257),
])
async def test_out_of_range_parameter_names_the_field(client: AsyncOpenAI, mesh: Mesh, field: str,
                                                      value: object) -> None:
    tag = marker()
    extra = {"logprobs": True} if field == "top_logprobs" else {}
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": tag}],
                                             extra_body={field: value, **extra})
    assert info.value.status_code == 400
    assert_envelope({"error": info.value.body}, field)
    assert await sim_requests(mesh, tag) == []


async def test_empty_messages_and_unknown_role(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert info.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "wizard", "content": "x"}])
    assert "messages" in info.value.body["param"]


@pytest.mark.parametrize(("body", "content_type"), [
    (b'{"model": "gpt-4o-mini", "messages": [', "application/json"),
    (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\xff\xfe"}]}', "application/json"),
    (b'{"model": "gpt-4o-mini", "temperature": NaN, "messages": [{"role": "user", "content": "x"}]}',
     "application/json"),
    (b"[" * 5000 + b"]" * 5000, "application/json"),
    (b'["not", "an", "object"]', "application/json"),
    (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}', "text/plain"),
])
async def test_malformed_bodies_are_400(mesh: Mesh, body: bytes, content_type: str) -> None:
    status, payload = await post_raw(mesh, body, key=mesh.api_key, content_type=content_type)
    assert status == 400
    assert_envelope(payload)
    assert payload["error"]["type"] == "invalid_request_error"


async def test_oversized_body_is_413(mesh: Mesh) -> None:
    tag = marker()
    big = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "' + tag.encode() + b"x" * (
        9 * 1024 * 1024) + b'"}]}'
    status, payload = await post_raw(mesh, big, key=mesh.api_key)
    assert status == 413
    assert_envelope(payload)
    assert await sim_requests(mesh, tag) == []


async def test_missing_and_wrong_key_are_401(mesh: Mesh) -> None:
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}'
    status, payload = await post_raw(mesh, body)
    assert status == 401
    assert_envelope(payload)
    status, payload = await post_raw(mesh, body, key="sy_" + "0" * 40)
    assert status == 401
    assert payload["error"]["type"] == "authentication_error"


async def test_api_key_header_conventions(mesh: Mesh) -> None:
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}'
    for header in ("api-key", "x-muxx-api-key"):
        async with aiohttp.ClientSession() as http, http.post(
                f"{mesh.base_url}/chat/completions", data=body,
                headers={"content-type": "application/json", header: mesh.api_key}) as response:
            assert response.status == 200, header


async def test_model_not_allowed_for_key_is_403(mesh: Mesh) -> None:
    async with AsyncOpenAI(base_url=mesh.base_url, api_key=mesh.limited_key, max_retries=0) as limited:
        with pytest.raises(openai.PermissionDeniedError) as info:
            await limited.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        assert info.value.body["param"] == "model"
        ok = await limited.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        assert ok.choices[0].message.content


async def test_unknown_model_is_404(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["param"] == "model"


async def test_upstream_rate_limit_is_429_with_retry_after(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "[[sim status=429 retry_after=7]]"}])
    assert info.value.response.headers["retry-after"] == "7"
    assert_envelope({"error": info.value.body})


async def test_upstream_server_error_is_5xx(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "[[sim status=500]]"}])
    assert info.value.status_code in (502, 503)


async def test_upstream_400_keeps_its_type(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "[[sim status=400]]"}])
    assert info.value.body["type"] == "invalid_request_error"


async def test_failure_after_first_byte_ends_stream_with_error(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", stream=True,
        messages=[{"role": "user", "content": "one two three four [[sim error_after=2]]"}])
    received = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            received.append(chunk)
    assert any(c.choices and c.choices[0].delta.content for c in received)


async def test_cut_stream_is_not_a_clean_finish(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", stream=True,
        messages=[{"role": "user", "content": "one two three four [[sim cut_after=2]]"}])
    finishes = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            finishes.extend(c.finish_reason for c in chunk.choices if c.finish_reason)
    assert finishes == []


async def test_fallback_before_first_byte_is_invisible(client: AsyncOpenAI, mesh: Mesh) -> None:
    tag = marker()
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"{tag} [[sim status=503 model=gpt-4o-mini]]"}],
        extra_body={"fallbacks": ["backup/sim-backup"]})
    completion = raw.parse()
    assert raw.headers["x-switchyard-provider"] == "backup"
    assert raw.headers["x-switchyard-attempt"] == "2"
    assert completion.model == "sim-backup"
    assert tag in completion.choices[0].message.content
    seen = await sim_requests(mesh, tag)
    assert [r["body"]["model"] for r in seen] == ["gpt-4o-mini", "sim-backup"]


async def test_silent_upstream_is_504_after_first_token_timeout(client: AsyncOpenAI) -> None:
    # The test config gives openai a 2 s time-to-first-token limit.
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "[[sim delay_ms=4000]]"}])
    assert info.value.status_code == 504
    assert info.value.body["type"] == "timeout_error"


async def test_stalled_upstream_times_out_with_504(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", stream=True,
        messages=[{"role": "user", "content": "one two three [[sim stall_after=1]]"}])
    with pytest.raises(openai.APIError) as info:
        async for _ in stream:
            pass
    assert "stalled" in str(info.value)
