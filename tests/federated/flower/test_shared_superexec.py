"""The in-flight cap and the shared SuperExec on real processes (``make test-flower``; needs
``.venv-flower``).

``privrank federated serve --local-devices … --shared-superexec --max-in-flight 2`` starts a
SuperLink, 4 SuperNodes with ``--isolation process`` and one SuperExec for all of them; every
exchange has at most 2 messages outstanding. (Without the shared SuperExec nothing would start
the SuperNodes' ClientApps and the run could not finish.) With no drop-out the run computes what the
simulator computes on the same data, seed and settings (the module docstring of
:mod:`privrank.federated.flower.rounds`), so the oracle is :func:`simulate`.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from tests.federated.flower._supernodes import FLOWER

pytestmark = [pytest.mark.flower, pytest.mark.realdata]

NODES = 4
PORT = 19491
ROUNDS = 2


def test_shared_superexec_with_a_cap_of_two_equals_the_simulator(real_data_dir, tmp_path):
    from privrank.federated import FederatedSettings, simulate
    from privrank.federated.flower.devices import partition
    from privrank.models import FedMFConfig
    from privrank.workflow.protocols import prepare

    if not (FLOWER / "flower-supernode").exists():
        pytest.fail(f"{FLOWER} holds no Flower environment: run `make flower-env`")
    train = prepare("ml100k-holdout").train
    partition(train, NODES, tmp_path / "devices")
    out = tmp_path / "model"
    env = dict(os.environ, PATH=f"{FLOWER}{os.pathsep}{os.environ['PATH']}")
    command = [
        str(FLOWER / "privrank"), "federated", "serve", "--data", "ml100k-holdout",
        "--out", str(out), "--param", "factors=4", "--rounds", str(ROUNDS),
        "--clients-per-round", "40", "--seed", "1", "--port", str(PORT),
        "--local-devices", str(tmp_path / "devices"), "--shared-superexec",
        "--max-in-flight", "2", "--enrol-timeout", "600", "--round-timeout", "600",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1500)
    logs = tmp_path / "model.run" / "logs"
    assert done.returncode == 0, done.stderr[-3000:] + (logs / "superexec.log").read_text()[-2000:]
    lines = [
        json.loads(line)
        for line in (tmp_path / "model.run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [line["released"] for line in lines] == [True] * ROUNDS
    assert all(line["refused"]["dropped"] == 0 for line in lines)
    record = json.loads((out / "training.json").read_text())
    assert record["federated"]["max_in_flight"] == 2

    settings = FederatedSettings(rounds=ROUNDS, clients_per_round=40, seed=1)
    reference = simulate(FedMFConfig(factors=4), train, settings, run_dir=tmp_path / "sim")
    with np.load(tmp_path / "model.run" / "state.npz") as state:
        np.testing.assert_allclose(
            state["item_factors"], reference.state.arrays["item_factors"], rtol=1e-5, atol=1e-6
        )
