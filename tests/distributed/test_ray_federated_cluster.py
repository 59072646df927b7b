"""The federated simulator's devices on a 3-node local Ray cluster (ray.cluster_utils) give the
in-process model bit for bit.

Run on their own: ``pytest -m ray_cluster tests/distributed`` (kept out of ``make test``).
"""

from __future__ import annotations

import numpy as np
import pytest

from privrank.federated import FederatedSettings, simulate
from privrank.models import FedMFConfig
from privrank.testing import synthetic_interactions

pytestmark = pytest.mark.ray_cluster


def test_devices_on_three_nodes_train_the_in_process_model(three_nodes, tmp_path) -> None:
    import ray

    from privrank.distributed.ray_federated import RayClientRunner

    assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    config = FedMFConfig(factors=6, regularization=0.05, unobserved_weight=0.1)
    data = synthetic_interactions(n_users=600, n_items=50, per_user=6, seed=2)
    settings = FederatedSettings(rounds=3, clients_per_round=200, batch_size=20, seed=1)
    local = simulate(config, data, settings, run_dir=tmp_path / "local")
    on_ray = simulate(
        config, data, settings, run_dir=tmp_path / "ray", runner=RayClientRunner(workers=3)
    )
    np.testing.assert_array_equal(on_ray.model.item_factors_, local.model.item_factors_)
