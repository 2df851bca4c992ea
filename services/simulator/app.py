"""The upstream simulator: OpenAI, Anthropic and Gemini wire formats on one
port, scriptable per request (see ``scenarios.py``), recording what it got.

Control routes (not part of any upstream API):
- ``GET /_sim/requests?contains=S``: recorded requests whose body contains S.
- ``GET /_sim/wait?contains=S&state=received|finished&timeout=5``: long-poll
  until such a request arrives or ends; 408 on timeout.
- ``POST /_sim/reset``: forget recorded requests.
"""

from __future__ import annotations

from aiohttp import web

from simulator import anthropic, embeddings, gemini, gemini_embed, openai
from simulator.scenarios import Recorder

RECORDER = web.AppKey("recorder", Recorder)
API_MODULES = (openai, embeddings, anthropic, gemini, gemini_embed)


async def _requests(request: web.Request) -> web.Response:
    items = request.app[RECORDER].matching(request.query.get("contains"))
    return web.json_response([i.public() for i in items])


async def _wait(request: web.Request) -> web.Response:
    contains = request.query.get("contains", "")
    state = request.query.get("state", "received")
    timeout = min(float(request.query.get("timeout", "5")), 30.0)
    item = await request.app[RECORDER].wait(contains, state, timeout)
    if item is None:
        return web.json_response({"error": "timeout"}, status=408)
    return web.json_response(item.public())


async def _reset(request: web.Request) -> web.Response:
    request.app[RECORDER].clear()
    return web.json_response({"ok": True})


async def _health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[RECORDER] = Recorder()
    app.router.add_get("/_sim/requests", _requests)
    app.router.add_get("/_sim/wait", _wait)
    app.router.add_post("/_sim/reset", _reset)
    app.router.add_get("/healthz", _health)
    for module in API_MODULES:
        module.add_routes(app, app[RECORDER])
    return app
