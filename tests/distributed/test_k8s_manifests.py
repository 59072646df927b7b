"""The Kubernetes manifests of deploy/ are valid, and a broken one fails the check."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from privrank.distributed.k8s_manifests import render, validate_directory

pytest.importorskip("kubernetes_validate")
pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CRDS = ROOT / "deploy" / "kuberay-crds"


def test_the_shipped_manifests_are_valid():
    assert validate_directory(K8S, CRDS) == []
    kinds = sorted(obj["kind"] for obj in render(K8S))
    assert kinds == sorted(
        [
            "Namespace",
            "PersistentVolumeClaim",
            "Service",
            "StatefulSet",
            "RayJob",
            "RayService",
            "Job",
        ]
    )
    assert all(
        obj["metadata"].get("namespace") == "privrank"
        for obj in render(K8S)
        if obj["kind"] != "Namespace"
    )


def test_secrets_come_from_kubernetes_secrets_never_from_manifests():
    text = "\n".join(p.read_text() for p in K8S.glob("*.yaml") if p.name != "secrets.example.yaml")
    assert "postgresql://" not in text and "postgresql+psycopg://" not in text
    for variable in ("PRIVRANK_LEDGER_URL", "PRIVRANK_SERVE_DATABASE_URL", "PRIVRANK_API_KEY"):
        assert variable in text
    assert text.count("secretKeyRef") >= 4


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_our_rendering_equals_kubectl_kustomize():
    done = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    theirs = [d for d in yaml.safe_load_all(done.stdout) if d]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(theirs, key=key) == sorted(render(K8S), key=key)


def _broken(tmp_path: Path, file: str, edit) -> list[str]:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    docs = [d for d in yaml.safe_load_all((copy / file).read_text()) if d]
    edit(docs)
    (copy / file).write_text(yaml.safe_dump_all(docs))
    return validate_directory(copy, CRDS)


@pytest.mark.parametrize(
    ("file", "edit", "expected"),
    [
        (
            "rayjob-train-evaluate.yaml",
            lambda d: d[0]["spec"].update(entrypont=d[0]["spec"].pop("entrypoint")),
            "entrypont",
        ),
        (
            "rayjob-train-evaluate.yaml",
            lambda d: d[0]["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(replicas="four"),
            "replicas",
        ),
        (
            "rayservice.yaml",
            lambda d: d[0]["spec"].update(
                serveConfigV2=d[0]["spec"]["serveConfigV2"].replace("build_app", "build_ap")
            ),
            "build_ap",
        ),
        (
            "postgres.yaml",
            lambda d: d[1]["spec"]["template"]["spec"]["containers"][0].update(imagePullPolice="x"),
            "imagePullPolice",
        ),
        ("postgres.yaml", lambda d: d[0]["spec"]["ports"][0].update(port="http"), "port"),
        ("secrets.example.yaml", lambda d: d[0].update(strngData={}), "strngData"),
    ],
)
def test_a_broken_manifest_fails_the_check(tmp_path, file, edit, expected):
    problems = _broken(tmp_path, file, edit)
    assert problems and any(expected in p for p in problems), problems


def test_a_kustomization_feature_the_renderer_lacks_is_refused(tmp_path):
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    with (copy / "kustomization.yaml").open("a") as handle:
        handle.write("namePrefix: dev-\n")
    assert "namePrefix" in validate_directory(copy, CRDS)[0]


def test_the_image_pins_torch_as_pyproject():
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(p for p in pins if p.startswith("torch=="))
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert 'ARG TORCH_SOURCE="--index-url https://download.pytorch.org/whl/cpu"' in dockerfile
    assert f"pip install ${{TORCH_SOURCE}} {torch}" in dockerfile
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in dockerfile
    assert "FROM ${BASE_IMAGE}" in dockerfile


def test_the_image_installs_what_the_rayjob_runs():
    """The RayJob evaluates, and ``privrank evaluate`` draws its curves with matplotlib."""
    rayjob = (K8S / "rayjob-train-evaluate.yaml").read_text()
    assert "privrank evaluate" in rayjob
    report = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(pin.startswith("matplotlib==") for pin in report["optional-dependencies"]["report"])
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "pip install '.[ray,report,serve,track]'" in dockerfile


def test_the_rayservice_builder_builds_the_privrank_app(tmp_path):
    pytest.importorskip("ray.serve")
    from privrank.distributed.kuberay import build_app
    from privrank.errors import ConfigError

    app = build_app({"model_dir": str(tmp_path), "num_replicas": 2})
    assert type(app).__name__ == "Application"
    with pytest.raises(ConfigError, match="secret"):
        build_app({"database_url": "postgresql://x"})
