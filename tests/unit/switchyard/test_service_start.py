"""Every service refuses to start on an invalid config, naming path and line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local.mesh import SERVICES

BAD = """providers:
  up:
    type: openai
    base_url: http://127.0.0.1:1/v1
    timeouts:
      total_s: -5
"""


@pytest.mark.parametrize("service", ["edge", "router", "providers", "analytics"])
def test_invalid_config_stops_the_service(tmp_path: Path, service: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(BAD)
    env = {**os.environ, "PYTHONPATH": str(SERVICES), "SWITCHYARD_CONFIG": str(config),
           f"SWITCHYARD_{service.upper()}_ADDRESS": f"unix:{tmp_path}/s.sock"}
    result = subprocess.run([sys.executable, "-m", service], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "providers.up.timeouts.total_s (line 6)" in result.stderr
    assert "Traceback" not in result.stderr


def test_launcher_refuses_a_busy_public_port(tmp_path: Path) -> None:
    import socket

    from deploy.local.mesh import Mesh, MeshError, MeshSettings

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        mesh = Mesh(MeshSettings(run_dir=tmp_path / "run", public_port=port, api_key="sy_" + "k" * 40))
        with pytest.raises(MeshError, match=f"port {port} is already in use"):
            mesh.start()
        assert mesh.processes == {}  # nothing was started, nothing touched
