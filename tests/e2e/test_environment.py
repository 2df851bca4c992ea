"""The caller's environment reaches every service under the launcher: each
setting documented in the README takes effect, and the launcher overrides
only what it runs itself (addresses, NATS, the simulator for providers
with neither key nor base URL).

The meshes here get an explicit environment (``isolated_environ`` plus the
settings under test), so a developer's own exported variables change nothing.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import openai
import pytest
import yaml
from openai import AsyncOpenAI

from deploy.local.mesh import DEFAULT_CONFIG, ROOT, Mesh, MeshSettings, isolated_environ, load_envoy_renderer
from deploy.local.probes import grpc_serving, http_ok
from tests.conftest import SimServer
from tests.e2e.conftest import marker, running_mesh

UPSTREAM_KEY = "sk-upstream-" + secrets.token_hex(8)
LOCAL_KEY = "local-" + secrets.token_hex(8)
REQUEST_TIMEOUT_S = 1.0

# Every setting of the README's table, and the test below that shows it taking effect.
CHECKED = {
    "SWITCHYARD_EDGE_ADDRESS": "test_launcher_decides_addresses_and_nats",
    "SWITCHYARD_ROUTER_ADDRESS": "test_launcher_decides_addresses_and_nats",
    "SWITCHYARD_PROVIDERS_ADDRESS": "test_launcher_decides_addresses_and_nats",
    "SWITCHYARD_EDGE_ROUTER_TARGET": "test_launcher_decides_addresses_and_nats",
    "SWITCHYARD_ROUTER_PROVIDERS_TARGET": "test_launcher_decides_addresses_and_nats",
    "SWITCHYARD_NATS_URL": "test_launcher_decides_addresses_and_nats",
    # Here the launcher's own (1 for one server); R3 on a cluster: tests/fault/test_cluster.py (stream_leaders).
    "SWITCHYARD_NATS_REPLICAS": "test_launcher_decides_addresses_and_nats",
    "SWITCHYARD_ROUTER_SPOOL": "test_launcher_decides_addresses_and_nats",
    "SWITCHYARD_EDGE_SPOOL": "test_launcher_decides_addresses_and_nats",
    "SWITCHYARD_CONFIG": "test_config_and_api_key_come_from_the_environment",
    "SWITCHYARD_API_KEY": "test_config_and_api_key_come_from_the_environment",
    "SWITCHYARD_<PROVIDER>_BASE_URL": "test_provider_base_url_and_key_overrides",
    "SWITCHYARD_LOCAL_API_KEY": "test_provider_base_url_and_key_overrides",
    "SWITCHYARD_EDGE_REQUEST_TIMEOUT_S": "test_request_timeout",
    "SWITCHYARD_EDGE_SSE_HEARTBEAT_S": "test_sse_heartbeat",
    "SWITCHYARD_TRANSPORT": "test_transport_call",
    "SWITCHYARD_EDGE_SESSIONS": "test_session_counts",
    "SWITCHYARD_ROUTER_SESSIONS": "test_session_counts",
    "SWITCHYARD_EDGE_GRACE_S": "test_edge_drain_delay_and_grace",
    "SWITCHYARD_EDGE_DRAIN_DELAY_S": "test_edge_drain_delay_and_grace",
    "SWITCHYARD_ROUTER_GRACE_S": "test_router_and_provider_grace",
    "SWITCHYARD_PROVIDERS_GRACE_S": "test_router_and_provider_grace",
    "SWITCHYARD_LOG_LEVEL": "test_log_levels",
    "SWITCHYARD_EDGE_LOG_LEVEL": "test_log_levels",
    "SWITCHYARD_ROUTER_LOG_LEVEL": "test_log_levels",
    "SWITCHYARD_PROVIDERS_LOG_LEVEL": "test_log_levels",
    "SWITCHYARD_TRACE_DIR": "test_tracing",
    "SWITCHYARD_TRACE_SAMPLE": "test_tracing",
    "SWITCHYARD_ENVOY_CONCURRENCY": "test_envoy_concurrency",
    "SWITCHYARD_PORT": "tests/e2e/test_make_run.py",
    "SWITCHYARD_ROUTER_CONFIG_POLL_S": "test_config_poll_interval",
    "SWITCHYARD_ANALYTICS_ADDRESS": "test_launcher_decides_addresses_and_nats",
    "SWITCHYARD_EDGE_ANALYTICS_TARGET": "test_launcher_decides_addresses_and_nats",
    "SWITCHYARD_ANALYTICS_BATCH": "tests/fault/test_analytics.py",
    "SWITCHYARD_ANALYTICS_ACK_WAIT_S": "tests/fault/test_analytics.py",
    "SWITCHYARD_ANALYTICS_GRACE_S": "test_router_and_provider_grace",
    "SWITCHYARD_ANALYTICS_LOG_LEVEL": "test_log_levels",
    "SWITCHYARD_UVLOOP": "tests/unit/switchyard/test_settings.py",
    "SWITCHYARD_TRACE_CONTENT": "tests/e2e/test_observability.py",
    "SWITCHYARD_EDGE_METRICS_ADDRESS": "tests/e2e/test_observability.py",
    "SWITCHYARD_ROUTER_METRICS_ADDRESS": "tests/e2e/test_observability.py",
    "SWITCHYARD_PROVIDERS_METRICS_ADDRESS": "tests/e2e/test_observability.py",
    "SWITCHYARD_ANALYTICS_METRICS_ADDRESS": "tests/e2e/test_observability.py",
    "SWITCHYARD_METRICS_PORT": "tests/e2e/test_make_run.py",
    "SWITCHYARD_ROUTER_PROVIDERS_IN_PROCESS": "tests/e2e/test_providers_in_process.py",
}


def documented_settings() -> set[str]:
    """The settings named in the README's service settings table (generated
    from switchyard/settings.py, see tests/unit/switchyard/test_settings.py)."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| setting | default | meaning |"):]
    table = table[:table.index("\n\n")]
    return {name for row in table.splitlines()[2:]
            for name in re.findall(r"`(SWITCHYARD_[A-Z_<>]+)`", row.split("|")[1])}


