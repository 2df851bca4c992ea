"""The ``switchyard`` command line against the real mesh: ``config
validate``, ``models`` and ``routes`` (the versions the routers published to
NATS), run the way ``.venv/bin/switchyard`` runs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from deploy.local.mesh import DEFAULT_CONFIG, SERVICES, Mesh


async def switchyard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(SERVICES), **(env or {})}
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "switchyard", *args], env=full,
                                   capture_output=True, text=True, timeout=60)


async def test_config_validate(tmp_path: Path) -> None:
    ok = await switchyard("config", "validate", str(DEFAULT_CONFIG))
    assert ok.returncode == 0 and "valid (4 providers" in ok.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text(DEFAULT_CONFIG.read_text().replace("  smart: anthropic/claude-sonnet-4-6",
                                                         "  smart: nowhere/claude-sonnet-4-6"))
    bad = await switchyard("config", "validate", str(broken))
    line = broken.read_text().splitlines().index("  smart: nowhere/claude-sonnet-4-6") + 1
    assert bad.returncode == 1 and str(broken) in bad.stderr and f"aliases.smart (line {line})" in bad.stderr
    broken.write_text("providers:\n  a: [unclosed\n")
    syntax = await switchyard("config", "validate", str(broken))
    assert syntax.returncode == 1 and f"invalid config {broken} (line 3, column 1): YAML syntax" in syntax.stderr


async def test_models(mesh: Mesh) -> None:
    env = {"SWITCHYARD_API_KEY": mesh.limited_key, "SWITCHYARD_BASE_URL": mesh.base_url}  # type: ignore[attr-defined]
    result = await switchyard("models", env=env)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:]}
    assert rows["gpt-4o-mini"][:2] == ["model", "openai"]
    assert rows["@scoped"][:3] == ["route", "switchyard", "v1"]
    assert "claude-sonnet-4-5" not in rows  # out of the key's scope


async def test_routes_from_nats_and_from_the_file(mesh: Mesh) -> None:
    published = await switchyard("routes", "--nats", mesh.nats_url_for("router"))
    assert published.returncode == 0, published.stderr
    assert "published in SWITCHYARD_ROUTES (revision" in published.stdout
    rows = {line.split()[0]: line.split()[1:] for line in published.stdout.splitlines()[2:]}
    assert rows["@production"][:3] == ["v1", "fallback", "fast,"] and rows["@scoped"][0] == "v1"
    local = await switchyard("routes", "--config", str(DEFAULT_CONFIG))
    assert local.returncode == 0 and "@experiment  weighted" in local.stdout
    unreachable = await switchyard("routes", "--nats", "nats://127.0.0.1:9", "--timeout", "1")
    assert unreachable.returncode != 0 and "cannot read SWITCHYARD_ROUTES" in unreachable.stderr
