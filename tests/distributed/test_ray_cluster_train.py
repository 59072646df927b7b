"""The Ray fit engine and batch evaluation on a 3-node local cluster (ray.cluster_utils).

Run on their own: ``pytest -m ray_cluster tests/distributed`` (kept out of ``make test``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privrank.data.splits import HoldoutSplit, split
from privrank.metrics.evaluate import EvaluationConfig, evaluate
from privrank.models import EASE, FitOptions
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions

pytestmark = pytest.mark.ray_cluster


def test_gram_fit_and_evaluation_on_three_nodes(three_nodes, tmp_path: Path) -> None:
    import ray

    from privrank.distributed import RayEngine, RayEngineConfig
    from privrank.distributed.ray_batch import evaluate_on_ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    parts = split(
        synthetic_interactions(300, 60, per_user=10, seed=8), HoldoutSplit(fraction=0.25, seed=0)
    )
    spec = PrivacySpec(epsilon=4.0, max_interactions_per_user=12, noise_seed=3)
    engine = RayEngine(workers=3, partitions=6)
    local = EASE(regularization=20.0).fit(parts.train, FitOptions(threads=1, privacy=spec))
    on_ray = EASE(regularization=20.0).fit(
        parts.train, FitOptions(threads=1, privacy=spec, engine=engine)
    )
    np.testing.assert_allclose(on_ray.weights_, local.weights_, rtol=1e-5, atol=1e-6)
    assert on_ray.privacy_guarantee_.to_dict() == local.privacy_guarantee_.to_dict()

    config = EvaluationConfig(cutoffs=(10,), batch_size=50)
    oracle = evaluate(local.score, parts.train, parts.test, config)
    result = evaluate_on_ray(
        local,
        parts.train,
        parts.test,
        config,
        engine=RayEngineConfig(workers=3, partitions=6),
        out=tmp_path / "topk",
    ).result
    assert result.means == oracle.means and result.counts == oracle.counts
    assert len(list((tmp_path / "topk").glob("part-*.parquet"))) == 6
