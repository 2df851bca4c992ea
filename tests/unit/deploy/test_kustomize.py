"""deploy/k8s/kustomize.py: the Kustomize subset the overlays use, with
kustomize's meaning (checked against `kubectl kustomize` v5.5 when written:
the same documents, in the same order, for base, dev and prod)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deploy.k8s import kustomize


def write(folder: Path, name: str, *docs: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump_all(docs, sort_keys=False))


def deployment(name: str, **pod: object) -> dict:
    spec = {"containers": [{"name": "app", "image": "switchyard", "env": [{"name": "A", "value": "1"},
                                                                          {"name": "B", "value": "2"}]}], **pod}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 2, "template": {"spec": spec}}}


@pytest.fixture
def base(tmp_path: Path) -> Path:
    folder = tmp_path / "base"
    write(folder, "app.yaml", deployment("edge"), deployment("router"),
          {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "env"}, "data": {"X": "1"}},
          {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ignored"}})
    write(folder, "kustomization.yaml", {"resources": ["app.yaml"], "labels": [{"pairs": {"part-of": "sy"}}]})
    return folder


def test_overlay_transforms_what_it_names(tmp_path: Path, base: Path) -> None:
    overlay = tmp_path / "overlay"
    write(overlay, "patch.yaml", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "edge"},
                                  "spec": {"template": {"spec": {"containers": [
                                      {"name": "app", "env": [{"name": "B", "value": "9"}, {"name": "C", "value": "3"},
                                                              {"name": "A", "$patch": "delete"}]},
                                      {"name": "sidecar", "image": "envoy"}]}}}})
    write(overlay, "kustomization.yaml", {
        "namespace": "prod", "resources": ["../base"], "replicas": [{"name": "router", "count": 5}],
        "images": [{"name": "switchyard", "newName": "registry/sy", "newTag": "1.0"}],
        "patches": [{"path": "patch.yaml"}, {"patch": "kind: ConfigMap\nmetadata: {name: any}\ndata: {X: null, Y: '2'}",
                                             "target": {"kind": "ConfigMap"}}]})
    out = {(r["kind"], r["metadata"]["name"]): r for r in kustomize.build(overlay)}
    assert [r["kind"] for r in kustomize.build(overlay)] == ["Namespace", "ConfigMap", "Deployment", "Deployment"]
    edge, router = out["Deployment", "edge"], out["Deployment", "router"]
    assert edge["metadata"] == {"name": "edge", "namespace": "prod", "labels": {"part-of": "sy"}}
    assert "namespace" not in out["Namespace", "ignored"]["metadata"]  # cluster-scoped
    app, sidecar = edge["spec"]["template"]["spec"]["containers"]
    # Merged by name: the patch's items first, then the originals it did not name; A deleted.
    assert app["env"] == [{"name": "B", "value": "9"}, {"name": "C", "value": "3"}]
    assert app["image"] == "registry/sy:1.0" and sidecar["image"] == "envoy"
    assert router["spec"]["replicas"] == 5 and edge["spec"]["replicas"] == 2
    assert out["ConfigMap", "env"]["data"] == {"Y": "2"}


def test_a_delete_patch_removes_the_resource(tmp_path: Path, base: Path) -> None:
    overlay = tmp_path / "overlay"
    write(overlay, "kustomization.yaml", {"resources": ["../base"], "patches": [
        {"patch": "{apiVersion: apps/v1, kind: Deployment, metadata: {name: router}, $patch: delete}"}]})
    assert [r["metadata"]["name"] for r in kustomize.build(overlay) if r["kind"] == "Deployment"] == ["edge"]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("configMapGenerator", [{"name": "x"}], "unsupported fields"),
    ("patches", [{"patch": "{kind: Deployment, metadata: {name: nobody}, spec: {}}"}], "matches no resource"),
    ("replicas", [{"name": "nobody", "count": 1}], "no workload is named"),
    ("labels", [{"pairs": {"a": "b"}, "includeSelectors": True}], "includeSelectors"),
])
def test_what_it_cannot_do_is_an_error(tmp_path: Path, base: Path, field: str, value: object, message: str) -> None:
    overlay = tmp_path / "overlay"
    write(overlay, "kustomization.yaml", {"resources": ["../base"], field: value})
    with pytest.raises(kustomize.KustomizeError, match=message):
        kustomize.build(overlay)


def test_a_resource_twice_is_an_error(tmp_path: Path, base: Path) -> None:
    overlay = tmp_path / "overlay"
    write(overlay, "again.yaml", deployment("edge"))
    write(overlay, "kustomization.yaml", {"resources": ["../base", "again.yaml"]})
    with pytest.raises(kustomize.KustomizeError, match="appears twice"):
        kustomize.build(overlay)
