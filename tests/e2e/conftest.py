"""The `mesh` fixture: real Envoy, NATS, simulator and every service, started
by the same launcher as `make run`, on free ports, with logs dumped when a
test fails."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from openai import AsyncOpenAI

from deploy.local.mesh import DEFAULT_CONFIG, Mesh, MeshSettings, isolated_environ
from switchyard.config import hash_key, key_prefix


def mesh_config_data(limited_key: str) -> dict:
    """The `make run` config plus a restricted key, a backup provider, a
    provider with a touchy circuit breaker and routing configs for tests."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["api_keys"].append({"id": "limited", "tenant": "acme", "prefix": key_prefix(limited_key),
                             "sha256": hash_key(limited_key), "allowed_models": ["gpt-4o-mini", "@scoped"]})
    compat = {"type": "openai_compat", "base_url": "${SWITCHYARD_LOCAL_BASE_URL}",
              "api_key_env": "SWITCHYARD_LOCAL_API_KEY"}
    data["providers"]["backup"] = {**compat, "models": ["sim-backup"]}
    data["providers"]["flaky"] = {**compat, "models": ["sim-flaky"],
                                  "breaker": {"consecutive_failures": 2, "cooldown_s": 1.5}}
    data["providers"]["openai"]["timeouts"] = {"first_token_s": 2, "between_chunks_s": 2, "total_s": 30}
    # Retired upstream on 2026-11-30 (no longer shipped); the simulator still plays it for tests written for it.
    data["providers"]["anthropic"]["models"].append({"id": "claude-sonnet-4-5", "max_output_tokens": 8192})
    # Tests script upstream failures on shared models: breakers stay out of their way except on `flaky`.
    data["breaker"] = {"enabled": False}
    data["routes"]["scoped"] = {"targets": ["gpt-4o-mini", "sim-backup"]}
    data["routes"]["retrying"] = {"targets": [
        {"model": "sim-backup", "retry": {"max_attempts": 3, "initial_backoff_s": 0.05, "max_backoff_s": 0.2}}]}
    data["routes"]["guarded"] = {"targets": ["sim-flaky", "sim-backup"]}
    data["routes"]["fast-exp"] = {"strategy": "weighted", "sticky": "end_user", "targets": [
        {"model": "gpt-4o-mini", "name": "control", "weight": 1},
        {"model": "gemini-2.5-flash", "name": "candidate", "weight": 1}]}
    data["templates"]["premium"] = {"messages": [{"role": "system", "content": "Be thorough."}],
                                    "model": "claude-opus-4-1"}
    return data


def write_test_config(run_dir: Path, limited_key: str) -> Path:
    path = run_dir / "switchyard.test.yaml"
    path.write_text(yaml.safe_dump(mesh_config_data(limited_key), sort_keys=False))
    return path


@contextlib.contextmanager
def running_mesh(settings: MeshSettings) -> Iterator[Mesh]:
    """Start a mesh, print its logs if it fails to start, always stop it."""
    instance = Mesh(settings)
    try:
        instance.start()
    except Exception:
        print(instance.logs())
        instance.stop()
        raise
    try:
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(settings.run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def mesh() -> Iterator[Mesh]:
    # Short path: Unix socket paths are limited to 108 bytes.
    run_dir = Path(tempfile.mkdtemp(prefix="sy-"))
    limited = "sy_" + secrets.token_hex(20)
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=write_test_config(run_dir, limited),
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ(),
                            # Debug logging on: the hygiene tests check no key or prompt leaks even then.
                            extra_env={"SWITCHYARD_EDGE_SSE_HEARTBEAT_S": "0.3", "SWITCHYARD_LOG_LEVEL": "DEBUG"})
    with running_mesh(settings) as instance:
        instance.limited_key = limited  # type: ignore[attr-defined]
        yield instance


@pytest.fixture
async def client(mesh: Mesh) -> AsyncOpenAI:
    async with AsyncOpenAI(base_url=mesh.base_url, api_key=mesh.api_key, max_retries=0, timeout=30) as c:
        yield c


def marker() -> str:
    """A unique token to find this test's request in the simulator's record."""
    return "m" + secrets.token_hex(6)
