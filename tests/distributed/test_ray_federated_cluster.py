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


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.skip("another Ray instance runs in this session: run `pytest -m ray_cluster`")
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        nodes.add_node(num_cpus=1, object_store_memory=128 * 1024 * 1024)
    ray.init(address=nodes.address, log_to_driver=False)
    nodes.wait_for_nodes()
    yield ray
    ray.shutdown()
    nodes.shutdown()


def test_devices_on_three_nodes_train_the_in_process_model(cluster, tmp_path) -> None:
    from privrank.distributed.ray_federated import RayClientRunner

    assert len([n for n in cluster.nodes() if n["Alive"]]) == 3
    config = FedMFConfig(factors=6, regularization=0.05, unobserved_weight=0.1)
    data = synthetic_interactions(n_users=600, n_items=50, per_user=6, seed=2)
    settings = FederatedSettings(rounds=3, clients_per_round=200, batch_size=20, seed=1)
    local = simulate(config, data, settings, run_dir=tmp_path / "local")
    on_ray = simulate(
        config, data, settings, run_dir=tmp_path / "ray", runner=RayClientRunner(workers=3)
    )
    np.testing.assert_array_equal(on_ray.model.item_factors_, local.model.item_factors_)
