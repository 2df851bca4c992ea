"""Render a Kustomize overlay without the kustomize binary (the subset deploy/k8s uses).

`kubectl kustomize` (or `kubectl apply -k`) renders the same overlays; this
exists because no kustomize binary is installable here from the package
registries, so `make test` renders and validates the overlays with it.
Supported kustomization fields, with kustomize's meaning:

- ``resources``: files (multi-document YAML) and directories holding a
  kustomization.yaml (built first, recursively);
- ``patches``: strategic-merge patches, from ``path`` or inline ``patch``,
  applied to the resource the patch names, or with ``target`` (kind, name) to
  every match; merge keys as in the Kubernetes API for the lists used here
  (containers, initContainers, volumes, env, volumeMounts, ports,
  topologySpreadConstraints; the patch's items first, then the others), other
  lists replaced, ``null`` removes a field, ``$patch: delete`` removes an item or
  the whole resource;
- ``namespace``: set on every resource; ``labels`` (``pairs``, added to
  ``metadata.labels``); ``replicas`` (``name``, ``count``); ``images``
  (``name``, ``newName``, ``newTag``) in containers and initContainers.

Anything else in a kustomization.yaml is an error, so the subset cannot be
left behind silently::

    python deploy/k8s/kustomize.py deploy/k8s/overlays/prod > prod.yaml
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]
SUPPORTED = {"apiVersion", "kind", "resources", "patches", "namespace", "labels", "replicas", "images"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "StorageClass",
                  "PersistentVolume", "PriorityClass", "ClusterIssuer"}
# kustomize's "legacy" order: what others depend on first.
ORDER = ("Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount", "Role",
         "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap", "Secret", "Endpoints", "Service",
         "LimitRange", "PriorityClass", "PersistentVolume", "PersistentVolumeClaim", "Deployment", "StatefulSet",
         "CronJob", "PodDisruptionBudget")
WORKLOADS = ("Deployment", "StatefulSet", "ReplicaSet")


class KustomizeError(ValueError):
    """The kustomization uses something outside the supported subset, or is wrong."""


def build(directory: Path) -> list[Resource]:
    """The resources of the kustomization in ``directory``, transformed, in kustomize's legacy order."""
    return sorted(_build(Path(directory)), key=_order)


def _order(resource: Resource) -> tuple[int, str, str]:
    """Kinds in ``ORDER`` first, in that order; then the others by group, version and kind; then by name."""
    kind = resource["kind"]
    if kind in ORDER:
        return ORDER.index(kind), "", resource["metadata"]["name"]
    group, _, version = resource["apiVersion"].rpartition("/")
    return len(ORDER), f"{group or '~G'}_{version}_{kind}", resource["metadata"]["name"]


