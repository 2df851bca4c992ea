"""The simulator's hostile answers are what they claim to be, on every API,
scripted by header or by prompt directive."""

from __future__ import annotations

import secrets
import zlib

import aiohttp
import pytest

from tests.conftest import SimServer

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
HEADERS = {"authorization": "Bearer " + secrets.token_hex(8)}


async def raw_body(http: aiohttp.ClientSession, url: str, body: dict, headers: dict[str, str],
                   limit: int = 1 << 22) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and up to ``limit`` raw (still encoded) body bytes."""
    async with http.post(url, json=body, headers=headers) as response:
        data = bytearray()
        async for chunk in response.content.iter_any():
            data += chunk
            if len(data) >= limit:
                break
        return response.status, dict(response.headers), bytes(data)


@pytest.fixture
async def raw_http() -> aiohttp.ClientSession:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def test_newlines_by_header_and_directive(simulator: SimServer, raw_http: aiohttp.ClientSession) -> None:
    url = f"{simulator.url}/v1/chat/completions"
    status, headers, body = await raw_body(raw_http, url, CHAT, {**HEADERS, "x-sim-hostile": "newlines",
                                                                   "x-sim-hostile-kib": "64"})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert body == b"\n" * 64 * 1024
    ask = {**CHAT, "messages": [{"role": "user", "content": "[[sim hostile=newlines hostile_kib=3]]"}]}
    assert (await raw_body(raw_http, url, ask, HEADERS))[2] == b"\n" * 3 * 1024


async def test_gzip_bomb_inflates_to_the_scripted_size(simulator: SimServer, raw_http: aiohttp.ClientSession) -> None:
    status, headers, body = await raw_body(raw_http, f"{simulator.url}/v1/chat/completions", CHAT,
                                           {**HEADERS, "x-sim-hostile": "gzip_newlines",
                                            "x-sim-hostile-kib": str(8 * 1024 + 3)})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    inflated = zlib.decompress(body, wbits=31)
    assert inflated == b"\n" * (8 * 1024 + 3) * 1024
    assert len(body) * 500 < len(inflated)


async def test_endless_bodies_and_bad_utf8(simulator: SimServer, raw_http: aiohttp.ClientSession) -> None:
    url = f"{simulator.url}/v1/chat/completions"
    _, _, data = await raw_body(raw_http, url, CHAT, {**HEADERS, "x-sim-hostile": "endless_data"}, limit=1 << 20)
    assert len(data) >= 1 << 20 and set(data.split(b"\n")[:-1]) == {b"data: x"}
    _, _, line = await raw_body(raw_http, url, CHAT, {**HEADERS, "x-sim-hostile": "endless_line"}, limit=1 << 20)
    assert line.startswith(b"data: xxx") and b"\n" not in line
    _, _, bad = await raw_body(raw_http, url, CHAT, {**HEADERS, "x-sim-hostile": "bad_utf8"})
    with pytest.raises(UnicodeDecodeError):
        bad.decode()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages",
                                  "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"])
async def test_error_pages_on_every_api(simulator: SimServer, raw_http: aiohttp.ClientSession, path: str) -> None:
    bodies = {"/v1/chat/completions": CHAT,
              "/v1/messages": {"model": "claude-sonnet-4-5", "max_tokens": 10, "stream": True,
                               "messages": [{"role": "user", "content": "hi"}]},
              "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse": {
                  "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}}
    headers = {**HEADERS, "x-api-key": "k", "x-goog-api-key": "k", "anthropic-version": "2023-06-01"}
    status, _, body = await raw_body(raw_http, simulator.url + path, bodies[path],
                                     {**headers, "x-sim-hostile": "error_body_200"})
    assert status == 200 and b'"error"' in body and b"corp.internal" in body
    status, response_headers, body = await raw_body(raw_http, simulator.url + path, bodies[path],
                                                    {**headers, "x-sim-hostile": "html_error"})
    assert status == 502 and response_headers["Content-Type"].startswith("text/html") and b"Traceback" in body


async def test_unknown_scenario_is_refused(simulator: SimServer, raw_http: aiohttp.ClientSession) -> None:
    status, _, body = await raw_body(raw_http, f"{simulator.url}/v1/chat/completions", CHAT,
                                     {**HEADERS, "x-sim-hostile": "nope"})
    assert status == 400 and b"unknown hostile scenario" in body
