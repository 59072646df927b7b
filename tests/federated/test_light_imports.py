"""A device's code imports without the heavy parts: the model registry and the federated package
load their modules on demand, and the accountant imports dp_accounting when it accounts, so a
Flower ClientApp (fedmf's device code, its SecAgg+ stages and its distributed-DP noise share)
does not import torch, Opacus, LightGBM, implicit, FAISS, SQLAlchemy or dp_accounting (with the
scipy.stats it pulls in). Flower starts one ClientApp process per message, so this is paid on
every message of a deployment."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "opacus", "lightgbm", "implicit", "faiss", "sqlalchemy", "ray", "dp_accounting")


@pytest.mark.parametrize(
    "module",
    [
        "privrank.federated.flower.devices",
        "privrank.federated.flower.secure",
        "privrank.privacy.distributed_dp",
        "privrank.models",
        "privrank.models.fedmf",
    ],
)
def test_device_code_imports_nothing_heavy(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "", f"{module} imported {done.stdout.strip()}"


def test_the_registry_still_finds_every_model_by_name() -> None:
    code = (
        "import sys; from privrank.models import model_class, model_names; "
        "names = model_names(); assert 'torch' not in sys.modules; "
        "classes = [model_class(n) for n in names]; "
        "assert all(c.name == n for c, n in zip(classes, names)); print(len(names))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert int(done.stdout.strip()) >= 13
