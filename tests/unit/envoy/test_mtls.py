"""mTLS between Kubernetes sidecars, with real Envoys on 127.0.0.1: a
router's sidecar admits the edge's sidecar (certificate with the edge's
identity) and refuses a peer holding another identity, a certificate from
another CA, or none; the plaintext health listener passes the gRPC health
check (what the kubelet's probe calls) and nothing else; the stats listener
serves Prometheus stats and nothing else of the admin API. Certificates are made
at run time with openssl, as cert-manager would issue them."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from deploy.local.probes import free_port
from tests.unit.envoy.test_render import ENVOY, clusters, hcm, listeners, needs_envoy, render, validate

SPIFFE = render.Tls.spiffe


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


def make_ca(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True)
    key, cert = folder / "ca.key", folder / "ca.crt"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
            "-subj", "/CN=switchyard-test-ca", "-keyout", key, "-out", cert)
    return key, cert


def issue(folder: Path, ca: tuple[Path, Path], identity: str) -> str:
    """A folder laid out like cert-manager's Secret: tls.crt, tls.key, ca.crt."""
    folder.mkdir(parents=True)
    ca_key, ca_cert = ca
    ext = folder / "ext.cnf"
    ext.write_text(f"subjectAltName=URI:{identity}\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=sidecar",
            "-keyout", folder / "tls.key", "-out", folder / "tls.csr")
    openssl("x509", "-req", "-in", folder / "tls.csr", "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
            "-days", "1", "-extfile", ext, "-out", folder / "tls.crt")
    (folder / "ca.crt").write_bytes(ca_cert.read_bytes())
    return str(folder)


class Envoys:
    """Envoy processes started from rendered configs; all stopped at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, text: str, *extra: str) -> None:
        config = self.folder / f"{name}.yaml"
        config.write_text(text)
        log = open(self.folder / f"{name}.log", "wb")
        assert ENVOY is not None
        self.procs.append(subprocess.Popen([ENVOY, "-c", str(config), "--disable-hot-restart", "--concurrency", "1",
                                            "--log-level", "warn", *extra], stdout=log, stderr=log))

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=10)


@pytest.fixture
def envoys(tmp_path: Path) -> Iterator[Envoys]:
    running = Envoys(tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def app() -> AsyncIterator[int]:
    """A gRPC server with the standard health service: the router app stand-in."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield port
    finally:
        await server.stop(0)


async def check(target: str, wait_s: float = 15) -> int | grpc.StatusCode:
    """The health status through ``target``, waiting for the Envoys to come up;
    the last gRPC error code if none answered SERVING in time."""
    code: int | grpc.StatusCode = grpc.StatusCode.UNKNOWN
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = asyncio.get_running_loop().time() + wait_s
        while asyncio.get_running_loop().time() < deadline:
            try:
                return (await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)).status
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                await asyncio.sleep(0.1)
    return code


def router_sidecar(tls_dir: str, ingress: int, health_port: int, app_port: int) -> str:
    return render.render_sidecar(
        service="router", protocol="grpc", ingress_addr=f"127.0.0.1:{ingress}", app_addr=f"127.0.0.1:{app_port}",
        admin_port=0, tls=render.Tls(SPIFFE("router"), tls_dir), callers=[SPIFFE("edge")],
        health_addr=f"127.0.0.1:{health_port}", internal_cidrs=())


def caller_sidecar(name: str, tls_dir: str, egress: int, ingress: int, peer: str = SPIFFE("router")) -> str:
    return render.render_sidecar(
        service=name, protocol="http", ingress_addr=f"127.0.0.1:{free_port()}", app_addr="127.0.0.1:9",
        admin_port=0, tls=render.Tls(SPIFFE(name), tls_dir), callers=[SPIFFE("front")], internal_cidrs=(),
        egress=[render.Egress("router", f"127.0.0.1:{egress}", [f"127.0.0.1:{ingress}"], "grpc", peer=peer)])


@needs_envoy
async def test_sidecars_talk_mtls_and_refuse_other_identities(tmp_path: Path, envoys: Envoys, app: int) -> None:
    ca = make_ca(tmp_path / "ca")
    other_ca = make_ca(tmp_path / "other-ca")
    ingress, health_port = free_port(), free_port()
    envoys.start("router", router_sidecar(issue(tmp_path / "router", ca, SPIFFE("router")), ingress, health_port,
                                          app))
    edge_egress, intruder_egress, forged_egress = free_port(), free_port(), free_port()
    envoys.start("edge", caller_sidecar("edge", issue(tmp_path / "edge", ca, SPIFFE("edge")), edge_egress, ingress))
    # A pod of another service: a valid certificate, but not an identity the router admits.
    envoys.start("intruder", caller_sidecar("analytics", issue(tmp_path / "intruder", ca, SPIFFE("analytics")),
                                            intruder_egress, ingress))
    # The edge's identity signed by a CA the router does not trust.
    envoys.start("forged", caller_sidecar("edge", issue(tmp_path / "forged", other_ca, SPIFFE("edge")),
                                          forged_egress, ingress))

    serving = health_pb2.HealthCheckResponse.SERVING
    assert await check(f"127.0.0.1:{edge_egress}") == serving  # edge → router over mTLS
    assert await check(f"127.0.0.1:{health_port}") == serving  # the kubelet's probe, plaintext
    assert await check(f"127.0.0.1:{intruder_egress}", wait_s=3) == grpc.StatusCode.UNAVAILABLE
    assert await check(f"127.0.0.1:{forged_egress}", wait_s=3) == grpc.StatusCode.UNAVAILABLE
    # A plaintext client at the mTLS ingress gets nowhere.
    assert await check(f"127.0.0.1:{ingress}", wait_s=3) == grpc.StatusCode.UNAVAILABLE
    # The health listener passes health checks only.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await channel.unary_unary("/switchyard.v1.Router/Chat")(b"", timeout=2)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED  # Envoy's 404 for a gRPC call