def test_every_documented_setting_is_checked() -> None:
    documented = documented_settings()
    assert "SWITCHYARD_EDGE_REQUEST_TIMEOUT_S" in documented  # the table was found
    missing = documented - set(CHECKED)
    assert not missing, f"README documents {sorted(missing)} but nothing here shows it taking effect"
    assert set(CHECKED) <= documented, "undocumented settings"


def service_environ(mesh: Mesh, name: str) -> dict[str, str]:
    process = mesh.processes[name]
    assert process.pid is not None
    raw = Path(f"/proc/{process.pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def envoy_stat(mesh: Mesh, name: str) -> int:
    status, body = load_envoy_renderer().admin_request(mesh.admin, f"/stats?filter=^{re.escape(name)}$")
    assert status == 200
    return int(body.decode().split(":")[1])


@pytest.fixture(scope="module")
def env_mesh(simulator: SimServer) -> Iterator[Mesh]:
    """OpenAI and the local server point at the in-process simulator (with
    real-looking keys); the rest of the providers use the launcher's own."""
    run_dir = Path(tempfile.mkdtemp(prefix="sy-env-"))
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["aliases"]["envcheck"] = "openai/gpt-4o-mini"  # only in this file
    config_path = run_dir / "other.yaml"
    config_path.write_text(yaml.safe_dump(config))
    environ = isolated_environ({
        "SWITCHYARD_CONFIG": str(config_path),
        "SWITCHYARD_API_KEY": "sy_" + secrets.token_hex(20),
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "SWITCHYARD_OPENAI_BASE_URL": f"{simulator.url}/v1",
        "SWITCHYARD_LOCAL_API_KEY": LOCAL_KEY,
        "SWITCHYARD_LOCAL_BASE_URL": f"{simulator.url}/compat/v1",
        "SWITCHYARD_EDGE_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
        "SWITCHYARD_EDGE_SSE_HEARTBEAT_S": "0.2",
        "SWITCHYARD_EDGE_SESSIONS": "3",
        "SWITCHYARD_ROUTER_SESSIONS": "1",
        "SWITCHYARD_LOG_LEVEL": "WARNING",
        "SWITCHYARD_ROUTER_LOG_LEVEL": "DEBUG",
        "SWITCHYARD_ANALYTICS_LOG_LEVEL": "INFO",
        "SWITCHYARD_TRACE_DIR": str(run_dir / "traces"),
        "SWITCHYARD_TRACE_SAMPLE": "1",
        "SWITCHYARD_ENVOY_CONCURRENCY": "2",
        "SWITCHYARD_ROUTER_CONFIG_POLL_S": "0.3",
        # The launcher's to decide: these must not break anything.
        "SWITCHYARD_EDGE_ADDRESS": "127.0.0.1:1", "SWITCHYARD_ROUTER_ADDRESS": "127.0.0.1:1",
        "SWITCHYARD_PROVIDERS_ADDRESS": "127.0.0.1:1", "SWITCHYARD_EDGE_ROUTER_TARGET": "127.0.0.1:1",
        "SWITCHYARD_ROUTER_PROVIDERS_TARGET": "127.0.0.1:1", "SWITCHYARD_NATS_URL": "nats://127.0.0.1:1",
        "SWITCHYARD_ROUTER_SPOOL": "/nonexistent/spool", "SWITCHYARD_EDGE_SPOOL": "/nonexistent/spool",
        "SWITCHYARD_ANALYTICS_ADDRESS": "127.0.0.1:1",
        "SWITCHYARD_EDGE_ANALYTICS_TARGET": "127.0.0.1:1",
        "SWITCHYARD_NATS_REPLICAS": "5",  # one server cannot hold 5 copies: streams would fail
    })
    with running_mesh(MeshSettings(run_dir=run_dir, public_port=0, environ=environ)) as mesh:
        yield mesh


@pytest.fixture
async def env_client(env_mesh: Mesh) -> AsyncOpenAI:
    async with AsyncOpenAI(base_url=env_mesh.base_url, api_key=env_mesh.api_key, max_retries=0, timeout=30) as c:
        yield c


async def test_config_and_api_key_come_from_the_environment(env_mesh: Mesh, env_client: AsyncOpenAI) -> None:
    assert env_mesh.config_path.name == "other.yaml"
    assert env_mesh.api_key == env_mesh.environ["SWITCHYARD_API_KEY"]
    completion = await env_client.chat.completions.create(model="envcheck",
                                                          messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].finish_reason == "stop"


async def test_provider_base_url_and_key_overrides(env_mesh: Mesh, env_client: AsyncOpenAI,
                                                   simulator: SimServer) -> None:
    assert set(env_mesh.simulated) == {"ANTHROPIC_API_KEY", "GEMINI_API_KEY"}  # the others are set
    openai_tag, local_tag = marker(), marker()
    await env_client.chat.completions.create(model="gpt-4o-mini",
                                             messages=[{"role": "user", "content": openai_tag}])
    await env_client.chat.completions.create(model="local/any-model",
                                             messages=[{"role": "user", "content": local_tag}])
    (seen_openai,) = simulator.recorder.matching(openai_tag)
    (seen_local,) = simulator.recorder.matching(local_tag)
    assert seen_openai.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert seen_local.headers["authorization"] == f"Bearer {LOCAL_KEY}"
    assert seen_local.path.startswith("/compat/v1/")


async def test_request_timeout(env_client: AsyncOpenAI) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        await env_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "[[sim delay_ms=5000]]"}])
    assert info.value.status_code == 504
    assert time.monotonic() - started < REQUEST_TIMEOUT_S + 2  # the configured deadline, not the default 600 s


