"""A Ray Train fit on a 2-node local cluster (``ray.cluster_utils.Cluster``) that loses a worker
on one node mid-fit: its process, or the whole node.

The cluster: a head node with no CPU (the driver and Ray Train's controller) and two nodes of
one CPU each, so the two Ray Train workers (one CPU each) run on different nodes and talk over
gloo (when a node is removed, a spare node added before the fit takes its place). Oracles:
the uninterrupted two-worker fit on the same cluster with the same seed (written without
checkpoints), whose weights and losses the recovered fit must equal bit for bit; for a private
fit, the single-process fit with the same spec and noise seed (to the tolerance of
test_ray_train.py), the same guarantee, and one committed charge in the ledger.

Every worker waits after each epoch's report until Ray Train has committed its checkpoint
(:mod:`privrank.distributed.ray_train`), so a worker lost in epoch 3 is resumed from epoch 2's
checkpoint, exactly.

Run on their own: ``pytest -m ray_cluster tests/distributed`` (kept out of ``make test``; each
Ray Train run starts worker processes that import torch and privrank).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tests.distributed._lost_worker import (
    DATA,
    SASREC,
    assert_private_fit_charged_once,
    ray_engine,
)

from privrank.models import FitOptions, create_model

pytestmark = [pytest.mark.ray_cluster, pytest.mark.slow]

NODE_STORE = 128 * 1024 * 1024


@pytest.fixture(scope="module")
def two_nodes():
    """A head without CPUs and two nodes of one CPU each, connected for this module."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.skip("another Ray instance runs in this session: run `pytest -m ray_cluster`")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    nodes = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": NODE_STORE}
    )
    for _ in range(2):
        nodes.add_node(num_cpus=1, object_store_memory=NODE_STORE)
    ray.init(address=nodes.address, log_to_driver=False)
    nodes.wait_for_nodes()
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def _losing_worker(marker: str, how: str, after_epoch: int, at_call: int, config: dict) -> None:
    """The Ray Train worker of :mod:`privrank.distributed.ray_train`, except that rank 1, once
    (``marker`` records it, with its node's id), at its ``at_call``-th all-reduce after its
    report of epoch ``after_epoch``:

    - ``how="process"``: kills its own process (SIGKILL);
    - ``how="node"``: writes the marker and waits (rank 0 waits in the same all-reduce) for the
      test to remove its node.
    """
    import ray
    import ray.train
    import torch.distributed as dist

    from privrank.distributed import ray_train

    real_all_reduce, real_report = dist.all_reduce, ray.train.report
    calls: list[int] = []  # all-reduces since the report of epoch ``after_epoch``

    def armed() -> bool:
        return dist.get_rank() == 1 and not os.path.exists(marker)

    def mark() -> None:
        Path(marker).write_text(str(ray.get_runtime_context().get_node_id()))

    def report(metrics, *args, **kwargs):
        real_report(metrics, *args, **kwargs)
        if metrics.get("epoch") == after_epoch:
            calls.append(0)

    def all_reduce(tensor, *args, **kwargs):
        if calls:
            calls[0] += 1
            if calls[0] == at_call and armed():
                mark()
                if how == "process":
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(600)  # the node is removed meanwhile
        return real_all_reduce(tensor, *args, **kwargs)

    dist.all_reduce = all_reduce
    ray.train.report = report
    ray_train._train_worker(config)


@pytest.fixture
def losing(two_nodes, monkeypatch, tmp_path: Path):
    """Make the next Ray Train fit lose rank 1 (its process, or its node) in epoch 3; yields a
    setter that returns the marker file written when it happens."""
    from ray import cloudpickle

    from privrank.distributed import ray_train

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests

    def arm(how: str, after_epoch: int = 2, at_call: int = 3) -> Path:
        marker = tmp_path / f"lost-{how}-after-{after_epoch}"
        worker = functools.partial(_losing_worker, str(marker), how, after_epoch, at_call)
        monkeypatch.setattr(ray_train, "_train_worker", worker)
        return marker

    return arm


def _remove_the_marked_node(cluster, marker: Path, done: threading.Event) -> list[str]:
    """Start a thread that waits for ``marker`` and removes the node it names (its raylet and
    every process on it); returns the list the removed node's id is appended to. (A spare node
    for the restarted group must be added before, from the main thread: Ray starts a node's
    processes with signal handlers, which only the main thread may set.)"""
    removed: list[str] = []

    def watch() -> None:
        while not done.is_set():
            if marker.exists() and marker.read_text():
                victim = marker.read_text()
                for node in list(cluster.worker_nodes):
                    if node.node_id == victim:
                        cluster.remove_node(node)
                        removed.append(victim)
                return
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    return removed


def _assert_same_fit(a, b) -> None:
    mine = {k: v for k, v in a._state().items() if k.startswith("network.")}
    theirs = {k: v for k, v in b._state().items() if k.startswith("network.")}
    assert mine.keys() == theirs.keys() and mine
    for key in mine:
        np.testing.assert_array_equal(mine[key], theirs[key], err_msg=key)
    np.testing.assert_array_equal(a.loss_history_, b.loss_history_)


@pytest.fixture(scope="module")
def uninterrupted(two_nodes):
    """The oracle: the two-worker fit on this cluster, never interrupted, no checkpoints."""
    whole = create_model("sasrec", SASREC).fit(
        DATA, FitOptions(seed=5, threads=1, engine=ray_engine(0))
    )
    assert whole.recoveries_ == 0 and whole.resumed_from_epoch_ is None
    return whole


@pytest.mark.parametrize("how", ["process", "node"])
def test_a_worker_lost_on_another_node_resumes_to_the_uninterrupted_fit(
    two_nodes, uninterrupted, losing, how
) -> None:
    import ray

    if how == "node":  # a spare node, so that the restarted group finds two CPUs
        two_nodes.add_node(num_cpus=1, object_store_memory=NODE_STORE)
        two_nodes.wait_for_nodes()
    homes = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")}
    assert len(homes) == (3 if how == "node" else 2)
    marker = losing(how)
    done = threading.Event()
    removed = _remove_the_marked_node(two_nodes, marker, done) if how == "node" else []
    try:
        epochs: list[int] = []
        recovered = create_model("sasrec", SASREC).fit(
            DATA,
            FitOptions(
                seed=5, threads=1, engine=ray_engine(1), progress=lambda r: epochs.append(r.epoch)
            ),
        )
    finally:
        done.set()
    assert marker.exists(), "no worker was lost: the test tested nothing"
    assert marker.read_text() in homes  # rank 1 ran on a node with a CPU, not the head
    if how == "node":
        assert removed == [marker.read_text()]
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert marker.read_text() not in alive
    assert recovered.recoveries_ == 1
    assert recovered.resumed_from_epoch_ == 2  # epoch 2's checkpoint was committed first
    assert epochs == [1, 2, 3, 4]  # the driver hears of every epoch once
    _assert_same_fit(recovered, uninterrupted)


def test_a_private_fit_losing_a_worker_on_another_node_is_charged_once(
    two_nodes, losing, tmp_path: Path
) -> None:
    # 24 DP-SGD steps: the loss lands mid-fit (epoch 2).
    assert_private_fit_charged_once(
        tmp_path,
        lambda: losing("process", after_epoch=0, at_call=12),
        "ray train on two nodes, one worker lost",
    )
