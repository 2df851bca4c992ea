"""FUZZ-HTTP, scaled to a test: malformed requests beside valid traffic get
a 4xx with an OpenAI error body, never a 5xx, and never reach an upstream."""

from __future__ import annotations

import asyncio
import json
import random

import aiohttp
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh
from tests.e2e.conftest import marker
from tests.e2e.test_chat import sim_requests

VALID = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "temperature": 0.5,
         "max_tokens": 20, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}
WEIRD_VALUES = [None, True, -1, 0, 3.5, 1e308, -1e308, "", "x" * 5000, [], {}, [None], {"a": [1, {"b": None}]},
                "\u0000", "\ud7ff\ue000", 2**63, -(2**63) - 1]


def mutate(rng: random.Random, tag: str) -> tuple[bytes, str, bool]:
    """A mutated body (with the tag inside when possible), its content type,
    and whether it is certainly invalid (syntax, encoding, type): the rest are
    odd values that may or may not be acceptable."""
    body = json.loads(json.dumps(VALID))
    body["messages"][0]["content"] = f"{tag} hello"
    kind = rng.randrange(9)
    if kind == 0:  # a field with a wrong type or value
        field = rng.choice(["model", "messages", "temperature", "max_tokens", "tools", "n", "top_p", "stop",
                            "stream", "tool_choice", "response_format", "logit_bias", "user", "seed"])
        body[field] = rng.choice(WEIRD_VALUES)
        if field == "model" and isinstance(body[field], str) and body[field]:
            body[field] = None
    elif kind == 1:  # a broken message
        body["messages"][0] = rng.choice([{"role": "user"}, {"content": "x"}, {"role": rng.choice(WEIRD_VALUES)},
                                          {"role": "tool", "content": "x"}, "not an object", None])
    elif kind == 2:  # truncated JSON
        raw = json.dumps(body).encode()
        return raw[: rng.randrange(1, len(raw) - 1)], "application/json", True
    elif kind == 3:  # invalid UTF-8
        raw = json.dumps(body).encode()
        cut = rng.randrange(len(raw))
        return raw[:cut] + b"\xff\xfe\xc3" + raw[cut:], "application/json", True
    elif kind == 4:  # NaN / Infinity
        return json.dumps(body).replace('"temperature": 0.5', '"temperature": NaN').encode(), "application/json", True
    elif kind == 5:  # deep nesting
        depth = rng.randrange(100, 20_000)
        return b'{"model": "gpt-4o-mini", "messages": ' + b"[" * depth + b"]" * depth + b"}", "application/json", True
    elif kind == 6:  # wrong content type
        content_type = rng.choice(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""])
        return json.dumps(body).encode(), content_type, True
    elif kind == 7:  # out-of-range numbers
        field = rng.choice(["temperature", "top_p", "presence_penalty", "frequency_penalty", "top_logprobs"])
        body[field] = rng.choice([-5, 99, 1e9, -1e9])
    else:  # not an object at all
        return rng.choice([b"[]", b'"text"', b"42", b"null", b"", b"{", b"}"]), "application/json", True
    return json.dumps(body).encode(), "application/json", kind == 7


async def test_malformed_requests_beside_valid_traffic(replicated_mesh: Mesh, fault_client: AsyncOpenAI) -> None:
    mesh = replicated_mesh
    rng = random.Random(20261121)
    prefix = marker()
    invalid_tags: list[str] = []
    statuses: list[int] = []
    bad_bodies: list[str] = []
    semaphore = asyncio.Semaphore(16)

    async def fuzz(http: aiohttp.ClientSession, number: int) -> None:
        tag = f"{prefix}n{number}x"
        body, content_type, invalid = mutate(rng, tag)
        headers = {"authorization": f"Bearer {mesh.api_key}"}
        if content_type:
            headers["content-type"] = content_type
        async with semaphore, http.post(f"{mesh.base_url}/chat/completions", data=body, headers=headers) as r:
            statuses.append(r.status)
            if invalid:
                invalid_tags.append(tag)
                assert r.status in (400, 413), (r.status, body[:100])
            if r.status == 200:
                return
            try:
                error = (await r.json(content_type=None))["error"]
                assert set(error) == {"message", "type", "param", "code"} and error["message"]
            except Exception:  # recorded and asserted on below
                bad_bodies.append((await r.read())[:200].decode(errors="replace"))

    async def valid() -> int:
        completion = await fault_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "valid beside fuzz"}])
        return len(completion.choices)

    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(*(fuzz(http, i) for i in range(600)), *(valid() for _ in range(40)))
    assert results[600:] == [1] * 40  # valid traffic was unaffected
    assert not [s for s in statuses if s >= 500], "a mutated request caused a 5xx"
    assert bad_bodies == []
    assert len(invalid_tags) > 300
    reached = {r["body"]["messages"][0]["content"].split()[0] for r in await sim_requests(mesh, prefix)
               if isinstance(r["body"].get("messages"), list) and r["body"]["messages"]
               and isinstance(r["body"]["messages"][0].get("content"), str)}
    assert not reached & set(invalid_tags)  # nothing invalid reached an upstream
    assert all(p.alive() for p in mesh.processes.values())
