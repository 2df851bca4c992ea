"""Routing configs, templates, retries, breakers, key scope and the response
headers, through the real mesh with the openai SDK."""

from __future__ import annotations

import json
import time

import openai
import pytest
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh
from tests.e2e.conftest import marker
from tests.e2e.test_chat import sim_requests


def say(tag: str, directive: str = "") -> list[dict]:
    return [{"role": "user", "content": f"hello {tag} {directive}".strip()}]


async def models_seen(mesh: Mesh, tag: str) -> list[str]:
    return [r["body"].get("model", r["path"]) for r in await sim_requests(mesh, tag)]


# ------------------------------------------------------------- fallback --


async def test_production_falls_back_before_the_first_byte_with_config_headers(client: AsyncOpenAI,
                                                                               mesh: Mesh) -> None:
    tag = marker()
    raw = await client.chat.completions.with_raw_response.create(
        model="@production", messages=say(tag, "[[sim model=gpt-4o-mini status=503]]"))
    completion = raw.parse()
    assert raw.headers["x-modelux-config"] == "@production"
    assert int(raw.headers["x-modelux-config-version"]) >= 1
    assert raw.headers["x-modelux-provider"] == raw.headers["x-switchyard-provider"] == "anthropic"
    assert raw.headers["x-modelux-model-used"] == "claude-haiku-4-5" == completion.model
    assert raw.headers["x-modelux-request-id"] == raw.headers["x-request-id"] == raw.headers["x-muxx-request-id"]
    assert float(raw.headers["x-modelux-cost-usd"]) == float(raw.headers["x-muxx-cost"]) > 0
    assert int(raw.headers["x-modelux-latency-ms"]) >= 0
    # `fast` is retried once in place (retry: {max_attempts: 2}), then the next target answers.
    assert await models_seen(mesh, tag) == ["gpt-4o-mini", "gpt-4o-mini", "claude-haiku-4-5"]
    extra = completion.model_extra["extra_fields"]
    assert (extra["model_requested"], extra["route"], extra["provider"]) == ("@production", "@production",
                                                                               "anthropic")


async def test_production_stream_carries_headers_and_cost_in_the_usage_chunk(client: AsyncOpenAI) -> None:
    tag = marker()
    async with client.chat.completions.with_streaming_response.create(
            model="@production", messages=say(tag, "[[sim model=gpt-4o-mini status=500]]"), stream=True,
            stream_options={"include_usage": True}) as response:
        assert response.headers["x-modelux-config"] == "@production"
        assert response.headers["x-modelux-provider"] == "anthropic"
        chunks = [chunk async for chunk in await response.parse()]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "claude-haiku-4-5" in text
    last = chunks[-1]
    assert last.usage.completion_tokens > 0
    assert last.model_extra["extra_fields"]["cost_usd"] > 0
    assert last.model_extra["extra_fields"]["latency"] >= 0


# ------------------------------------------------------------- weighted --


async def test_sticky_experiment_keeps_each_user_on_one_arm(client: AsyncOpenAI) -> None:
    arms: dict[str, set[str]] = {}
    for user in range(12):
        for stream in (False, True):
            tag = marker()
            body = {"mlx:end_user": f"user-{user}"}
            if stream:
                async with client.chat.completions.with_streaming_response.create(
                        model="@fast-exp", messages=say(tag), stream=True, extra_body=body) as response:
                    arm, used = response.headers["x-switchyard-arm"], response.headers["x-modelux-model-used"]
                    async for _ in await response.parse():
                        pass
            else:
                raw = await client.chat.completions.with_raw_response.create(
                    model="@fast-exp", messages=say(tag), extra_body=body)
                arm, used = raw.headers["x-switchyard-arm"], raw.headers["x-modelux-model-used"]
            assert used == {"control": "gpt-4o-mini", "candidate": "gemini-2.5-flash"}[arm]
            arms.setdefault(f"user-{user}", set()).add(arm)
    assert all(len(seen) == 1 for seen in arms.values())  # sticky
    assert {arm for seen in arms.values() for arm in seen} == {"control", "candidate"}  # 12 users: both arms (p≈0.9995)


# ---------------------------------------------------------- conditional --


