"""Offline validation of the Kubernetes manifests under ``deploy/k8s`` (run by ``make test``).

The manifests are a kustomize base that uses only ``namespace`` and ``resources``; this module
renders it the way ``kubectl kustomize`` does for that subset (every object of every listed
file, with the namespace set on namespaced objects) and refuses any other kustomization key,
so the rendering cannot silently diverge. Then every object is validated:

- built-in kinds against the Kubernetes OpenAPI schemas bundled with ``kubernetes-validate``
  (strict: unknown fields are errors), for the Kubernetes version given;
- KubeRay kinds (``ray.io/v1`` ``RayJob``, ``RayService``) against the CRDs' OpenAPI v3 schemas
  vendored in ``deploy/kuberay-crds`` (KubeRay v1.7.0), with ``jsonschema``; like the API
  server's strict field validation, a field the schema does not declare is an error (unless the
  schema preserves unknown fields);
- a RayService's ``serveConfigV2`` must be YAML whose ``import_path`` names a function privrank
  has (``module:attribute``).

Files that are not listed in ``kustomization.yaml`` (``secrets.example.yaml``) are validated
too. Usage: ``python -m privrank.distributed.k8s_manifests deploy/k8s`` (exit 1 on problems).
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["render", "validate_directory", "validate_objects"]

KUBERNETES_VERSION = "1.37.0"
_KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "resources"}
_CLUSTER_SCOPED = {
    "Namespace",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "StorageClass",
    "CustomResourceDefinition",
}


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects of the kustomize base in ``directory`` (``namespace`` and ``resources`` only).

    Raises:
        ValueError: A kustomization key this renderer does not implement, or a missing file.
    """
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KUSTOMIZE_KEYS
    if unknown:
        raise ValueError(
            f"{directory / 'kustomization.yaml'}: keys {sorted(unknown)} are not rendered by "
            f"privrank's checker (it implements {sorted(_KUSTOMIZE_KEYS)})"
        )
    namespace = kustomization.get("namespace")
    objects = []
    for name in kustomization.get("resources", []):
        for obj in _load(directory / name):
            if namespace and obj.get("kind") not in _CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = namespace
            objects.append(obj)
    return objects


def validate_objects(
    objects: list[tuple[str, dict[str, Any]]],
    crd_dir: Path,
    kubernetes_version: str = KUBERNETES_VERSION,
) -> list[str]:
    """Problems of each ``(where, object)``; an empty list when every object is valid."""
    import kubernetes_validate

    crds = _crd_schemas(crd_dir)
    problems = []
    for where, obj in objects:
        label = f"{where}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        api_version = obj.get("apiVersion", "")
        if api_version.startswith("ray.io/"):
            schema = crds.get((api_version, str(obj.get("kind"))))
            if schema is None:
                problems.append(f"{label}: no vendored CRD schema for {api_version}")
                continue
            problems.extend(f"{label}: {p}" for p in _validate_crd(obj, schema))
            continue
        try:
            kubernetes_validate.validate(obj, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            problems.append(f"{label}: {path}: {exc.message}")
        except (
            kubernetes_validate.SchemaNotFoundError,
            kubernetes_validate.InvalidSchemaError,
        ) as exc:
            problems.append(f"{label}: {exc}")
    return problems


def validate_directory(
    directory: Path, crd_dir: Path, kubernetes_version: str = KUBERNETES_VERSION
) -> list[str]:
    """Render the base, validate it and every other YAML file of ``directory``."""
    try:
        rendered = render(directory)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        return [str(exc)]
    objects = [("kustomize build", obj) for obj in rendered]
    listed = set(yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"])
    for path in sorted(directory.glob("*.yaml")):
        if path.name != "kustomization.yaml" and path.name not in listed:
            try:
                objects.extend((path.name, obj) for obj in _load(path))
            except yaml.YAMLError as exc:
                return [f"{path}: {exc}"]
    return validate_objects(objects, crd_dir, kubernetes_version)


# -------------------------------------------------------------------- KubeRay kinds
def _crd_schemas(crd_dir: Path) -> dict[tuple[str, str], Any]:
    return _crd_schemas_at(str(crd_dir.resolve()))


@functools.cache
def _crd_schemas_at(crd_dir: str) -> dict[tuple[str, str], Any]:
    import jsonschema

    schemas = {}
    for path in sorted(Path(crd_dir).glob("*.json")):
        data = json.loads(path.read_text())
        key = (f"{data['group']}/{data['version']}", data["kind"])
        schemas[key] = jsonschema.Draft7Validator(_strict(data["openAPIV3Schema"]))
    return schemas


def _strict(schema: Any) -> Any:
    """A copy where objects with declared properties refuse undeclared ones."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        k: _strict(v) if k != "x-kubernetes-preserve-unknown-fields" else v
        for k, v in schema.items()
    }
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _validate_crd(obj: dict[str, Any], validator: Any) -> list[str]:
    body = copy.deepcopy(obj)
    metadata = body.pop("metadata", None)  # validated by the API server, not the CRD schema
    problems = []
    if not isinstance(metadata, dict) or not metadata.get("name"):
        problems.append("metadata.name is missing")
    for error in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        path = "/".join(str(p) for p in error.absolute_path) or "(root)"
        problems.append(f"{path}: {error.message}")
    if obj.get("kind") == "RayService":
        problems.extend(_serve_config_problems(obj.get("spec", {}).get("serveConfigV2")))
    return problems


def _serve_config_problems(text: Any) -> list[str]:
    if text is None:
        return []
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"spec/serveConfigV2: not YAML ({exc})"]
    problems = []
    for app in (config or {}).get("applications", []):
        import_path = str(app.get("import_path", ""))
        module, _, attribute = import_path.partition(":")
        if not module.startswith("privrank.") or not attribute:
            continue
        try:
            found = hasattr(importlib.import_module(module), attribute)
        except ImportError:
            found = False
        if not found:
            problems.append(f"spec/serveConfigV2: import_path {import_path!r} does not exist")
    return problems


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def main(argv: list[str] | None = None) -> int:
    """``python -m privrank.distributed.k8s_manifests DIR [CRD_DIR]``: 0 when valid, else 1."""
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0] if args else "deploy/k8s")
    crd_dir = Path(args[1]) if len(args) > 1 else directory.parent / "kuberay-crds"
    problems = validate_directory(directory, crd_dir)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(
            f"{directory}: every manifest is valid (Kubernetes {KUBERNETES_VERSION}, KubeRay CRDs)"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