async def test_sse_heartbeat(env_mesh: Mesh) -> None:
    body = {"model": "gpt-4o-mini", "stream": True,
            "messages": [{"role": "user", "content": "[[sim tokens=2 chunk_delay_ms=700]]"}]}
    async with aiohttp.ClientSession() as http, http.post(
            f"{env_mesh.base_url}/chat/completions", json=body,
            headers={"authorization": f"Bearer {env_mesh.api_key}"}) as response:
        lines = [line.decode().rstrip("\n") async for line in response.content if line.strip()]
    assert ": keep-alive" in lines  # 0.2 s of silence, not the default 15 s


async def test_session_counts(env_mesh: Mesh, env_client: AsyncOpenAI) -> None:
    await asyncio.gather(*(env_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "[[sim delay_ms=300]]"}]) for _ in range(6)))
    assert envoy_stat(env_mesh, "cluster.router.upstream_rq_active") == 3  # SWITCHYARD_EDGE_SESSIONS
    assert envoy_stat(env_mesh, "cluster.provider.upstream_rq_active") == 1  # SWITCHYARD_ROUTER_SESSIONS


async def test_log_levels(env_mesh: Mesh, env_client: AsyncOpenAI) -> None:
    await env_client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "log"}])
    assert " DEBUG " in env_mesh.tail("router", 400)  # SWITCHYARD_ROUTER_LOG_LEVEL=DEBUG
    for name in ("edge", "providers"):  # SWITCHYARD_LOG_LEVEL=WARNING
        assert " INFO " not in env_mesh.tail(name, 400) and " DEBUG " not in env_mesh.tail(name, 400)
    analytics = env_mesh.tail("analytics", 400)  # SWITCHYARD_ANALYTICS_LOG_LEVEL=INFO
    assert " INFO " in analytics and " DEBUG " not in analytics


