"""A burst of new connections after idle, within the edge's concurrency
limit, is served: every request answered, none with Envoy's text/plain
"upstream connect error". (Before: the edge's Unix socket listened with
aiohttp's backlog of 128; whenever Envoy's connects outran the edge's accept
loop they failed, and 0-21 % of a 1,000-stream burst got text 503s.)

Whether connects outrun the accept loop is a race; the second test makes
it certain by pausing the edge (SIGSTOP) until the whole burst is in Envoy,
so every connect must wait in the listen backlog."""

from __future__ import annotations

import asyncio
import secrets
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from deploy.local.mesh import DEFAULT_CONFIG, Mesh, MeshSettings, isolated_environ, load_envoy_renderer
from tests.e2e.conftest import running_mesh
from tests.fault.rawhttp import burst, chat_request, shares

BURST = 1000


@pytest.fixture(scope="module")
def idle_mesh() -> Iterator[Mesh]:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-b-"))
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    # One client and one key: lift their shares to the whole edge, so the
    # burst meets only the process-wide limit (4,096).
    data["limits"].update(max_concurrent_requests_per_key=4096, max_concurrent_requests_per_address=4096)
    config = run_dir / "switchyard.burst.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=config,
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ())
    with running_mesh(settings) as mesh:
        yield mesh


async def test_a_burst_of_new_connections_within_the_limit_is_served(idle_mesh: Mesh) -> None:
    head, body = chat_request(idle_mesh.api_key, {
        "model": "claude-haiku-4-5", "stream": True, "messages": [{"role": "user", "content": "burst"}]})
    answers = await burst(idle_mesh.public_port, head + body, BURST)
    figures = shares(answers)
    print(f"burst of {BURST} new connections (streams): {figures}")
    assert not [kind for kind in figures if kind.startswith("text")], figures
    assert figures == {"ok": BURST}
    assert all(b"data: [DONE]\n\n" in answer.body for answer in answers)


async def requests_received(mesh: Mesh) -> int:
    """Requests the front listener has decoded so far (Envoy's counter)."""
    renderer = load_envoy_renderer()
    _, body = await asyncio.to_thread(renderer.admin_request, mesh.admin,
                                      "/stats?filter=^http.front.downstream_rq_total$")
    return int(body.decode().rsplit(":", 1)[1])


async def test_a_burst_that_finds_the_edge_busy_waits_in_the_backlog(idle_mesh: Mesh) -> None:
    head, body = chat_request(idle_mesh.api_key, {
        "model": "claude-haiku-4-5", "stream": True, "messages": [{"role": "user", "content": "busy"}]})
    edge = idle_mesh.processes["edge"]
    before = await requests_received(idle_mesh)
    edge.signal(signal.SIGSTOP)
    try:
        firing = asyncio.create_task(burst(idle_mesh.public_port, head + body, BURST))
        async with asyncio.timeout(20):
            while await requests_received(idle_mesh) < before + BURST:
                await asyncio.sleep(0.02)
    finally:
        edge.signal(signal.SIGCONT)
    figures = shares(await firing)
    print(f"burst of {BURST} new connections while the edge was paused: {figures}")
    assert figures == {"ok": BURST}