@needs_envoy
def test_mtls_variants_validate_and_pin_identities(tmp_path: Path) -> None:
    tls_dir = issue(tmp_path / "router", make_ca(tmp_path / "ca"), SPIFFE("router"))
    text = router_sidecar(tls_dir, 15000, 15021, 50051)
    validate(text, tmp_path)
    doc = yaml.safe_load(text)
    by_name = listeners(doc)
    ingress_tls = by_name["ingress"]["filter_chains"][0]["transport_socket"]["typed_config"]
    assert ingress_tls["require_client_certificate"] is True
    context = ingress_tls["common_tls_context"]
    assert context["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://switchyard/edge"}}]
    assert context["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_3"
    assert "transport_socket" not in by_name["health"]["filter_chains"][0]
    health_routes = hcm(by_name["health"])["route_config"]["virtual_hosts"][0]["routes"]
    assert [r["match"]["prefix"] for r in health_routes] == ["/grpc.health.v1.Health/", "/"]
    assert health_routes[-1]["direct_response"] == {"status": 404}

    front = yaml.safe_load(render.render_front(public_addr="0.0.0.0:8080", edge_addrs="edge-headless:15000",
                                               admin_port=9901, tls=render.Tls(SPIFFE("front"), tls_dir),
                                               edge_identity=SPIFFE("edge")))
    upstream = clusters(front)["edge"]["transport_socket"]["typed_config"]
    assert upstream["sni"] == "edge"
    assert upstream["common_tls_context"]["alpn_protocols"] == ["http/1.1"]
    assert upstream["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]["matcher"] == {
        "exact": "spiffe://switchyard/edge"}
    # The local (plaintext, Unix sockets) shape has no transport socket anywhere.
    local = render.render_local(public_addr="127.0.0.1:8080", edge_addr="unix:/tmp/e.sock",
                                router_listen_addr="unix:/tmp/r-in.sock", router_addrs="unix:/tmp/r.sock",
                                provider_listen_addr="unix:/tmp/p-in.sock", provider_addrs="unix:/tmp/p.sock",
                                admin_path="/tmp/a.sock")
    assert "transport_socket" not in local


def test_mtls_needs_both_ends_named() -> None:
    tls = render.Tls(SPIFFE("router"))
    with pytest.raises(ValueError, match="identities allowed to call it"):
        render.render_sidecar(service="router", protocol="grpc", ingress_addr="0.0.0.0:15000",
                              app_addr="127.0.0.1:50051", admin_port=9901, tls=tls)
    with pytest.raises(ValueError, match="peer identity"):
        render.render_sidecar(service="router", protocol="grpc", ingress_addr="0.0.0.0:15000",
                              app_addr="127.0.0.1:50051", admin_port=9901, tls=tls, callers=[SPIFFE("edge")],
                              egress=[render.Egress("provider", "127.0.0.1:15002", ["providers:15000"])])


@needs_envoy
async def test_a_pods_sidecar_serves_its_prometheus_stats_and_nothing_else_of_its_admin(
        tmp_path: Path, envoys: Envoys, app: int) -> None:
    admin, stats = free_port(), free_port()
    envoys.start("sidecar", render.render_sidecar(
        service="router", protocol="grpc", ingress_addr=f"127.0.0.1:{free_port()}", app_addr=f"127.0.0.1:{app}",
        admin_port=admin, internal_cidrs=(), stats_addr=f"127.0.0.1:{stats}"))
    status, body = await asyncio.to_thread(scrape, f"http://127.0.0.1:{stats}/stats/prometheus")
    assert status == 200 and "envoy_cluster_upstream_cx_total" in body
    status, body = await asyncio.to_thread(scrape, f"http://127.0.0.1:{stats}/config_dump")
    assert status == 404 and "configs" not in body  # the rest of the admin API stays private


def scrape(url: str, wait_s: float = 15) -> tuple[int, str]:
    """(status, body) of a GET, waiting (bounded) for the Envoy to listen."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
