"""bench/bench_federated_speed.py's Flower arm on a fixed pool of virtual SuperNodes.

The node-summed item counts (what each pool node sends instead of one vector per device) are
checked against a direct count of the training pairs; the end-to-end check (``flower`` marker,
needs ``.venv-flower``) runs the bench's privrank and Flower arms on a small synthetic set with
fewer SuperNodes than devices and asks for the same model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from privrank.federated.flower.devices import load_node, partition
from privrank.testing import synthetic_interactions

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "bench_federated_speed.py"
FLOWER = Path(os.environ.get("PRIVRANK_FLOWER_VENV", ROOT / ".venv-flower"))


def _bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_federated_speed", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_node_summed_counts_add_up_to_the_item_counts(tmp_path: Path) -> None:
    train = synthetic_interactions(n_users=53, n_items=31, per_user=6, seed=3)
    partition(train, 7, tmp_path)
    bench = _bench()
    total = np.zeros(train.n_items)
    for node in range(7):
        row = bench.node_counts(load_node(tmp_path / f"node-{node}.npz"))
        assert row.shape == (1, train.n_items)
        total += row[0]
    # Oracle: the distinct (user, item) pairs, counted per item.
    pairs = {(int(u), int(i)) for u, i in zip(train.users(), train.items(), strict=True)}
    expected = np.bincount([i for _, i in pairs], minlength=train.n_items)
    np.testing.assert_array_equal(total, expected)


@pytest.mark.flower
def test_flower_pool_arm_computes_the_simulators_model(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    command = [
        sys.executable, str(BENCH), "--synthetic-users", "60", "--synthetic-items", "40",
        "--rounds", "2", "--clients-per-round", "20", "--factors", "4",
        "--flower-nodes", "4", "--arms", "privrank", "flower",
        "--flower-venv", str(FLOWER), "--json", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True, timeout=600, capture_output=True)
    result = json.loads(out.read_text())
    flower = result["flower"]
    assert flower["supernodes"] == 4
    assert flower["round_devices"] == [20, 20]
    assert flower["max_abs_diff_H_vs_privrank"] < 1e-6