async def test_tracing(env_mesh: Mesh, env_client: AsyncOpenAI) -> None:
    await env_client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "trace"}])
    folder = env_mesh.settings.run_dir / "traces"
    async with asyncio.timeout(10):
        while not any(path.stat().st_size for path in folder.glob("*.jsonl")):
            await asyncio.sleep(0.05)


def test_config_poll_interval(env_mesh: Mesh) -> None:
    assert "every 0.3 s" in env_mesh.tail("router", 400)


def test_envoy_concurrency(env_mesh: Mesh) -> None:
    status, body = load_envoy_renderer().admin_request(env_mesh.admin, "/server_info")
    assert status == 200 and '"concurrency": 2' in body.decode()


async def test_launcher_decides_addresses_and_nats(env_mesh: Mesh, env_client: AsyncOpenAI) -> None:
    completion = await env_client.chat.completions.create(model="gpt-4o-mini",
                                                          messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].finish_reason == "stop"  # the junk values above were not used
    router = service_environ(env_mesh, "router")
    assert router["SWITCHYARD_ROUTER_ADDRESS"] == f"unix:{env_mesh.sockets['router']}"
    assert router["SWITCHYARD_NATS_URL"] == env_mesh.nats_url_for("router")
    assert router["SWITCHYARD_NATS_REPLICAS"] == "1"
    assert router["SWITCHYARD_ROUTER_SPOOL"].startswith(str(env_mesh.settings.run_dir))
    edge = service_environ(env_mesh, "edge")
    assert edge["SWITCHYARD_NATS_URL"] == env_mesh.nats_url_for("edge")  # each service its own NATS user
    assert edge["SWITCHYARD_EDGE_SPOOL"].startswith(str(env_mesh.settings.run_dir))
    assert edge["SWITCHYARD_EDGE_ANALYTICS_TARGET"] == f"unix:{env_mesh.sockets['analytics']}"
    analytics = service_environ(env_mesh, "analytics")
    assert analytics["SWITCHYARD_ANALYTICS_ADDRESS"] == f"unix:{env_mesh.sockets['analytics']}"
    assert analytics["SWITCHYARD_NATS_URL"] == env_mesh.nats_url_for("analytics")
    # Everything else the caller set reaches every service unchanged.
    for name in ("edge", "router", "providers"):
        seen = service_environ(env_mesh, name)
        for key in ("SWITCHYARD_EDGE_REQUEST_TIMEOUT_S", "SWITCHYARD_LOCAL_API_KEY", "OPENAI_API_KEY",
                    "SWITCHYARD_TRACE_SAMPLE"):
            assert seen[key] == env_mesh.environ[key]


