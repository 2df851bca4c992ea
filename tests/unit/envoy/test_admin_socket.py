"""Envoy's admin interface on a Unix socket only its user may open: rendered,
validated by Envoy, checked at start-up, and reachable by the admin helpers."""

from __future__ import annotations

import http.server
import socketserver
import threading
from pathlib import Path

import pytest
import yaml

from tests.unit.envoy.test_render import config_dump_of, local_tcp, render, validate


def test_local_admin_on_a_unix_socket_validates(tmp_path: Path) -> None:
    text = local_tcp(admin_path=str(tmp_path / "admin.sock"))
    validate(text, tmp_path)
    doc = yaml.safe_load(text)
    assert doc["admin"]["address"] == {"pipe": {"path": str(tmp_path / "admin.sock"), "mode": 0o600}}
    effective = render.settings_from_config_dump(config_dump_of(doc))
    assert effective["admin_address"] == f"unix:{tmp_path / 'admin.sock'}"
    assert render.check_settings(effective) == []
    with pytest.raises(ValueError, match="must be absolute"):
        local_tcp(admin_path="admin.sock")


def test_check_settings_flags_an_open_admin_socket(tmp_path: Path) -> None:
    doc = yaml.safe_load(local_tcp(admin_path=str(tmp_path / "admin.sock")))
    doc["admin"]["address"]["pipe"]["mode"] = 0o666
    problems = render.check_settings(render.settings_from_config_dump(config_dump_of(doc)))
    assert problems == [f"admin socket unix:{tmp_path / 'admin.sock'} has mode 438, expected 0o600"]


def test_cli_renders_a_local_admin_socket(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    assert render.main(["local", "--out", str(out), "--public-addr", "127.0.0.1:8080",
                        "--edge-addr", "unix:/run/sy/edge.sock", "--router-listen-addr", "unix:/run/sy/r.sock",
                        "--router-addr", "unix:/run/sy/router.sock", "--provider-listen-addr", "unix:/run/sy/p.sock",
                        "--provider-addr", "unix:/run/sy/providers.sock",
                        "--admin-path", "/run/sy/envoy-admin.sock"]) == 0
    assert yaml.safe_load(out.read_text())["admin"]["address"]["pipe"]["path"] == "/run/sy/envoy-admin.sock"
    with pytest.raises(SystemExit):
        render.main(["front", "--public-addr", "0.0.0.0:8080", "--edge-addr", "edge:15000"])  # no admin given


class _Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ready" else 404)
        self.end_headers()
        self.wfile.write(b"LIVE\n")

    def log_message(self, *args: object) -> None:
        pass


class _UnixHTTPServer(socketserver.UnixStreamServer):
    def get_request(self):  # type: ignore[no-untyped-def]
        request, _ = super().get_request()
        return request, ("local", 0)  # BaseHTTPRequestHandler expects a (host, port) client address


def test_admin_requests_over_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    with _UnixHTTPServer(str(path), _Ready) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            assert render.admin_request(f"unix:{path}", "/ready") == (200, b"LIVE\n")
            assert render.admin_ok(f"unix:{path}", "/ready")
            assert not render.admin_ok(f"unix:{path}", "/other")
        finally:
            server.shutdown()
    assert not render.admin_ok(f"unix:{tmp_path / 'absent.sock'}", "/ready")
