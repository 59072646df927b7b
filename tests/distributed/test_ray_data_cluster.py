"""Data on Ray Data across nodes: a 3-node local cluster (``ray.cluster_utils.Cluster``).

The head node has no CPU, so every task runs on one of the two worker nodes (separate raylets
and object stores); staging is a directory all nodes see (one machine here, a shared volume on
a real cluster). Marked ``ray_cluster`` and left out of ``make test`` (starting three nodes
takes most of a minute on a shared 2-core machine): ``make test-ray-cluster``.
"""

from __future__ import annotations

import os

import pytest

from privrank.data.curation import CurationConfig, curate
from privrank.data.fingerprint import fingerprint
from privrank.data.interactions import Interactions
from privrank.data.readers import ReadOptions, read_interactions
from privrank.data.splits import split

pytestmark = [pytest.mark.ray, pytest.mark.ray_cluster]

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from privrank.distributed.ray_data import RayDataOptions, import_on_ray, split_on_ray  # noqa: E402

from .test_ray_data import _PARQUET, _assert_same_split, _synthetic_parquet  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        ray.shutdown()
    nodes = cluster_utils.Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": 100 * 2**20},
    )
    for _ in range(2):
        nodes.add_node(num_cpus=1, object_store_memory=100 * 2**20)
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, include_dashboard=False, log_to_driver=False)
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def test_three_nodes_give_the_single_process_result(cluster, tmp_path):
    alive = [node for node in ray.nodes() if node["Alive"]]
    assert len(alive) == 3
    assert sum(node["Resources"].get("CPU", 0) for node in alive) == 2
    source = _synthetic_parquet(tmp_path / "synth.parquet")
    options = ReadOptions(**_PARQUET)
    curation = CurationConfig(
        k_core={"user_k": 15, "item_k": 30},
        max_per_user={"n": 50, "strategy": "uniform", "seed": 1},
    )
    local = curate(read_interactions(source, options).interactions, curation)
    engine = RayDataOptions(part_rows=3_000, staging_dir=tmp_path / "shared")
    import_on_ray(source, options, tmp_path / "ds", curation=curation, engine=engine)
    on_ray = Interactions.load(tmp_path / "ds")
    assert on_ray.table.equals(local.table)
    assert fingerprint(on_ray) == fingerprint(local)
    assert on_ray.metadata == local.metadata
    spec = {"protocol": "leave-last-out", "k": 1, "validation": True}
    split_on_ray(tmp_path / "ds", spec, tmp_path / "split", engine=engine)
    _assert_same_split(split(local, spec), tmp_path / "split")
    assert list((tmp_path / "shared").iterdir()) == []  # staging cleaned up


def test_a_bad_row_on_a_worker_node_fails_the_import_with_its_row(cluster, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from privrank.errors import DataError

    source = _synthetic_parquet(tmp_path / "bad.parquet", rows=6_000)
    table = pq.read_table(source)
    stamps = table.column("ts").to_pylist()
    stamps[5_000] = -5
    pq.write_table(table.set_column(2, "ts", pa.array(stamps)), source, row_group_size=1_500)
    with pytest.raises(DataError, match="row 5001"):
        import_on_ray(
            source,
            ReadOptions(**_PARQUET),
            tmp_path / "ds",
            engine=RayDataOptions(part_rows=1_500),
        )
    assert not (tmp_path / "ds").exists()