@pytest.fixture(scope="module")
def drain_mesh() -> Iterator[Mesh]:
    run_dir = Path(tempfile.mkdtemp(prefix="sy-env2-"))
    environ = isolated_environ({
        "SWITCHYARD_TRANSPORT": "call",
        "SWITCHYARD_EDGE_GRACE_S": "0.5", "SWITCHYARD_EDGE_DRAIN_DELAY_S": "1.5",
        "SWITCHYARD_ROUTER_GRACE_S": "7", "SWITCHYARD_PROVIDERS_GRACE_S": "8", "SWITCHYARD_ANALYTICS_GRACE_S": "9",
    })
    with running_mesh(MeshSettings(run_dir=run_dir, public_port=0, environ=environ)) as mesh:
        yield mesh


@pytest.fixture
async def drain_client(drain_mesh: Mesh) -> AsyncOpenAI:
    async with AsyncOpenAI(base_url=drain_mesh.base_url, api_key=drain_mesh.api_key, max_retries=0,
                           timeout=30) as c:
        yield c


async def test_transport_call(drain_mesh: Mesh, drain_client: AsyncOpenAI) -> None:
    before = envoy_stat(drain_mesh, "cluster.router.upstream_rq_total")
    for _ in range(4):
        await drain_client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert envoy_stat(drain_mesh, "cluster.router.upstream_rq_total") - before >= 4  # one gRPC call each
    assert envoy_stat(drain_mesh, "cluster.router.upstream_rq_active") == 0  # no session streams


async def test_router_and_provider_grace(drain_mesh: Mesh) -> None:
    for name, grace in (("router", 7), ("providers", 8), ("analytics", 9)):
        restarts = drain_mesh.restarts[name]
        drain_mesh.processes[name].signal(signal.SIGTERM)  # drains, exits; the launcher starts it again
        async with asyncio.timeout(30):
            while f"draining (grace {grace}s)" not in drain_mesh.tail(name, 200):
                await asyncio.sleep(0.05)
            while drain_mesh.restarts[name] == restarts or not await asyncio.to_thread(serving, drain_mesh, name):
                await asyncio.sleep(0.05)


def serving(mesh: Mesh, name: str) -> bool:
    if name == "analytics":
        return http_ok(f"{mesh.base_url}/analytics/healthz")
    return grpc_serving(f"unix:{mesh.sockets[name]}")


async def test_edge_drain_delay_and_grace(drain_mesh: Mesh, drain_client: AsyncOpenAI) -> None:
    tag = marker()
    slow = asyncio.create_task(drain_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"{tag} [[sim delay_ms=8000]]"}]))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{drain_mesh.simulator_url}/_sim/wait",
                            params={"contains": tag, "state": "received", "timeout": "20"}) as response:
            assert response.status == 200
        restarts = drain_mesh.restarts["edge"]
        drain_mesh.processes["edge"].signal(signal.SIGTERM)
        terminated = time.monotonic()
        # During the drain delay the edge still answers, and says it is draining.
        async with asyncio.timeout(5):
            while True:
                async with http.get(drain_mesh.base_url.removesuffix("/v1") + "/readyz") as response:
                    if response.status == 503 and (await response.json(content_type=None)) == {"status": "draining"}:
                        break
                await asyncio.sleep(0.05)
    # After delay + grace (2 s, not the default 30) the slow request is cut, long before its 8 s answer.
    with pytest.raises(openai.APIError):
        await asyncio.wait_for(slow, 15)
    assert time.monotonic() - terminated < 6
    async with asyncio.timeout(30):  # and the launcher brings the edge back
        while drain_mesh.restarts["edge"] == restarts or not drain_mesh.processes["edge"].alive():
            await asyncio.sleep(0.05)