@pytest.mark.parametrize("stream", [False, True])
async def test_conditional_routes_on_tags_from_body_or_header(client: AsyncOpenAI, stream: bool) -> None:
    async def used(**kwargs: object) -> str:
        async with client.chat.completions.with_streaming_response.create(
                model="@support", messages=say(marker()), stream=stream, **kwargs) as response:
            if stream:
                async for _ in await response.parse():
                    pass
            return response.headers["x-modelux-model-used"]

    assert await used(extra_body={"mlx:tags": {"tier": "premium"}}) == "claude-sonnet-4-6"
    assert await used(extra_headers={"X-Muxx-Metadata": json.dumps({"tier": "premium"})}) == "claude-sonnet-4-6"
    assert await used(extra_body={"mlx:tags": {"tier": "free"}}) == "gpt-4o-mini"  # default: @production → fast


# -------------------------------------------------------------- cascade --


async def test_json_cascade_returns_the_first_answer_that_passes_the_gate(client: AsyncOpenAI, mesh: Mesh) -> None:
    tag = marker()
    raw = await client.chat.completions.with_raw_response.create(
        model="@json", messages=say(tag, "as json [[sim model=gpt-4o-mini finish=length]]"),
        extra_body={"mlx:trace": True}, response_format={"type": "json_object"})
    completion = raw.parse()
    assert raw.headers["x-modelux-model-used"] == "gpt-4.1"
    assert isinstance(json.loads(completion.choices[0].message.content), dict)
    gates = [a["gate"] for a in completion.model_extra["trace"]["attempts"]]
    assert gates == ["rejected: finish_reason length", None]
    assert await models_seen(mesh, tag) == ["gpt-4o-mini", "gpt-4.1"]
    # Billed for both tiers: the cheap tier's tokens were bought too.
    assert completion.usage.completion_tokens > len(completion.choices[0].message.content.split())


async def test_json_cascade_streams_only_the_accepted_answer(client: AsyncOpenAI) -> None:
    tag = marker()
    stream = await client.chat.completions.create(
        model="@json", messages=say(tag, "[[sim model=gpt-4o-mini finish=length]]"), stream=True)
    chunks = [c async for c in stream]
    assert {c.model for c in chunks} == {"gpt-4.1"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "gpt-4o-mini" not in text and "gpt-4.1" in text
    accepted = await client.chat.completions.create(model="@json", messages=say(marker()))
    assert accepted.model == "gpt-4o-mini"  # the cheap tier passes when its answer is good


# ---------------------------------------------------- retries, breakers --


async def test_retry_in_place_honours_retry_after(client: AsyncOpenAI, mesh: Mesh) -> None:
    tag = marker()
    completion = await client.chat.completions.create(
        model="@retrying", messages=say(tag, "[[sim status=429 retry_after=1 fail_first=1]]"),
        extra_body={"mlx:trace": True})
    attempts = completion.model_extra["trace"]["attempts"]
    assert [(a["outcome"], a["retry"]) for a in attempts] == [("error", 0), ("ok", 1)]
    assert attempts[1]["backoff_ms"] == pytest.approx(1000, abs=1)
    seen = await sim_requests(mesh, tag)
    assert len(seen) == 2 and seen[1]["received_at"] - seen[0]["received_at"] >= 0.95


async def test_breaker_opens_skips_the_target_and_half_opens_after_cool_down(client: AsyncOpenAI,
                                                                             mesh: Mesh) -> None:
    failing = "[[sim model=sim-flaky status=500]]"
    for _ in range(2):  # `flaky` opens after two consecutive failures
        completion = await client.chat.completions.create(model="@guarded", messages=say(marker(), failing))
        assert completion.model == "sim-backup"
    tag = marker()
    skipped = await client.chat.completions.create(model="@guarded", messages=say(tag, failing),
                                                   extra_body={"mlx:trace": True})
    first = skipped.model_extra["trace"]["attempts"][0]
    assert (first["model"], first["outcome"], first["code"]) == ("sim-flaky", "skipped", "breaker_open")
    assert await models_seen(mesh, tag) == ["sim-backup"]  # the open breaker spared the upstream
    # After the 1.5 s cool-down one probe goes through and, succeeding, closes the breaker.
    deadline = time.monotonic() + 10
    while True:
        probe = await client.chat.completions.create(model="@guarded", messages=say(marker()))
        if probe.model == "sim-flaky":
            break
        assert time.monotonic() < deadline, "the breaker never half-opened"
    again = await client.chat.completions.create(model="@guarded", messages=say(marker()))
    assert again.model == "sim-flaky"


# -------------------------------------------------------------- templates --


async def test_template_renders_variables_and_supplies_the_model(client: AsyncOpenAI, mesh: Mesh) -> None:
    tag = marker()
    completion = await client.chat.completions.create(
        model="", messages=say(tag), extra_body={"template": "summarize",
                                                  "variables": {"audience": "{{words}} engineers", "words": "20"}})
    assert completion.model == "gpt-4o-mini"  # the template's `fast`
    [seen] = await sim_requests(mesh, tag)
    system = seen["body"]["messages"][0]
    assert system == {"role": "system",
                      "content": "Summarize the user's text for {{words}} engineers in at most 20 words."}
    assert seen["body"]["temperature"] == 0.2


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"template": "summarize", "variables": {"audience": "x"}}, 400, "variables.words"),
    ({"template": "nope"}, 404, "template"),
    ({"template": "summarize", "variables": {"audience": 1, "words": "2"}}, 400, "variables.audience"),
])
async def test_template_errors_name_the_field(client: AsyncOpenAI, body: dict, status: int, param: str) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(model="", messages=say(marker()), extra_body=body)
    assert info.value.status_code == status and info.value.body["param"] == param


