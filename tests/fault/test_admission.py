"""SLOWLORIS and fair shares, scaled to a test: uploads trickling in hold no
edge slot and are cut off with 408; one API key, or one client address,
gets its share of the edge and a 429 with retry-after beyond it, while the
others are served; identifiers that could split a header never reach an
upstream. (Before: 12 trickling uploads held every slot of an edge with 8,
and every other client got 503 for as long as they trickled.)

Client addresses are distinct loopback sources (127.0.0.x): Envoy reports
each as the client address, as it would distinct hosts."""

from __future__ import annotations

import asyncio
import collections
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh, MeshSettings, isolated_environ
from switchyard.config import hash_key, key_prefix
from tests.e2e.conftest import marker, running_mesh, write_test_config
from tests.e2e.test_chat import sim_requests
from tests.fault.rawhttp import Answer, chat_request, connect, exchange, read_sized_answer
from tests.fault.test_replicas import wait_received

LIMIT = 8  # requests the edge serves at once
PER_KEY = 4
PER_ADDRESS = 6
BODY_TIMEOUT_S = 3.0
KEYS = {f"t{i}": "sy_" + secrets.token_hex(20) for i in range(1, 5)}


@pytest.fixture(scope="module")
def shared_mesh() -> Iterator[Mesh]:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-a-"))
    config = write_test_config(run_dir, "sy_" + "a" * 40)
    data = yaml.safe_load(config.read_text())
    data["limits"].update(max_concurrent_requests=LIMIT, max_concurrent_requests_per_key=PER_KEY,
                          max_concurrent_requests_per_address=PER_ADDRESS, body_read_timeout_s=BODY_TIMEOUT_S)
    data["api_keys"] += [{"id": name, "prefix": key_prefix(key), "sha256": hash_key(key)} for name, key in KEYS.items()]
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=config,
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ())
    with running_mesh(settings) as mesh:
        yield mesh


def chat(key: str, prompt: str, **fields: object) -> bytes:
    head, body = chat_request(key, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}],
                                    **fields})
    return head + body


def error_of(answer: Answer) -> dict:
    assert answer.kind == f"json {answer.status}", answer
    return orjson.loads(answer.body)["error"]


async def trickle(port: int, key: str, source: str) -> tuple[Answer, float]:
    """An upload that announces 1,000 bytes and sends one every 0.25 s; the
    answer, and the seconds it took to come."""
    head, _ = chat_request(key, {}, content_length=1000)
    reader, writer = await connect(port, source)
    started = time.monotonic()
    writer.write(head + b'{"model": "gpt-4o-mini", ')

    async def drip() -> None:
        for _ in range(900):
            await asyncio.sleep(0.25)
            writer.write(b" ")

    dripping = asyncio.create_task(drip())
    try:
        async with asyncio.timeout(60):
            return await read_sized_answer(reader), time.monotonic() - started
    finally:
        dripping.cancel()
        writer.close()


async def test_trickling_uploads_hold_no_slot_and_time_out(shared_mesh: Mesh) -> None:
    mesh = shared_mesh
    # 12 uploads (more than the edge's 8 slots), 3 per key and per address:
    # within every share, so only the slot count could stop the others.
    tricklers = [asyncio.create_task(trickle(mesh.public_port, key, f"127.0.0.{10 + k}"))
                 for k, key in enumerate(KEYS.values()) for _ in range(3)]
    victims: list[str] = []
    async with AsyncOpenAI(base_url=mesh.base_url, api_key=mesh.api_key, max_retries=0, timeout=30) as client:
        async def victim() -> str:
            try:
                done = await client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "victim [[sim delay_ms=200]]"}])
                return done.choices[0].finish_reason or "none"
            except Exception as exc:
                return type(exc).__name__

        while not any(t.done() for t in tricklers):
            victims += await asyncio.gather(*(victim() for _ in range(PER_KEY)))
    refused = sum(v != "stop" for v in victims)
    print(f"{len(victims)} requests beside 12 trickling uploads, {refused} refused: {collections.Counter(victims)}")
    outcomes = await asyncio.gather(*tricklers)
    assert len(victims) >= 2 * PER_KEY
    assert set(victims) == {"stop"}  # served, though 12 uploads were in progress
    for answer, took in outcomes:
        assert answer.status == 408
        assert error_of(answer)["code"] == "request_timeout"
        assert BODY_TIMEOUT_S <= took < BODY_TIMEOUT_S + 10


async def test_one_key_gets_its_share_and_a_429_beyond_it(shared_mesh: Mesh) -> None:
    mesh = shared_mesh
    tags = [marker() for _ in range(PER_KEY)]
    holders = [asyncio.create_task(exchange(mesh.public_port, chat(KEYS["t1"], f"{tag} [[sim delay_ms=1500]]")))
               for tag in tags]
    await asyncio.gather(*(wait_received(mesh, tag) for tag in tags))
    started = time.monotonic()
    refused = await exchange(mesh.public_port, chat(KEYS["t1"], "one more"), source="127.0.0.2")
    refused_in = time.monotonic() - started
    other = await exchange(mesh.public_port, chat(KEYS["t2"], "another key"))
    assert refused.status == 429
    error = error_of(refused)
    assert (error["type"], error["code"]) == ("rate_limit_error", "too_many_concurrent_requests")
    assert "API key" in error["message"]
    assert refused.headers["retry-after"] == "1"
    assert refused_in < 1.0  # at once, not after the held requests
    assert other.status == 200
    assert [a.status for a in await asyncio.gather(*holders)] == [200] * PER_KEY
    assert (await exchange(mesh.public_port, chat(KEYS["t1"], "after"))).status == 200


async def test_one_address_gets_its_share_and_a_429_beyond_it(shared_mesh: Mesh) -> None:
    mesh = shared_mesh
    busy, calm = "127.0.0.3", "127.0.0.4"
    tags = [marker() for _ in range(PER_ADDRESS)]
    keys = [KEYS["t1"]] * (PER_ADDRESS // 2) + [KEYS["t2"]] * (PER_ADDRESS - PER_ADDRESS // 2)
    holders = [asyncio.create_task(exchange(mesh.public_port, chat(key, f"{tag} [[sim delay_ms=1500]]"), source=busy))
               for key, tag in zip(keys, tags, strict=True)]
    await asyncio.gather(*(wait_received(mesh, tag) for tag in tags))
    refused = await exchange(mesh.public_port, chat(KEYS["t3"], "from the busy address"), source=busy)
    served = await exchange(mesh.public_port, chat(KEYS["t3"], "from another address"), source=calm)
    assert refused.status == 429
    error = error_of(refused)
    assert error["code"] == "too_many_concurrent_requests" and "address" in error["message"]
    assert refused.headers["retry-after"] == "1"
    assert served.status == 200
    assert [a.status for a in await asyncio.gather(*holders)] == [200] * PER_ADDRESS


@pytest.mark.parametrize("model", ["gpt-4o-mini\r\nx-injected: 1", "gpt-4o-mini\n", "m" * 100_000])
async def test_an_identifier_that_could_split_a_header_is_refused_before_any_upstream(shared_mesh: Mesh,
                                                                                       model: str) -> None:
    tag = marker()
    answer = await exchange(shared_mesh.public_port, chat(shared_mesh.api_key, f"{tag} hello", model=model))
    assert answer.status == 400
    error = error_of(answer)
    assert (error["type"], error["param"]) == ("invalid_request_error", "model")
    assert "x-injected" not in answer.headers
    assert await sim_requests(shared_mesh, tag) == []  # nothing reached an upstream, nothing was metered
