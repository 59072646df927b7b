"""iALS on Ray actors spread over a 3-node local cluster (ray.cluster_utils): the in-process fit,
also when an actor's process dies, and when a whole node is lost mid-fit.

Run on their own: ``pytest -m ray_cluster tests/distributed`` (kept out of ``make test``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.distributed.test_ray_als import dying_worker

from privrank.distributed.ray_als import ALSWorker, RayALSBlocks
from privrank.models import IALS, FitOptions
from privrank.models.engine import ALSProblem
from privrank.testing import synthetic_interactions

pytestmark = pytest.mark.ray_cluster

DATA = synthetic_interactions(n_users=500, n_items=150, per_user=9, seed=8)
CONFIG = {"factors": 8, "epochs": 4, "regularization": 0.05}


def node_worker() -> type[ALSWorker]:
    """An :class:`ALSWorker` that says which node it runs on (a class made here, so that Ray
    ships it by value to the nodes)."""

    class NodeWorker(ALSWorker):
        def node_id(self) -> str:
            import ray

            return str(ray.get_runtime_context().get_node_id())

    return NodeWorker


def engine_of(worker_class: type[ALSWorker], workers: int = 3):
    from privrank.distributed import RayEngine, ensure_ray

    class Engine(RayEngine):
        def __init__(self, **settings) -> None:
            super().__init__(**settings)
            self.blocks: list[RayALSBlocks] = []

        def als_blocks(self, problem: ALSProblem) -> RayALSBlocks:
            ensure_ray(self.config)
            blocks = RayALSBlocks(problem, self.config.workers, worker_class=worker_class)
            self.blocks.append(blocks)
            return blocks

    return Engine(workers=workers)


def test_ials_on_three_nodes_is_the_in_process_fit(three_nodes) -> None:
    import ray

    local = IALS(**CONFIG).fit(DATA, FitOptions(seed=4, threads=1))
    engine = engine_of(node_worker())
    homes: list[set[str]] = []

    def record(report) -> None:
        (blocks,) = engine.blocks
        homes.append(set(ray.get([actor.node_id.remote() for actor in blocks.actors])))

    on_ray = IALS(**CONFIG).fit(DATA, FitOptions(seed=4, threads=1, engine=engine, progress=record))
    assert len(homes[0]) == 3  # one actor on each node (one CPU each)
    np.testing.assert_array_equal(on_ray.user_factors_, local.user_factors_)
    np.testing.assert_array_equal(on_ray.item_factors_, local.item_factors_)


def test_an_actor_dying_on_another_node_is_recovered(three_nodes, tmp_path: Path) -> None:
    local = IALS(**CONFIG).fit(DATA, FitOptions(seed=4, threads=1))
    marker = tmp_path / "died"
    engine = engine_of(dying_worker(marker, on_call=2, side="users"))
    recovered = IALS(**CONFIG).fit(
        DATA, FitOptions(seed=4, threads=1, engine=engine, checkpoint_dir=tmp_path / "ckpt")
    )
    assert marker.exists() and recovered.recoveries_ >= 1
    np.testing.assert_array_equal(recovered.user_factors_, local.user_factors_)
    np.testing.assert_array_equal(recovered.item_factors_, local.item_factors_)


def test_a_lost_node_is_recovered_on_a_spare_node(three_nodes, tmp_path: Path) -> None:
    import ray

    local = IALS(**CONFIG).fit(DATA, FitOptions(seed=4, threads=1))
    spare = three_nodes.add_node(num_cpus=1, object_store_memory=128 * 1024 * 1024)
    three_nodes.wait_for_nodes()
    engine = engine_of(node_worker())
    lost: list[str] = []

    def lose_a_node(report) -> None:
        if report.epoch != 2:
            return
        (blocks,) = engine.blocks
        homes = ray.get([actor.node_id.remote() for actor in blocks.actors])
        for node in three_nodes.worker_nodes:
            if node is not spare and node.node_id in homes:
                three_nodes.remove_node(node)
                lost.append(node.node_id)
                return

    recovered = IALS(**CONFIG).fit(
        DATA,
        FitOptions(seed=4, threads=1, engine=engine, checkpoint_dir=tmp_path, progress=lose_a_node),
    )
    assert lost, "no node was removed: the test tested nothing"
    np.testing.assert_array_equal(recovered.user_factors_, local.user_factors_)
    np.testing.assert_array_equal(recovered.item_factors_, local.item_factors_)
