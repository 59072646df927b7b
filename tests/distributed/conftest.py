"""One local Ray instance for the distributed tests of this folder (2 CPUs, small store)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A running local Ray instance (started here unless a test module already started one)."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=2,
            object_store_memory=256 * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
        )
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def three_nodes():
    """A 3-node local Ray cluster (``ray.cluster_utils.Cluster``: a head and two nodes, one CPU
    and a small object store each), connected for the tests of one module; yields the
    ``Cluster`` (``add_node``/``remove_node``). For ``pytest -m ray_cluster`` runs only."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.skip("another Ray instance runs in this session: run `pytest -m ray_cluster`")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        nodes.add_node(num_cpus=1, object_store_memory=128 * 1024 * 1024)
    ray.init(address=nodes.address, log_to_driver=False)
    nodes.wait_for_nodes()
    yield nodes
    ray.shutdown()
    nodes.shutdown()
