"""Batch scoring and evaluation on Ray equal the single-process evaluator; top-k on Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from privrank.data.splits import HoldoutSplit, split
from privrank.metrics.evaluate import EvaluationConfig, evaluate
from privrank.models import create_model
from privrank.testing import synthetic_interactions

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def fitted():
    parts = split(
        synthetic_interactions(400, 80, per_user=10, seed=4), HoldoutSplit(fraction=0.25, seed=1)
    )
    model = create_model("ease", {"regularization": 20.0}).fit(parts.train)
    return model, parts.train, parts.test


@pytest.mark.parametrize("beyond", [True, False])
def test_metrics_and_top_k_equal_the_single_process_evaluator(
    fitted, ray_local, tmp_path: Path, beyond: bool
) -> None:
    from privrank.distributed import RayEngineConfig
    from privrank.distributed.ray_batch import evaluate_on_ray

    model, train, test = fitted
    config = EvaluationConfig(
        cutoffs=(5, 10), batch_size=64, keep_recommendations=True, beyond_accuracy=beyond
    )
    oracle = evaluate(model.score, train, test, config)
    engine = RayEngineConfig(workers=2, partitions=3)
    on_ray = evaluate_on_ray(model, train, test, config, engine=engine, out=tmp_path / "topk")
    result = on_ray.result
    assert on_ray.partitions == 3 and len(on_ray.files) == 3
    np.testing.assert_array_equal(result.users, oracle.users)
    assert result.counts == oracle.counts
    assert result.per_user.keys() == oracle.per_user.keys()
    for name, values in oracle.per_user.items():
        np.testing.assert_array_equal(result.per_user[name], values)
    assert result.means == oracle.means  # exactly: the same arrays, the same mean
    # The Parquet top-k lists are the evaluator's lists, in external ids.
    table = pq.read_table(tmp_path / "topk").sort_by(
        [("user_id", "ascending"), ("rank", "ascending")]
    )
    assert table.column_names == ["user_id", "rank", "item_id"]
    users = model.user_ids_.to_numpy(zero_copy_only=False)[oracle.users]
    items = model.item_ids_.to_numpy(zero_copy_only=False)[oracle.recommendations]
    order = np.argsort(users, kind="stable")
    expected_users = np.repeat(users[order], 10)
    np.testing.assert_array_equal(table["user_id"].to_numpy(), expected_users)
    np.testing.assert_array_equal(table["item_id"].to_numpy(), items[order].ravel())
    # Nothing half-written: no temporary directories left next to the output.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["topk"]


@pytest.mark.parametrize(
    ("workers", "partitions", "users", "expected"),
    [
        (2, None, 10_000, 2),  # one 20,000-user partition would leave a worker idle
        (2, None, 30_000, 2),
        (2, None, 70_000, 4),  # 2 · workers
        (2, None, 1_000_000, 4),
        (4, None, 50_000, 4),
        (1, None, 5, 1),
        (3, None, 0, 3),
        (2, 7, 10, 7),  # set partitions are kept
    ],
)
def test_scoring_partitions(workers, partitions, users, expected) -> None:
    from privrank.distributed import RayEngineConfig
    from privrank.distributed.ray_batch import USERS_PER_PARTITION, scoring_partitions

    assert USERS_PER_PARTITION == 20_000
    engine = RayEngineConfig(workers=workers, partitions=partitions)
    assert scoring_partitions(engine, users) == expected