# -------------------------------------------------------------- key scope --


async def test_restricted_key_never_reaches_another_model_by_any_path(mesh: Mesh) -> None:
    async with AsyncOpenAI(base_url=mesh.base_url, api_key=mesh.limited_key, max_retries=0) as limited:
        tag = marker()
        for model, extra in (("gpt-4o-mini", {"fallbacks": ["claude-opus-4-1"]}),
                             ("gpt-4o-mini", {"models": ["gpt-4o-mini", "claude-opus-4-1"]}),
                             ("@production", {}),
                             ("", {"template": "premium"})):
            with pytest.raises(openai.PermissionDeniedError) as info:
                await limited.chat.completions.create(
                    model=model, messages=say(tag, "[[sim model=gpt-4o-mini status=503]]"), extra_body=extra)
            assert info.value.body["code"] == "model_not_allowed"
        assert await models_seen(mesh, tag) == []  # refused before any upstream call
        # A config the key lists grants what it routes to.
        tag = marker()
        completion = await limited.chat.completions.create(
            model="@scoped", messages=say(tag, "[[sim model=gpt-4o-mini status=503]]"))
        assert completion.model == "sim-backup"


# ---------------------------------------------------- ids and the trace --


async def test_client_request_id_is_kept_and_a_bad_one_replaced(client: AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=say(marker()), extra_headers={"X-Request-Id": "client-req.42"})
    assert raw.headers["x-request-id"] == "client-req.42" and raw.parse().id == "chatcmpl-client-req.42"
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=say(marker()), extra_headers={"X-Request-Id": "x" * 300})
    assert raw.headers["x-request-id"] != "x" * 300 and len(raw.headers["x-request-id"]) == 32


async def test_decision_trace_streaming_and_not(client: AsyncOpenAI) -> None:
    directive = "[[sim model=gpt-4o-mini status=503]]"
    completion = await client.chat.completions.create(model="@production", messages=say(marker(), directive),
                                                      extra_body={"mlx:trace": True})
    trace = completion.model_extra["trace"]
    assert trace["resolved_by"] == "route"
    assert trace["routes"][0]["route"] == "@production" and trace["routes"][0]["strategy"] == "fallback"
    assert [(a["model"], a["outcome"], a["status"], a["retry"]) for a in trace["attempts"]] == [
        ("gpt-4o-mini", "error", 503, 0), ("gpt-4o-mini", "error", 503, 1), ("claude-haiku-4-5", "ok", None, 0)]
    stream = await client.chat.completions.create(model="@production", messages=say(marker(), directive),
                                                  stream=True, extra_body={"mlx:trace": True})
    chunks = [c async for c in stream]
    traced = [c for c in chunks if "trace" in (c.model_extra or {})]
    assert len(traced) == 1 and traced[0] is chunks[-1] and not traced[0].choices
    assert traced[0].model_extra["trace"]["attempts"][-1]["model"] == "claude-haiku-4-5"