def _build(directory: Path) -> list[Resource]:
    path = directory / "kustomization.yaml"
    if not path.exists():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{path}: unsupported fields {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        target = directory / entry
        resources += _build(target) if target.is_dir() else _load(target)
    _check_unique(resources, path)
    for patch in spec.get("patches", []):
        resources = _apply_patch(resources, patch, directory)
    if "namespace" in spec:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = spec["namespace"]
    for label in spec.get("labels", []):
        if label.get("includeSelectors") or label.get("includeTemplates"):
            raise KustomizeError(f"{path}: labels with includeSelectors/includeTemplates are not supported")
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(label["pairs"])
    for replica in spec.get("replicas", []):
        matched = [r for r in resources if r["kind"] in WORKLOADS and r["metadata"]["name"] == replica["name"]]
        if not matched:
            raise KustomizeError(f"{path}: replicas for {replica['name']!r}, which no workload is named")
        for resource in matched:
            resource["spec"]["replicas"] = replica["count"]
    for image in spec.get("images", []):
        _set_image(resources, image)
    return resources


def _load(path: Path) -> list[Resource]:
    if not path.exists():
        raise KustomizeError(f"resource {path} does not exist")
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for doc in docs:
        if not {"apiVersion", "kind", "metadata"} <= set(doc) or "name" not in doc["metadata"]:
            raise KustomizeError(f"{path}: a document without apiVersion, kind or metadata.name")
    return docs


def _key(resource: Resource) -> tuple[str, str]:
    return resource["kind"], resource["metadata"]["name"]


def _check_unique(resources: list[Resource], where: Path) -> None:
    seen: set[tuple[str, str]] = set()
    for resource in resources:
        if _key(resource) in seen:
            raise KustomizeError(f"{where}: {resource['kind']} {resource['metadata']['name']!r} appears twice")
        seen.add(_key(resource))


def _apply_patch(resources: list[Resource], entry: dict[str, Any], directory: Path) -> list[Resource]:
    if "path" in entry:
        patch = yaml.safe_load((directory / entry["path"]).read_text())
    elif "patch" in entry:
        patch = yaml.safe_load(entry["patch"])
    else:
        raise KustomizeError(f"{directory}: a patch needs path or patch")
    target = entry.get("target")
    if target:
        unknown = set(target) - {"kind", "name"}
        if unknown:
            raise KustomizeError(f"{directory}: patch target fields {sorted(unknown)} are not supported")
        matches = [r for r in resources if r["kind"] == target.get("kind", r["kind"])
                   and r["metadata"]["name"] == target.get("name", r["metadata"]["name"])]
    else:
        matches = [r for r in resources if _key(r) == (patch["kind"], patch["metadata"]["name"])]
    if not matches:
        raise KustomizeError(f"{directory}: patch {entry} matches no resource")
    if patch.get("$patch") == "delete":
        doomed = {id(r) for r in matches}
        return [r for r in resources if id(r) not in doomed]
    for resource in matches:
        body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
        body["metadata"] = {k: v for k, v in patch.get("metadata", {}).items() if k != "name"}
        merged = merge(resource, body)
        resource.clear()
        resource.update(merged)
    return resources


def _merge_key(field: str, items: list[Any]) -> str | None:
    """The strategic-merge key of a list field (as in the Kubernetes API), or None to replace it."""
    if field in ("containers", "initContainers", "volumes", "env", "imagePullSecrets", "volumeClaimTemplates"):
        return "name"
    if field == "volumeMounts":
        return "mountPath"
    if field == "topologySpreadConstraints":
        return "topologyKey"
    if field == "ports":
        return "containerPort" if any(isinstance(i, dict) and "containerPort" in i for i in items) else "port"
    return None


def merge(base: Any, patch: Any, field: str = "") -> Any:
    """``patch`` merged into a copy of ``base`` (strategic merge, the subset above)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value, key)
            else:
                out[key] = _strip(copy.deepcopy(value))
        return out
    if isinstance(base, list) and isinstance(patch, list):
        key = _merge_key(field, base + patch)
        if key is None:
            return _strip(copy.deepcopy(patch))
        if key == "name" and field == "volumeClaimTemplates":
            by = lambda item: item["metadata"]["name"]  # noqa: E731
        else:
            by = lambda item: item[key]  # noqa: E731
        # As Kubernetes' strategic merge orders it: the patch's items first
        # (merged into their originals), then the originals it did not name.
        originals = {by(item): item for item in base}
        out = []
        for item in patch:
            if item.get("$patch") != "delete":
                old = originals.get(by(item))
                out.append(_strip(copy.deepcopy(item)) if old is None else merge(old, item, field))
        named = {by(item) for item in patch}
        return out + [copy.deepcopy(item) for item in base if by(item) not in named]
    return copy.deepcopy(patch)


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "$patch"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _set_image(resources: list[Resource], image: dict[str, str]) -> None:
    for resource in resources:
        if resource["kind"] not in WORKLOADS:
            continue
        pod = resource["spec"]["template"]["spec"]
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, _, tag = container["image"].partition(":")
            if name != image["name"]:
                continue
            container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _block(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _block)


def dump(resources: list[Resource]) -> str:
    return "---\n".join(yaml.dump(r, Dumper=_Dumper, sort_keys=False, width=120) for r in resources)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(dump(build(Path(args[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
